"""A real server for the serve tests: uvicorn in a thread on a free 127.0.0.1 port, around the
tiny grounded-sam preset (built once per session, seeded as ``textseg segment`` builds it)."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

PRESET = "grounded-sam"


class LiveServer:
    """``app`` served by uvicorn in a daemon thread; ``url`` once started."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        started = threading.Event()
        while not self.server.started and self.thread.is_alive():
            started.wait(0.05)  # a state poll: how long start-up takes does not matter
        if not self.server.started:
            raise RuntimeError("uvicorn did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def small_image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A distinct small RGB image per seed."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for the test modules (which cannot import a conftest)."""
    return SimpleNamespace(LiveServer=LiveServer, png=png, small_image=small_image)


@pytest.fixture(scope="session")
def segmenter() -> Any:
    from textseg.serve import build_preset

    return build_preset(PRESET, seed=0, device="cpu", tiny=True)


@pytest.fixture(scope="session")
def served(segmenter: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The main server: batching on, images by path allowed under a temp root, no token."""
    from textseg.serve import BatchingService, create_app

    root = tmp_path_factory.mktemp("allowed")
    service = BatchingService(
        segmenter, name=PRESET, max_batch=8, batch_window_ms=20, timeout_s=600
    )
    app = create_app(service, allowed_root=root, max_request_bytes=2 << 20, max_pixels=1 << 20)
    with LiveServer(app) as server:
        server.service = service
        server.root = root
        yield server
