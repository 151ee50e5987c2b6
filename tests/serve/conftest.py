"""A real server for the serve tests: uvicorn in a thread on a free 127.0.0.1 port, around the
tiny grounded-sam preset (built once per session, seeded as ``textseg segment`` builds it); and a
minimal test-only service (the Label Studio router's tests mount it on their own app)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from textseg.vocab import Vocabulary

from .._limits import HANG_S

PRESET = "grounded-sam"


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def small_image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A distinct small RGB image per seed."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Gate:
    """An ``on_batch`` hook: records each batch; the first one waits until ``release()``."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, ids: list[int]) -> None:
        self.batches.append(ids)
        self.entered.set()
        self.opened.wait()

    def release(self) -> None:
        self.opened.set()


def wait_for(condition: Any, limit_s: float = HANG_S) -> None:
    """Poll a state of the server until ``condition()`` (the number of polls does not matter;
    ``limit_s`` only turns a state never reached into a failure instead of a hang)."""
    tick = threading.Event()
    for _ in range(int(limit_s / 0.01)):
        if condition():
            return
        tick.wait(0.01)
    raise AssertionError(f"state not reached in {limit_s:g} s: {condition}")


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for the test modules (which cannot import a conftest)."""
    from textseg.serve.background import BackgroundServer

    return SimpleNamespace(
        LiveServer=BackgroundServer, png=png, small_image=small_image, Gate=Gate, wait_for=wait_for
    )


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


class TinyService:
    """:class:`textseg.serve.protocol.SegmentationService` over ``tiny-test``."""

    def __init__(self, specialist: str | None = None) -> None:
        from textseg.pipelines import TextSegmenter

        torch.manual_seed(0)
        self.segmenter = TextSegmenter.from_preset("tiny-test", specialist=specialist)
        self.sam = self.segmenter.sam
        self._key: bytes | None = None
        self._embedding: Any = None
        self.encodes = 0

    def segment(self, image: np.ndarray, vocabulary: Vocabulary, **options: Any) -> Any:
        return self.segmenter.segment(image, vocabulary, **options)

    def click(
        self,
        image: np.ndarray,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = False,
    ) -> sv.Detections:
        key = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        if key != self._key:
            self._embedding, self._key = self.sam.encode(image), key
            self.encodes += 1

        def one(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)[None]

        return self.sam.predict(
            self._embedding,
            points=one(points),
            point_labels=one(point_labels),
            boxes=one(box),
            mask_inputs=one(mask_input),
            multimask_output=multimask,
        )

    def describe(self) -> dict[str, Any]:
        return {"preset": "tiny-test", "model_version": "textseg-tiny-test"}


@pytest.fixture(scope="session")
def tiny_service() -> TinyService:
    return TinyService()


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 (textseg.serve.background); yields its URL."""
    from textseg.serve.background import BackgroundServer

    with BackgroundServer(app) as server:
        yield server.url
