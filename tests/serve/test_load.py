"""Under load: many concurrent ``/segment`` requests (two vocabularies, distinct image sizes),
each answered exactly once with the answer to its own input; memory levels off over repeated
requests once the bounded stores are full. Nothing here reads a clock."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from textseg.serve._store import image_id

from .._limits import HANG_S

VOCABULARIES = (["cat", "dog"], ["car"], ["cat", "dog"], ["person", "car", "dog"])


class Recorder:
    """An ``on_batch`` hook: the request ids of every batch the worker ran."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, ids: list[int]) -> None:
        with self.lock:
            self.ids.extend(ids)


def test_every_request_answered_once_with_its_own_answer(kit: Any, served: Any) -> None:
    service = served.service
    n = 16
    # Distinct sizes: an answer that belongs to another request has another size and id.
    images = [kit.small_image(500 + i, h=32 + i, w=40 + 2 * i) for i in range(n)]
    recorder = Recorder()
    service.on_batch = recorder
    before = service.describe()

    def post(i: int) -> tuple[int, dict]:
        with httpx.Client(base_url=served.url, timeout=HANG_S) as c:
            r = c.post(
                "/segment",
                files={"image": ("x.png", kit.png(images[i]), "image/png")},
                data={"classes": VOCABULARIES[i % len(VOCABULARIES)]},
            )
            assert r.status_code == 200, r.text
            return i, r.json()

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(n)))
    finally:
        service.on_batch = None
    after = service.describe()
    for i, answer in answers:
        h, w = images[i].shape[:2]
        assert (answer["height"], answer["width"]) == (h, w)
        assert answer["image_id"] == image_id(images[i])
        assert answer["classes"] == VOCABULARIES[i % len(VOCABULARIES)]
        assert set(answer["counts"]) == set(answer["classes"])
    # The worker ran each request once: n distinct ids, none twice, none missing.
    assert len(recorder.ids) == n and len(set(recorder.ids)) == n
    assert after["requests"] - before["requests"] == n
    assert after["batched_images"] - before["batched_images"] == n
    assert after["batches"] - before["batches"] < n  # some requests were batched together


def test_memory_levels_off_over_repeated_requests(kit: Any, segmenter: Any) -> None:
    """Python-level memory (tracemalloc: Python objects and numpy arrays) after 12 warm-up
    requests does not grow over 24 more, once the image store and the embedding cache are full
    (both small here). A leak of one answer, image or mask per request would be > 1 MiB."""
    from textseg.serve import BatchingService, create_app

    cache = segmenter.sam.cache
    budget = cache.max_bytes
    cache.max_bytes = 1 << 20
    service = BatchingService(segmenter, name="memory", max_batch=4, timeout_s=600)
    app = create_app(service, store_bytes=64 << 10, mask_store_bytes=64 << 10)

    def burst(c: httpx.Client, pool: ThreadPoolExecutor, start: int, count: int) -> None:
        def post(i: int) -> None:
            image = kit.small_image(1000 + i, h=48, w=64)
            r = c.post(
                "/segment",
                files={"image": ("x.png", kit.png(image), "image/png")},
                data={"classes": ["cat", "dog"]},
            )
            assert r.status_code == 200, r.text
            r = c.post("/click", json={"image_id": r.json()["image_id"], "points": [[5, 5]]})
            assert r.status_code == 200, r.text

        list(pool.map(post, range(start, start + count)))

    try:
        with (
            kit.LiveServer(app) as server,
            httpx.Client(base_url=server.url, timeout=HANG_S) as c,
            ThreadPoolExecutor(4) as pool,
        ):
            burst(c, pool, 0, 12)  # fills the stores, warms every code path
            gc.collect()
            tracemalloc.start()
            try:
                burst(c, pool, 0, 1)
                gc.collect()
                first = tracemalloc.take_snapshot()
                burst(c, pool, 12, 24)
                gc.collect()
                last = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            kept = c.get("/models").json()["kept"]
    finally:
        cache.max_bytes = budget
    growth = last.compare_to(first, "filename")
    total = sum(stat.size_diff for stat in growth)
    top = "\n".join(str(stat) for stat in growth[:8])
    assert total < 1 << 20, f"memory grew {total / 2**20:.2f} MiB over 24 requests:\n{top}"
    assert kept["image_bytes"] <= 64 << 10 and kept["mask_bytes"] <= 64 << 10
