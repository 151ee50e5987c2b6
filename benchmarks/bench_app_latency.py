"""Click-to-mask latency of the annotation app, in a real browser, per SAM size.

    python benchmarks/bench_app_latency.py [--sam sam-vit-b mobile-sam] [--clicks 20]

For each SAM model the app runs as a user would start it (``textseg app DIR --preset tiny-test
--sam NAME --random-weights``: the real architecture with random weights, since checkpoints
cannot be downloaded here) on one COCO image, and headless Chromium (Playwright) clicks on it.
The image is encoded when the app opens it, and one warm-up click runs the decoder once; then
each measured click is a first click on an object (three candidate masks), timed in the page
from the browser's ``click`` event to the new canvas picture decoded and painted (next
animation frame), and the draft is rejected before the next one. The server-side share (SAM
prompt encoder + mask decoder + upsampling, and drawing the overlay) is read from the app's
status line. Prints a Markdown table and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TEXTSEG_DATA", ROOT.parent / "shared" / "data"))
CHROMIUM = os.environ.get("TEXTSEG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# In the page: click time -> the canvas shows a new, decoded picture, at the next frame.
_PROBE = """
() => {
  window.__latency = [];
  const root = document.querySelector('#canvas');
  let start = null, old = null;
  root.addEventListener('click', () => {
    start = performance.now();
    old = root.querySelector('img')?.src;
  }, true);
  new MutationObserver(() => {
    const img = root.querySelector('img');
    if (start === null || !img || img.src === old) return;
    const t0 = start;
    start = null;
    const done = () => requestAnimationFrame(() => window.__latency.push(performance.now() - t0));
    img.decode().then(done, done);
  }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}
"""
_SERVER = re.compile(r"mask in (\d+) ms \+ render (\d+) ms")
_EMBEDDING = re.compile(r"embedding in (\d+) ms")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(folder: Path, work: Path, sam: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    log = work / f"server-{sam}.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TEXTSEG_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(work / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    cmd = [sys.executable, "-m", "textseg.cli", "app", str(folder), "--preset", "tiny-test"]
    cmd += ["--sam", sam, "--random-weights", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url, log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"the app did not start in 600 s:\n{log.read_text()[-3000:]}")


def _measure(browser, url: str, clicks: int, size: tuple[int, int]) -> dict[str, object]:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url)
    status = page.locator("#status")
    expect(status).to_have_text(re.compile(r"embedding in \d+ ms"), timeout=120_000)
    encode_ms = float(_EMBEDDING.search(status.inner_text()).group(1))
    page.evaluate(_PROBE)
    img = page.locator("#canvas img")
    box = img.bounding_box()
    w, h = size
    scale = min(box["width"] / w, box["height"] / h, 1.0)
    rng = np.random.default_rng(0)
    points = rng.uniform(0.1, 0.9, (clicks + 1, 2)) * (w, h)
    browser_ms, server_ms, render_ms = [], [], []
    for i, (x, y) in enumerate(points):
        left = (box["width"] - w * scale) / 2 + x * scale
        top = (box["height"] - h * scale) / 2 + y * scale
        img.click(position={"x": left, "y": top})
        page.wait_for_function("n => window.__latency.length >= n", arg=i + 1)
        expect(status).to_have_text(re.compile(r"1 fg, 0 bg clicks"))
        decode, render = (float(v) for v in _SERVER.search(status.inner_text()).groups())
        if i:  # the first click warms the decoder up
            browser_ms.append(page.evaluate("i => window.__latency[i]", i))
            server_ms.append(decode)
            render_ms.append(render)
        page.locator("#reject").click()
        expect(status).not_to_have_text(re.compile("clicks"))
    page.close()
    return {
        "encode_ms": encode_ms,
        "browser": np.array(browser_ms),
        "server": np.array(server_ms),
        "render": np.array(render_ms),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam", nargs="+", default=["sam-vit-b", "mobile-sam"])
    parser.add_argument("--clicks", type=int, default=20, help="measured clicks per model")
    parser.add_argument(
        "--image", type=Path, default=DATA / "coco-dev" / "images" / "000000000009.jpg"
    )
    args = parser.parse_args()
    if not Path(CHROMIUM).is_file():
        print(f"Chromium not found at {CHROMIUM} (set TEXTSEG_CHROMIUM)", file=sys.stderr)
        return 1
    from PIL import Image
    from playwright.sync_api import sync_playwright

    size = Image.open(args.image).size
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        work = Path(tmp)
        folder = work / "images"
        folder.mkdir()
        shutil.copy(args.image, folder / args.image.name)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for sam in args.sam:
            for stale in folder.glob("textseg_*"):
                stale.unlink()
            proc, url, _ = _start(folder, work, sam)
            try:
                rows.append((sam, _measure(browser, url, args.clicks, size)))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        browser.close()
    load_after = os.getloadavg()

    print(
        f"\nClick -> mask on screen, {size[0]}x{size[1]} image, embedding cached, "
        f"{args.clicks} clicks each (first click on an object: 3 candidates); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); random weights.\n"
    )
    print(
        "| SAM | click -> on screen median ms | p90 ms | server: SAM decode median ms "
        "| server: overlay render median ms | image encode ms (once per image) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for sam, r in rows:
        b, s, d = r["browser"], r["server"], r["render"]
        print(
            f"| {sam} | {np.median(b):.0f} | {np.percentile(b, 90):.0f} | {np.median(s):.0f} "
            f"| {np.median(d):.0f} | {r['encode_ms']:.0f} |"
        )
    print(
        f"\nload average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
        f"after {'/'.join(f'{v:.2f}' for v in load_after)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
