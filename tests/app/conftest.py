"""Fixtures of the annotation app tests: a folder of three coco-dev images, tiny pipelines, and
for the browser tests the app in a subprocess and headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from textseg.pipelines import TextSegmenter
from textseg.prompters.base import ClassPrompts
from textseg.sam.prompts import Prompts

from .._limits import HANG_S, UI_WAIT_MS

IMAGES = ("000000000009.jpg", "000000000030.jpg", "000000000036.jpg")


@pytest.fixture
def folder(tmp_path: Path, data_dir: Path) -> Path:
    """``tmp_path/images`` with three coco-dev images (never written into the repo)."""
    out = tmp_path / "images"
    out.mkdir()
    for name in IMAGES:
        shutil.copy(data_dir / "coco-dev" / "images" / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny() -> TextSegmenter:
    """The ``tiny-test`` preset: random tiny Grounding DINO + SAM + CLIP, offline."""
    return TextSegmenter.from_preset("tiny-test")


class FixedBoxes:
    """A prompter with known output: two boxes, the first class then the last, scores 0.9/0.6.

    With random weights the detector finds arbitrary boxes; this one makes the review flow
    (proposals in score order, their classes) checkable.
    """

    boxes = ((20.0, 20.0, 300.0, 240.0), (320.0, 200.0, 620.0, 460.0))

    def prompts(self, image: np.ndarray, vocab: object) -> ClassPrompts:
        names = tuple(vocab.names)  # type: ignore[attr-defined]
        h, w = image.shape[:2]
        boxes = np.clip(np.asarray(self.boxes, np.float32), 0, [w - 1, h - 1, w, h])
        return ClassPrompts(
            prompts=Prompts.from_boxes(boxes),
            class_id=np.array([0, len(names) - 1]),
            confidence=np.array([0.6, 0.9], np.float32),
            multimask=False,
            class_names=names,
        )


@pytest.fixture(scope="session")
def fixed(tiny: TextSegmenter) -> TextSegmenter:
    """The tiny SAM core behind :class:`FixedBoxes`; no de-duplication (random masks overlap)."""
    return TextSegmenter(FixedBoxes(), tiny.sam, dedup_iou=1.0, dedup_containment=None)


# ---------------------------------------------------------------------- browser tests
#: Debian's Chromium; Playwright's own browser download cannot work offline.
CHROMIUM = Path(os.environ.get("TEXTSEG_CHROMIUM", "/usr/bin/chromium"))
#: Without the background-networking flags Chromium keeps calling home on a closed network.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Screenshots of every step, for a person to look at when a browser test fails in CI.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "app"
#: Seconds to wait for a server start (a hang detector: see tests/_limits.py).
START_TIMEOUT = float(HANG_S)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppServer:
    """``textseg app DIR --preset tiny-test`` in a subprocess (the real command line path).

    :meth:`start` returns at once (so that several servers can import torch side by side);
    :meth:`wait_ready` blocks until the page answers.
    """

    def __init__(self, folder: Path, workdir: Path, *extra: str) -> None:
        self.folder, self.workdir, self.extra = folder, workdir, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> AppServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("AppServer.start: the server is already running")
        self.port = free_port()
        self.starts += 1
        self.log = self.workdir / f"server-{self.starts}.log"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TEXTSEG_OFFLINE": "1",
            "TEXTSEG_CACHE": str(self.workdir / "cache"),
            "GRADIO_TEMP_DIR": str(self.workdir / "gradio"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("TEXTSEG_WEIGHTS", None)
        cmd = [sys.executable, "-m", "textseg.cli", "app", str(self.folder)]
        cmd += ["--preset", "tiny-test", "--port", str(self.port), *self.extra]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> AppServer:
        assert self.proc is not None, "AppServer.wait_ready before start"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the app exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(
            f"the app did not answer at {self.url} in {timeout:.0f} s:\n{self.log_tail()}"
        )

    def kill(self) -> int:
        """SIGKILL: no handler runs, no file is flushed on the way out."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def _require_browser(reason: str) -> None:
    if os.environ.get("TEXTSEG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (TEXTSEG_REQUIRE_BROWSER=1: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium under Playwright's sync API (skips without Chromium, unless
    ``TEXTSEG_REQUIRE_BROWSER=1``)."""
    if not CHROMIUM.is_file():
        _require_browser(
            f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set TEXTSEG_CHROMIUM)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require_browser("the Playwright client is not installed: pip install -e '.[test]'")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser page; JavaScript errors on it fail the test, and a failed test leaves
    a screenshot of the page as it was (``test-artifacts/app/<test>-FAILED.png``)."""
    failed_shot = ARTIFACTS / f"{request.node.name}-FAILED.png"
    failed_shot.unlink(missing_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    if request.node.stash.get(_CALL_FAILED, False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=failed_shot, full_page=True)
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def copy_images(data_dir: Path, out: Path, names: Sequence[str]) -> Path:
    out.mkdir(parents=True)
    for name in names:
        shutil.copy(data_dir / "coco-dev" / "images" / name, out / name)
    return out
