"""Click-to-mask latency of the annotation app, in a real browser, per SAM size and decoder.

    python benchmarks/bench_app_latency.py [--sam sam-vit-b mobile-sam] [--clicks 20]
                                           [--decoders onnx torch gradio]

For each SAM model and click path the app runs (``build_app`` on a ``SamCore`` of that model
at its real size with random weights, since checkpoints cannot be downloaded here; in its own
process, served as ``textseg app`` serves it) on one COCO image, and headless Chromium
(Playwright) clicks on it. The image is encoded when the app opens it, and one warm-up click
runs the decoder once; then each measured click is a first click on an object (three candidate
masks), and the draft is rejected before the next one. Click paths:

- ``onnx`` / ``torch``: the fast click path (the page sends the click to one un-queued endpoint
  and paints the returned mask runs on a canvas over the picture), with SAM's decoder run by
  onnxruntime or by textseg's torch decoder. Timed in the page from the browser's ``click``
  event to the animation frame after the mask is painted (the app's ``textseg-painted``
  event); the server's share (decode + upsampling, and encoding the runs) comes with it;
- ``gradio``: the page script off, every click a Gradio ``select`` event whose answer is the
  whole picture re-rendered on the server (the app before this path existed); timed from the
  click to the new picture decoded and painted, the server share read from the status line.

Prints a Markdown table and the machine's load average before and after.
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
#: In the page: the fast click path's paint events (click time, paint time, server timings).
_FAST_PROBE = """
() => {
  window.__latency = [];
  window.__server = [];
  document.addEventListener('textseg-painted', (event) => {
    const d = event.detail;
    window.__latency.push(d.t1 - d.t0);
    window.__server.push([d.decode_ms, d.encode_ms]);
  });
}
"""
_SERVER = re.compile(r"mask in (\d+) ms \+ render (\d+) ms")
_EMBEDDING = re.compile(r"embedding in (\d+) ms")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SERVE = """
import sys
from textseg.app.server import build_app
from textseg.sam import SamCore
folder, sam, decoder, port = sys.argv[1:5]
core = SamCore(sam, pretrained=False)  # the real architecture, random weights
fast = decoder != "gradio"
demo = build_app(folder, preset=core, decoder="torch" if not fast else decoder,
                 fast_clicks=fast)
print("decoder:", demo.session.decoder, flush=True)
demo.queue(default_concurrency_limit=1).launch(
    server_name="127.0.0.1", server_port=int(port), share=False, inbrowser=False,
    ssr_mode=False, show_error=True, footer_links=[])
"""


def _start(
    folder: Path, work: Path, sam: str, decoder: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    log = work / f"server-{sam}-{decoder}.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TEXTSEG_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(work / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    cmd = [sys.executable, "-c", _SERVE, str(folder), sam, decoder, str(port)]
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


def _measure(
    browser, url: str, clicks: int, size: tuple[int, int], fast: bool
) -> dict[str, object]:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url)
    status = page.locator("#status")
    expect(status).to_have_text(re.compile(r"embedding in \d+ ms"), timeout=120_000)
    encode_ms = float(_EMBEDDING.search(status.inner_text()).group(1))
    page.evaluate(_FAST_PROBE if fast else _PROBE)
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
        if fast:
            decode, render = page.evaluate("i => window.__server[i]", i)
        else:
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
        "--decoders",
        nargs="+",
        default=["onnx", "torch", "gradio"],
        choices=["onnx", "torch", "gradio"],
        help="click paths (see the module notes)",
    )
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
            for decoder in args.decoders:
                for stale in folder.glob("textseg_*"):
                    stale.unlink()
                proc, url, _ = _start(folder, work, sam, decoder)
                fast = decoder != "gradio"
                try:
                    rows.append((sam, decoder, _measure(browser, url, args.clicks, size, fast)))
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
        "| SAM | click path | click -> on screen median ms | p90 ms | server: SAM decode "
        "median ms | server: mask runs / picture render median ms | image encode ms (once) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for sam, decoder, r in rows:
        b, s, d = r["browser"], r["server"], r["render"]
        path = {"gradio": "Gradio event, picture re-rendered"}.get(decoder, f"fast, {decoder}")
        print(
            f"| {sam} | {path} | {np.median(b):.0f} | {np.percentile(b, 90):.0f} "
            f"| {np.median(s):.0f} | {np.median(d):.1f} | {r['encode_ms']:.0f} |"
        )
    print(
        f"\nload average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
        f"after {'/'.join(f'{v:.2f}' for v in load_after)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
