"""``textseg serve`` under load: batched HTTP requests against a loop of ``segment`` calls.

    python benchmarks/bench_serve.py [--preset fast] [--clients 16] [--requests 64]
                                     [--clicks 1000] [--device cpu] [--quick]

The preset is built at its real size with random weights (``pretrained=False``: checkpoints
cannot be downloaded here; speed does not depend on the weights), under one seed, once; the
server (uvicorn in a thread of this process, :class:`textseg.serve.BatchingService` batching up
to ``--max-batch`` requests) and the reference loop use that same model object. ``--quick`` uses
the tiny models, a 160x120 image and a few requests (a smoke run for the test suite).

1. ``/segment``: ``--clients`` threads send ``--requests`` requests of one 640x480 coco-dev image
   (each request's copy differs in one pixel, so no request is answered from the embedding
   cache of another) vs ``TextSegmenter.segment`` at batch 1 in a loop over the same images:
   throughput ratio, p50 / p99 latency.
2. ``/click`` on an encoded image (``image_id``): the client's round trip and the server's own
   time vs the in-process decode (``service.click`` on the cached embedding).
3. Memory: resident set size over ``--clicks`` ``/click`` requests (each one keeps its mask for
   ``mask_id`` in a bounded store, so memory must level off).

Prints Markdown tables and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from _common import RssSampler, coco_images, machine


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clicks", type=int, default=1000)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--classes", nargs="+", default=["person", "dog", "car"])
    p.add_argument(
        "--only", choices=("segment", "click"), default=None, help="run one part (default both)"
    )
    p.add_argument("--quick", action="store_true", help="tiny models, a few requests")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.clicks = 2, 2, 5
    return args


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _variants(image: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` copies of ``image``, each with one pixel changed (distinct content hashes)."""
    out = []
    for i in range(n):
        copy = image.copy()
        copy[i // image.shape[1] % image.shape[0], i % image.shape[1], 0] ^= 1
        out.append(copy)
    return out


def bench_segment(args: argparse.Namespace, segmenter: Any, url: str, image: np.ndarray) -> dict:
    import httpx

    images = _variants(image, args.requests)
    bodies = [_png(im) for im in images]
    data = {"classes": args.classes}
    sam = segmenter.sam
    budget = sam.cache.max_bytes
    sam.cache.max_bytes = 0  # every request encodes its image, in both paths
    try:
        if not args.quick:
            segmenter.segment(images[0], args.classes)  # warm-up (allocator, lazy init)
        loop = []
        start = time.perf_counter()
        for im in images:
            t = time.perf_counter()
            segmenter.segment(im, args.classes)
            loop.append(time.perf_counter() - t)
        loop_wall = time.perf_counter() - start

        served: list[float] = []
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

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            for f in [pool.submit(client) for _ in range(args.clients)]:
                f.result()
        served_wall = time.perf_counter() - start
    finally:
        sam.cache.max_bytes = budget
    return {
        "loop_rps": args.requests / loop_wall,
        "served_rps": args.requests / served_wall,
        "loop_p50": _pct(loop, 50),
        "loop_p99": _pct(loop, 99),
        "served_p50": _pct(served, 50),
        "served_p99": _pct(served, 99),
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
        decode = []
        for xy in points[:50]:  # in-process: the service's click on the cached embedding
            t = time.perf_counter()
            service.click(image, points=np.asarray([xy], np.float32), point_labels=np.ones(1))
            decode.append(time.perf_counter() - t)
        trip, server = [], []
        rss = RssSampler.current()
        with RssSampler() as sampler:
            marks = {}
            for i, xy in enumerate(points):
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
        "trip_p50": _pct(trip, 50),
        "server_p50": _pct(server, 50),
        "decode_p50": _pct(decode, 50),
        "rss_start": rss,
        "rss_marks": marks,
        "rss_peak": sampler.peak,
        "masks_kept": kept["masks"],
        "mask_bytes": kept["mask_bytes"],
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from textseg.serve import BatchingService, build_preset, create_app
    from textseg.serve.background import BackgroundServer

    load = os.getloadavg()
    options = {"tiny": True} if args.quick else {"pretrained": False}
    segmenter = build_preset(args.preset, seed=0, device=args.device, **options)
    service = BatchingService(
        segmenter,
        name=args.preset,
        max_batch=args.max_batch,
        queue_size=max(64, args.requests),
        timeout_s=3600,
    )
    image = coco_images(1)[0][1]
    if args.quick:  # a quarter-size image: the smoke run takes seconds, not minutes
        image = np.ascontiguousarray(image[::4, ::4])
    seg = click = None
    with BackgroundServer(create_app(service)) as server:
        if args.only in (None, "segment"):
            print("bench_serve: /segment ...", file=sys.stderr, flush=True)
            seg = bench_segment(args, segmenter, server.url, image)
        if args.only in (None, "click"):
            print("bench_serve: /click ...", file=sys.stderr, flush=True)
            click = bench_click(args, service, server.url, image)
    print(f"machine: {machine()}")
    print(
        f"preset {args.preset} ({'tiny' if args.quick else 'real size, random weights'}), "
        f"{image.shape[1]}x{image.shape[0]}"
        + (
            f", {args.requests} requests, {args.clients} clients, max batch {args.max_batch}"
            if seg is not None
            else ""
        )
        + f"; load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}"
    )
    if seg is not None:
        _print_segment(args, seg)
    if click is not None:
        _print_click(args, click)
    return 0


def _print_segment(args: argparse.Namespace, seg: dict) -> None:
    print()
    print("| /segment | requests/s | p50 s | p99 s |")
    print("|---|---|---|---|")
    print(
        f"| loop of segment(), batch 1 | {seg['loop_rps']:.2f} | {seg['loop_p50']:.2f} | "
        f"{seg['loop_p99']:.2f} |"
    )
    print(
        f"| server, {args.clients} clients | {seg['served_rps']:.2f} | "
        f"{seg['served_p50']:.2f} | {seg['served_p99']:.2f} |"
    )
    print(f"| ratio | {seg['served_rps'] / seg['loop_rps']:.2f}x | | |")


def _print_click(args: argparse.Namespace, click: dict) -> None:
    print()
    print("| /click on a cached image | p50 ms |")
    print("|---|---|")
    print(f"| in-process decode (service.click) | {click['decode_p50'] * 1000:.1f} |")
    print(f"| server's own time | {click['server_p50'] * 1000:.1f} |")
    print(f"| client round trip | {click['trip_p50'] * 1000:.1f} |")
    print()
    marks = ", ".join(f"{n}: {mb:.0f}" for n, mb in click["rss_marks"].items())
    print(
        f"memory over {args.clicks} /click: RSS {click['rss_start']:.0f} MiB before; after "
        f"n clicks {marks} MiB; peak {click['rss_peak']:.0f} MiB; masks kept "
        f"{click['masks_kept']} ({click['mask_bytes'] / 2**20:.0f} MiB, bounded)"
    )
    assert click["first_cached"] is False


if __name__ == "__main__":
    raise SystemExit(main())
