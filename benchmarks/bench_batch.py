"""``TextSegmenter.iter_segment`` on 16 images, one at a time vs in batches.

    python benchmarks/bench_batch.py [--preset fast] [--images 16] [--batch 4]

The pipeline's batched path encodes a batch with ``SamCore.encode_many`` and prompts it with the
detector's ``prompts_many`` (one forward pass each); the rest is per image. Same preset, same
random weights at the real sizes (``pretrained=False``), same coco-dev images (all 640 x 480, so
that the detector batch needs no padding), results compared. On a CPU the batched forward passes
cost about what the single ones do; on a GPU they are where the time is saved.
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import DATA, machine, table, timed

from textseg import TextSegmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    coco = json.loads((DATA / "coco-dev" / "annotations.json").read_text())
    names = [im["file_name"] for im in coco["images"] if (im["width"], im["height"]) == (640, 480)]
    names = (names * (1 + args.images // max(1, len(names))))[: args.images]
    paths = [str(DATA / "coco-dev" / "images" / n) for n in names]
    torch.manual_seed(0)
    seg = TextSegmenter.from_preset(args.preset, pretrained=False, device=args.device)
    classes = ["person", "dog", "car", "bowl", "chair"]
    seg.segment(paths[:1], classes)  # warm-up
    rows = []
    results = {}
    for batch in (1, args.batch):
        seg.sam.cache.clear()
        seconds, out = timed(lambda b=batch: list(seg.iter_segment(paths, classes, batch_size=b)))
        results[batch] = out
        rows.append((f"batch_size={batch}", f"{seconds:.1f}", f"{seconds / len(paths):.2f}"))
    same = all(
        a.counts == b.counts and a.masks == b.masks for a, b in zip(results[1], results[args.batch])
    )
    speedup = float(rows[0][1]) / float(rows[1][1])
    print(machine())
    print(f"{args.preset}, {len(paths)} images of 640x480, random weights at the real sizes")
    print(table(("run", "total (s)", "per image (s)"), rows))
    print(f"speed-up of batch_size={args.batch}: {speedup:.2f}x; identical results: {same}")


if __name__ == "__main__":
    main()
