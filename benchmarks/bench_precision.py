"""Lower precision vs float32: mask agreement over the coco-dev boxes, and the time it saves.

    python benchmarks/bench_precision.py [--model sam-vit-b] [--images 4] [--dtypes int8 bfloat16]

For each image the ground-truth boxes of ``coco-dev/annotations.json`` are the prompts; the
same random weights (relative-position tables randomised) run in float32 and in each lower
precision (``int8``: dynamic quantization of the encoder's linear layers, CPU; ``bfloat16`` /
``float16``: on CUDA through autocast, on the CPU by casting the weights). Reported per dtype:
mean and worst mask IoU against float32 over all boxes, the largest predicted-IoU difference,
and the encoder time per image beside float32's. Random weights make masks arbitrary but
sensitive, so the agreement is a fair stress test of the arithmetic, not of segmentation
quality.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from _common import DATA, machine, table

from textseg._hub import create_model
from textseg._image import load_image
from textseg.sam import Prompts, SamCore


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam-vit-b")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--dtypes", nargs="+", default=["int8", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    coco = json.loads((DATA / "coco-dev" / "annotations.json").read_text())
    boxes_of: dict[int, list[list[float]]] = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        if w >= 1 and h >= 1:
            boxes_of.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    records = sorted(
        (r for r in coco["images"] if r["id"] in boxes_of), key=lambda r: r["file_name"]
    )[: args.images]

    torch.manual_seed(0)
    sam = create_model(args.model, task="sam", pretrained=False)
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if "rel_pos" in name:
                param.normal_(0.0, 0.5)
    cores = {"float32": SamCore(sam, device=args.device, cache_bytes=0)}
    for dtype in args.dtypes:
        cores[dtype] = SamCore(copy.deepcopy(sam), device=args.device, dtype=dtype, cache_bytes=0)

    ious: dict[str, list[float]] = {d: [] for d in args.dtypes}
    diffs: dict[str, float] = dict.fromkeys(args.dtypes, 0.0)
    times: dict[str, float] = dict.fromkeys(cores, 0.0)
    n_boxes = 0
    for record in records:
        image = load_image(DATA / "coco-dev" / "images" / record["file_name"])
        prompts = Prompts.from_boxes(np.array(boxes_of[record["id"]], np.float32))
        n_boxes += len(prompts)
        results = {}
        for dtype, core in cores.items():
            start = time.perf_counter()
            emb = core.encode(image)
            times[dtype] += time.perf_counter() - start
            results[dtype] = core.predict(emb, prompts)
        ref = results["float32"]
        for dtype in args.dtypes:
            out = results[dtype]
            ious[dtype] += [_iou(a, b) for a, b in zip(ref.mask, out.mask)]
            diff = np.abs(ref.data["sam_iou"] - out.data["sam_iou"]).max()
            diffs[dtype] = max(diffs[dtype], float(diff))

    n = len(records)
    print(
        f"{args.model} (random weights), {n} coco-dev images, {n_boxes} ground-truth boxes, "
        f"device {args.device}"
    )
    print(f"machine: {machine()}")
    print()
    rows = [("float32", "1", "1", "0", f"{times['float32'] / n:.2f}", "1.00x")]
    for dtype in args.dtypes:
        v = np.array(ious[dtype])
        rows.append(
            (
                f"{dtype} ({cores[dtype].precision.name})",
                f"{v.mean():.4f}",
                f"{v.min():.4f}",
                f"{diffs[dtype]:.1e}",
                f"{times[dtype] / n:.2f}",
                f"{times['float32'] / times[dtype]:.2f}x",
            )
        )
    header = (
        "precision",
        "mean mask IoU vs float32",
        "worst mask IoU",
        "max predicted-IoU diff",
        "encoder s/image",
        "encoder speed-up",
    )
    print(table(header, rows))


if __name__ == "__main__":
    main()
