"""``textseg serve`` under load: batched HTTP requests against a loop of ``segment`` calls.

    python benchmarks/bench_serve.py [--preset fast] [--clients 16] [--requests 64]
                                     [--max-boxes 10] [--clicks 1000] [--memory 1000]
                                     [--device cpu] [--only segment|click|memory] [--quick]

The preset is built at its real size with random weights (``pretrained=False``: checkpoints
cannot be downloaded here; speed does not depend on the weights), under one seed, once; the
server (uvicorn in a thread of this process, :class:`textseg.serve.BatchingService` batching up
to ``--max-batch`` requests) and the reference loop use that same model object, so the same
weights and settings. ``--quick`` uses the tiny models, a 160x120 image and a few requests (a
smoke run for the test suite).

1. ``/segment``: ``--clients`` threads send ``--requests`` requests of one 640x480 coco-dev image
   (each request's copy differs in one pixel, so no request is answered from the embedding
   cache of another) vs ``TextSegmenter.segment`` at batch 1 in a loop over the same images.
   Random detector weights pass up to 100 boxes per image (most of them noise) and the time
   then goes to decoding and deduplicating them: the detector keeps its ``--max-boxes`` best
   boxes, on both sides. The loop runs half its images before the server and half after, so a
   change of load on a shared machine falls on both sides; the table has throughput, p50 / p99
   latency and the process's CPU seconds per request (what a loaded machine changes least).
2. ``/click`` on an encoded image (``image_id``): the client's round trip and the server's own
   time vs the in-process decode (``service.click`` on the cached embedding), the two
   alternating point by point and compared pair by pair; memory over
   ``--clicks`` clicks (each keeps its mask for ``mask_id`` in a bounded store).
3. Memory over ``--memory`` ``/segment`` requests of distinct 160x120 images (the 640x480 one
   at a quarter size), with the *tiny* models of the preset (1,000 real-size requests take
   hours on a CPU; the server's own bookkeeping is the same): resident set size after 10% and
   after all of them, with the bounded stores (images kept for ``image_id``, SAM embeddings)
   set small so they are full after the first 10%.

Prints Markdown tables and the machine's load average before and after each part.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# As the textseg command: idle OpenMP threads sleep instead of spinning (see docs/performance.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from _common import RssSampler, coco_images, machine, table


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument(
        "--max-boxes", type=int, default=10, help="detector boxes kept per image (both sides)"
    )
    p.add_argument("--clicks", type=int, default=1000)
    p.add_argument("--memory", type=int, default=1000, help="/segment requests of part 3")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-window-ms", type=float, default=10.0)
    p.add_argument("--classes", nargs="+", default=["person", "dog", "car"])
    p.add_argument(
        "--only",
        choices=("segment", "click", "memory"),
        action="append",
        default=None,
        help="run this part (repeatable; default all)",
    )
    p.add_argument("--quick", action="store_true", help="tiny models, a few requests")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.clicks, args.memory = 2, 4, 5, 20
    args.only = set(args.only or ("segment", "click", "memory"))
    return args


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _variant(image: np.ndarray, i: int) -> np.ndarray:
    """``image`` with pixel ``i`` changed (a distinct content hash per ``i``)."""
    copy = image.copy()
    copy[i // image.shape[1] % image.shape[0], i % image.shape[1], 0] ^= 1
    return copy


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bench_segment(args: argparse.Namespace, segmenter: Any, url: str, image: np.ndarray) -> dict:
    import httpx

    from textseg.serve._store import image_id

    images = [_variant(image, i) for i in range(args.requests)]
    bodies = [_png(im) for im in images]
    data = {"classes": args.classes}
    sam = segmenter.sam
    budget = sam.cache.max_bytes
    sam.cache.max_bytes = 0  # every request encodes its image, in both paths
    loop: list[float] = []
    cpu = {"loop": 0.0, "served": 0.0}
    wall = {"loop": 0.0, "served": 0.0}
    loads = [_load()]

    def run_loop(part: list[np.ndarray]) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        for im in part:
            t = time.perf_counter()
            segmenter.segment(im, args.classes)
            _sync(args.device)
            loop.append(time.perf_counter() - t)
        cpu["loop"] += time.process_time() - c0
        wall["loop"] += time.perf_counter() - w0

    served: list[float] = []
    answers: dict[int, list[str]] = {}
    lock = threading.Lock()
    todo = iter(range(args.requests))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=3600) as c:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                t = time.perf_counter()
                r = c.post(
                    "/segment", files={"image": ("x.png", bodies[i], "image/png")}, data=data
                )
                r.raise_for_status()
                with lock:
                    served.append(time.perf_counter() - t)
                    answers.setdefault(i, []).append(r.json()["image_id"])

    try:
        segmenter.segment(images[0], args.classes)  # warm-up (allocator, lazy init)
        half = args.requests // 2
        run_loop(images[:half])
        loads.append(_load())
        c0, w0 = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            for f in [pool.submit(client) for _ in range(args.clients)]:
                f.result()
        cpu["served"] = time.process_time() - c0
        wall["served"] = time.perf_counter() - w0
        loads.append(_load())
        run_loop(images[half:])
        loads.append(_load())
    finally:
        sam.cache.max_bytes = budget
    # Every request answered once, with its own image's id.
    assert {i: ids for i, ids in answers.items()} == {
        i: [image_id(im)] for i, im in enumerate(images)
    }, "a request was lost, answered twice or answered with another image"
    n = args.requests
    return {
        "loop_rps": n / wall["loop"],
        "served_rps": n / wall["served"],
        "loop_p50": _pct(loop, 50),
        "loop_p99": _pct(loop, 99),
        "served_p50": _pct(served, 50),
        "served_p99": _pct(served, 99),
        "loop_cpu": cpu["loop"] / n,
        "served_cpu": cpu["served"] / n,
        "loads": loads,
    }


def bench_click(args: argparse.Namespace, service: Any, url: str, image: np.ndarray) -> dict:
    import httpx

    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    points = rng.uniform([0, 0], [w - 1, h - 1], (args.clicks, 2)).round().tolist()
    with httpx.Client(base_url=url, timeout=600) as c:
        first = c.post(
            "/click",
            files={"image": ("x.png", _png(image), "image/png")},
            data={"points": str([points[0]])},
        ).json()
        key = first["image_id"]
        # Each point in-process (the service's click on the cached embedding), then through the
        # server: alternating, so a change of load falls on both sides of each pair.
        decode, trip, server = [], [], []
        rss = RssSampler.current()
        with RssSampler() as sampler:
            marks = {}
            for i, xy in enumerate(points):
                t = time.perf_counter()
                service.click(image, points=np.asarray([xy], np.float32), point_labels=np.ones(1))
                decode.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = c.post("/click", json={"image_id": key, "points": [xy], "labels": [1]})
                r.raise_for_status()
                trip.append(time.perf_counter() - t)
                server.append(r.json()["timings"]["request"] / 1000.0)
                if (i + 1) in (len(points) // 10, len(points) // 2, len(points)):
                    marks[i + 1] = RssSampler.current()
        kept = c.get("/models").json()["kept"]
    return {
        "first_cached": first["cached"],
        "trip": trip,
        "server": server,
        "decode": decode,
        "rss_start": rss,
        "rss_marks": marks,
        "rss_peak": sampler.peak,
        "masks_kept": kept["masks"],
        "mask_bytes": kept["mask_bytes"],
    }


def bench_memory(args: argparse.Namespace, image: np.ndarray) -> dict:
    """RSS over ``--memory`` /segment requests of distinct images, tiny models, small stores."""
    import httpx

    from textseg.serve import BatchingService, build_preset, create_app
    from textseg.serve.background import BackgroundServer

    segmenter = build_preset(args.preset, seed=0, device=args.device, tiny=True)
    segmenter.sam.cache.max_bytes = 8 << 20
    service = BatchingService(
        segmenter, name=args.preset, max_batch=args.max_batch, queue_size=64, timeout_s=3600
    )
    n = args.memory
    marks: dict[int, dict[str, float]] = {}
    lock = threading.Lock()
    todo = iter(range(n))
    done = [0]
    store_bytes = 16 << 20
    app = create_app(service, store_bytes=store_bytes)
    with BackgroundServer(app) as server:

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=600) as c:
                while True:
                    with lock:
                        i = next(todo, None)
                    if i is None:
                        return
                    body = _png(_variant(image, i))
                    r = c.post(
                        "/segment",
                        files={"image": ("x.png", body, "image/png")},
                        data={"classes": args.classes},
                    )
                    r.raise_for_status()
                    with lock:
                        done[0] += 1
                        if done[0] in (max(1, n // 10), n // 2, n):
                            gc.collect()
                            marks[done[0]] = {
                                "rss": RssSampler.current(),
                                "objects": len(gc.get_objects()),
                            }

        start = RssSampler.current()
        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(client) for _ in range(4)]:
                f.result()
        with httpx.Client(base_url=server.url) as c:
            info = c.get("/models").json()
    return {
        "rss_start": start,
        "marks": marks,
        "kept": info["kept"],
        "cache": info["models"][0]["embedding_cache"],
        "store_budget": store_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from textseg.serve import BatchingService, build_preset, create_app
    from textseg.serve.background import BackgroundServer

    load = _load()
    image = coco_images(1)[0][1]
    small = np.ascontiguousarray(image[::4, ::4])  # the quick runs' quarter-size image
    seg = click = memory = None
    if args.only & {"segment", "click"}:
        options = {"tiny": True} if args.quick else {"pretrained": False}
        segmenter = build_preset(args.preset, seed=0, device=args.device, **options)
        detector = getattr(segmenter.prompter, "detector", None)
        if detector is not None:  # the same bounded work on both sides
            detector.postprocess = dataclasses.replace(
                detector.postprocess, max_detections=args.max_boxes
            )
        service = BatchingService(
            segmenter,
            name=args.preset,
            max_batch=args.max_batch,
            batch_window_ms=args.batch_window_ms,
            queue_size=max(64, args.requests),
            timeout_s=3600,
        )
        picture = small if args.quick else image
        with BackgroundServer(create_app(service)) as server:
            if "segment" in args.only:
                print("bench_serve: /segment ...", file=sys.stderr, flush=True)
                seg = bench_segment(args, segmenter, server.url, picture)
            if "click" in args.only:
                print("bench_serve: /click ...", file=sys.stderr, flush=True)
                click = bench_click(args, service, server.url, picture)
    if "memory" in args.only:
        print("bench_serve: memory ...", file=sys.stderr, flush=True)
        memory = bench_memory(args, small)
    print(f"machine: {machine()}")
    print(f"load average (1 min) before {load}, after {_load()}")
    if seg is not None:
        _print_segment(args, seg, small if args.quick else image)
    if click is not None:
        _print_click(args, click)
    if memory is not None:
        _print_memory(args, memory, small)
    return 0


def _print_segment(args: argparse.Namespace, seg: dict, image: np.ndarray) -> None:
    print()
    size = "tiny models" if args.quick else "real sizes, random weights"
    print(
        f"/segment: preset {args.preset} ({size}), {image.shape[1]}x{image.shape[0]}, classes "
        f"{' '.join(args.classes)}, detector keeps its {args.max_boxes} best boxes (both "
        f"sides); {args.requests} requests, {args.clients} clients, max batch {args.max_batch}, "
        f"window {args.batch_window_ms:g} ms; load average at loop start / server start / "
        f"server end / loop end: {' / '.join(seg['loads'])}"
    )
    print()
    rows = [
        (
            "loop of segment(), batch 1",
            f"{seg['loop_rps']:.3f}",
            f"{seg['loop_p50']:.2f}",
            f"{seg['loop_p99']:.2f}",
            f"{seg['loop_cpu']:.2f}",
        ),
        (
            f"server /segment, {args.clients} clients",
            f"{seg['served_rps']:.3f}",
            f"{seg['served_p50']:.2f}",
            f"{seg['served_p99']:.2f}",
            f"{seg['served_cpu']:.2f}",
        ),
        (
            "ratio server / loop",
            f"{seg['served_rps'] / seg['loop_rps']:.2f}x",
            "",
            "",
            f"{seg['served_cpu'] / seg['loop_cpu']:.2f}x",
        ),
    ]
    print(table(("/segment", "requests/s", "p50 s", "p99 s", "CPU s / request"), rows))


def _print_click(args: argparse.Namespace, click: dict) -> None:
    print()

    def row(name: str, values: list[float]) -> tuple[str, str, str]:
        return name, f"{_pct(values, 50) * 1000:.1f}", f"{_pct(values, 99) * 1000:.1f}"

    rows = [
        row("in-process decode (service.click)", click["decode"]),
        row("server's own time", click["server"]),
        row("client round trip", click["trip"]),
    ]
    gaps = np.subtract(click["server"], click["decode"])  # pairs: the same point, one after
    rows.append(
        (
            "server - in-process, per pair",
            f"{_pct(gaps, 50) * 1000:+.1f}",
            f"{_pct(gaps, 99) * 1000:+.1f}",
        )
    )
    print(table(("/click on a cached image", "p50 ms", "p99 ms"), rows))
    print()
    marks = ", ".join(f"{n}: {mb:.0f}" for n, mb in click["rss_marks"].items())
    print(
        f"memory over {args.clicks} /click: RSS {click['rss_start']:.0f} MiB before; after "
        f"n clicks {marks} MiB; peak {click['rss_peak']:.0f} MiB; masks kept "
        f"{click['masks_kept']} ({click['mask_bytes'] / 2**20:.0f} MiB, bounded)"
    )
    assert click["first_cached"] is False


def _print_memory(args: argparse.Namespace, memory: dict, image: np.ndarray) -> None:
    print()
    print(
        f"memory over {args.memory} /segment requests (preset {args.preset}, tiny models, "
        f"distinct {image.shape[1]}x{image.shape[0]} images, 4 clients; image store "
        f"{memory['store_budget'] >> 20} MiB, embedding cache 8 MiB): RSS "
        f"{memory['rss_start']:.0f} MiB before"
    )
    print()
    rows = [
        (str(n), f"{m['rss']:.0f}", str(m["objects"])) for n, m in sorted(memory["marks"].items())
    ]
    print(table(("/segment requests", "RSS MiB", "Python objects"), rows))
    first, last = min(memory["marks"]), max(memory["marks"])
    growth = memory["marks"][last]["rss"] - memory["marks"][first]["rss"]
    kept, cache = memory["kept"], memory["cache"]
    print()
    print(
        f"RSS growth from {first} to {last} requests: {growth:+.1f} MiB; kept at the end: "
        f"{kept['images']} images ({kept['image_bytes'] / 2**20:.1f} MiB), "
        f"{cache['entries']} embeddings ({cache['bytes'] / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
