"""A real server for the serve tests: uvicorn in a thread on a free 127.0.0.1 port, around the
tiny grounded-sam preset (built once per session, seeded as ``textseg segment`` builds it)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

PRESET = "grounded-sam"


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
    from textseg.serve.background import BackgroundServer

    return SimpleNamespace(LiveServer=BackgroundServer, png=png, small_image=small_image)


@pytest.fixture(scope="session")
def segmenter() -> Any:
    from textseg.serve import build_preset

    return build_preset(PRESET, seed=0, device="cpu", tiny=True)


@pytest.fixture(scope="session")
def served(segmenter: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The main server: batching on, images by path allowed under a temp root, no token."""
    from textseg.serve import BatchingService, create_app
    from textseg.serve.background import BackgroundServer

    root = tmp_path_factory.mktemp("allowed")
    service = BatchingService(
        segmenter, name=PRESET, max_batch=8, batch_window_ms=20, timeout_s=600
    )
    app = create_app(service, allowed_root=root, max_request_bytes=2 << 20, max_pixels=1 << 20)
    with BackgroundServer(app) as server:
        server.service = service
        server.root = root
        yield server
