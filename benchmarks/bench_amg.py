"""Automatic mask generation with and without crops: textseg vs SamAutomaticMaskGenerator.

    python benchmarks/bench_amg.py [--model sam-vit-tiny-test] [--grid 8] [--crop-layers 0 1]

Both generators run on the same image with the same random weights and the same settings
(thresholds 0, box and crop NMS off: random-weight masks are all alike and NMS would fold them
into one, so every candidate mask is kept and compared); the encoder is included on both
sides (each crop is encoded, as the official generator does). Reported: seconds, the ratio
(official / textseg), the mask counts and the smallest best-match IoU between the two sets
(1.0000: the same masks).

Why textseg was slower with crops on tiny models (95.7 s vs 26.9 s before this benchmark
existed): the decoder ran 2 prompts per call, a chunk sized for SAM's 256-channel decoder on a
2-core CPU, so a 32-channel tiny decoder made 8x the calls it needed, and each call pays an
OpenMP barrier per operator; on a shared machine those barriers dominate. The chunk is now a
byte budget (``SamCore`` picks 16 prompts for the tiny decoder, 2 for ViT-B).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import DATA, machine, match_iou, official_sam, table
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator

from textseg._hub import create_model
from textseg._image import load_image
from textseg.sam import AutomaticMaskGenerator, SamCore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam-vit-tiny-test")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--crop-layers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--image", default=str(DATA / "coco-dev" / "images" / "000000000009.jpg"))
    args = parser.parse_args()

    torch.manual_seed(0)
    sam = create_model(args.model, task="sam", pretrained=False)
    official = official_sam(sam, args.model)
    image = load_image(args.image)
    rows = []
    for layers in args.crop_layers:
        settings = dict(
            points_per_side=args.grid,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
            box_nms_thresh=1.0,
            crop_nms_thresh=1.0,
            crop_n_layers=layers,
        )
        with torch.inference_mode():
            start = time.perf_counter()
            ref = SamAutomaticMaskGenerator(official, **settings).generate(image)
            t_ref = time.perf_counter() - start
            core = SamCore(sam, cache_bytes=0)
            start = time.perf_counter()
            ours = AutomaticMaskGenerator(core, **settings).generate(image)
            t_ours = time.perf_counter() - start
        ref_masks = np.stack(
            [
                mask_utils.decode(m["segmentation"]) > 0
                if isinstance(m["segmentation"], dict)
                else m["segmentation"]
                for m in ref
            ]
        )
        match = match_iou(ref_masks, ours.mask)
        rows.append(
            (
                f"{args.grid}x{args.grid} grid, crop_n_layers={layers}",
                f"{t_ref:.2f}",
                f"{t_ours:.2f}",
                f"{t_ref / t_ours:.2f}x",
                f"{len(ref)} vs {len(ours)} masks, min match IoU {match:.4f}, "
                f"chunk {core.chunk_size}",
            )
        )
    h, w = image.shape[:2]
    print(f"{args.model} (random weights), image {w}x{h}")
    print(f"machine: {machine()}")
    print()
    header = ("case", "SamAutomaticMaskGenerator (s)", "textseg (s)", "speed-up", "check")
    print(table(header, rows))


if __name__ == "__main__":
    main()
