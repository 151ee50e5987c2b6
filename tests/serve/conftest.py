"""A test-only segmentation service (the tiny preset; clicks on its SAM core with one cached
embedding) and an HTTP server for routes mounted on a FastAPI app."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import supervision as sv
import torch

from textseg.vocab import Vocabulary


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
