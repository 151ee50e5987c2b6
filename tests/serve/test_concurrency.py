"""Concurrent clients of the real server: batched, each answered once with its own image;
a full queue answers 503 with Retry-After. The worker is paused at a chosen point through the
service's ``on_batch`` hook, so nothing depends on timing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from textseg.serve._store import image_id

from .._limits import HANG_S


def test_concurrent_clients_batched_each_answered_once(
    kit: Any, served: Any, segmenter: Any
) -> None:
    service = served.service
    images = [kit.small_image(100 + i) for i in range(8)]
    gate = kit.Gate()
    service.on_batch = gate
    before = service.describe()

    def post(image: np.ndarray) -> dict:
        with httpx.Client(base_url=served.url, timeout=HANG_S) as c:
            r = c.post(
                "/segment",
                files={"image": ("x.png", kit.png(image), "image/png")},
                data={"classes": ["cat", "dog"]},
            )
            assert r.status_code == 200, r.text
            return r.json()

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, images[0])]
            assert gate.entered.wait(600)  # the worker holds the first request
            futures += [pool.submit(post, image) for image in images[1:]]
            kit.wait_for(lambda: service.queue_depth == 7)  # the other seven are queued
            gate.release()
            answers = [f.result() for f in futures]
    finally:
        service.on_batch = None
        gate.release()
    assert [len(b) for b in gate.batches] == [1, 7]  # the queued seven ran as one batch
    ids = [a["image_id"] for a in answers]
    assert ids == [image_id(im) for im in images]  # each client got its own image's answer
    after = service.describe()
    assert after["requests"] - before["requests"] == 8
    assert after["batched_images"] - before["batched_images"] == 8
    # Each answer is what the segmenter says for that image alone.
    for image, answer in zip(images, answers):
        alone = segmenter.segment(image, ["cat", "dog"])
        assert answer["counts"] == alone.counts
        got = [(i["class_name"], i["area"]) for i in answer["instances"]]
        assert sorted(got) == sorted(
            (n, int(m.sum()))
            for n, m in zip(alone.boxes.data["class_name"], alone.masks.to_dense())
        )


def test_full_queue_answers_503_with_retry_after(kit: Any, segmenter: Any) -> None:
    from textseg.serve import BatchingService, create_app

    gate = kit.Gate()
    service = BatchingService(segmenter, name="q1", max_batch=1, queue_size=1, on_batch=gate)
    body = {"classes": ["cat"]}

    def post(c: httpx.Client, seed: int) -> httpx.Response:
        files = {"image": ("x.png", kit.png(kit.small_image(seed)), "image/png")}
        return c.post("/segment", files=files, data=body)

    with (
        kit.LiveServer(create_app(service)) as server,
        httpx.Client(base_url=server.url, timeout=HANG_S) as c,
        ThreadPoolExecutor(2) as pool,
    ):
        try:
            running = pool.submit(post, c, 1)
            assert gate.entered.wait(600)  # request 1 is in the worker
            queued = pool.submit(post, c, 2)
            kit.wait_for(lambda: service.queue_depth == 1)  # request 2 fills the queue
            refused = post(c, 3)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert "queue is full" in refused.json()["error"]
        finally:
            gate.release()
        assert running.result().status_code == 200
        assert queued.result().status_code == 200
        assert service.describe()["refused"] == 1
        assert post(c, 4).status_code == 200  # served again once the queue drained


def test_request_timeout_is_504(kit: Any, segmenter: Any) -> None:
    from textseg.serve import BatchingService, create_app

    gate = kit.Gate()
    service = BatchingService(segmenter, name="t", max_batch=1, timeout_s=0.2, on_batch=gate)
    with (
        kit.LiveServer(create_app(service)) as server,
        httpx.Client(base_url=server.url, timeout=HANG_S) as c,
    ):
        try:
            files = {"image": ("x.png", kit.png(kit.small_image(9)), "image/png")}
            r = c.post("/segment", files=files, data={"classes": "cat"})
            assert r.status_code == 504  # the worker is held by the gate: never answered
            assert "no answer within" in r.json()["error"]
        finally:
            gate.release()


class ShapeRecorder:
    """A stand-in segmenter: records the image sizes of each batched call."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int]]] = []

    def segment(self, images: Any, vocab: Any, batch_size: int = 1, **options: Any) -> Any:
        many = isinstance(images, list)
        self.calls.append([im.shape[:2] for im in (images if many else [images])])
        return [im.shape[:2] for im in images] if many else images.shape[:2]


def test_a_batch_runs_images_of_one_size_together(kit: Any) -> None:
    """The detector pads a batch to its largest image, which changes its boxes: requests of
    different sizes are batched apart, so an answer never depends on its batch mates."""
    from textseg.serve import BatchingService
    from textseg.vocab import Vocabulary

    segmenter = ShapeRecorder()
    gate = kit.Gate()
    vocab = Vocabulary(["cat"])
    with BatchingService(segmenter, max_batch=8, on_batch=gate) as service:
        try:
            first = service.submit(kit.small_image(0), vocab)
            assert gate.entered.wait(600)
            sizes = [(48, 64), (64, 48), (48, 64), (64, 48)]
            futures = [
                service.submit(kit.small_image(i, h, w), vocab) for i, (h, w) in enumerate(sizes)
            ]
            kit.wait_for(lambda: service.queue_depth == len(sizes))
        finally:
            gate.release()
        assert [f.result(600) for f in futures] == sizes  # each its own answer
        assert first.result(600) == (48, 64)
    assert [len(b) for b in gate.batches] == [1, 4]  # the four were gathered together...
    assert sorted(segmenter.calls[1:]) == [[(48, 64)] * 2, [(64, 48)] * 2]  # ...run by size
