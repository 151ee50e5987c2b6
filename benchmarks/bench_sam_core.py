"""textseg's SAM core vs segment_anything, side by side in one run, same random weights.

    python benchmarks/bench_sam_core.py [--model sam-vit-b] [--boxes 64] [--grid 16]

(a) one image, N box prompts: ``SamCore.predict`` (batched) vs ``SamPredictor.predict`` once
    per box (what Grounded-SAM does);
(b) automatic mask generation on an ``n x n`` grid: ``AutomaticMaskGenerator`` vs
    ``SamAutomaticMaskGenerator``, same settings, masks compared;
(c) image encoder: ``SamCore.encode`` vs ``SamPredictor.set_image``.

Weights are random (the real checkpoints cannot be downloaded here) at the real architecture
size, so the timings are real and the masks are not meaningful. Filtering thresholds in (b) are
0, so every candidate mask is upsampled and scored by both implementations (the slowest case for
textseg, which otherwise skips the upsampling of candidates that fail the IoU filter).
Each time is the best of repeated runs (3 for (a), 2 for the others: the first run of each also
warms the allocator and oneDNN). Prints a Markdown table of times and ratios (reference /
textseg: > 1 means textseg is faster).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import DATA, iou, machine, match_iou, official_sam, random_boxes, table, timed
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from textseg._hub import create_model
from textseg._image import load_image
from textseg.sam import AutomaticMaskGenerator, Prompts, SamCore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam-vit-b")
    parser.add_argument("--boxes", type=int, default=64)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--image", default=str(DATA / "coco-dev" / "images" / "000000000009.jpg"))
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--box-nms", type=float, default=1.0, help="automatic generator NMS")
    args = parser.parse_args()

    torch.manual_seed(0)
    sam = create_model(args.model, task="sam", pretrained=False)
    official = official_sam(sam, args.model)  # the same weights in segment_anything's modules
    image = load_image(args.image)
    h, w = image.shape[:2]
    rows = []

    with torch.inference_mode():
        # (c) encoder
        predictor = SamPredictor(official)
        t_ref_enc, _ = timed(lambda: predictor.set_image(image), 2)
        core = SamCore(sam, chunk_size=args.chunk_size, cache_bytes=0)
        t_enc, emb = timed(lambda: core.encode(image), 2)
        diff = float((emb.embedding - predictor.features).abs().max())
        rows.append(("(c) image encoder, 1 image", t_ref_enc, t_enc, f"max abs diff {diff:.1e}"))

        # (a) N boxes on one image, embedding already computed on both sides
        boxes = random_boxes(args.boxes, h, w)
        t_ref, ref = timed(
            lambda: [predictor.predict(box=b, multimask_output=False) for b in boxes], 3
        )
        t_ours, dets = timed(lambda: core.predict(emb, Prompts.from_boxes(boxes)), 3)
        worst = min(iou(r[0][0], m) for r, m in zip(ref, dets.mask))
        diff = max(abs(float(r[1][0]) - float(s)) for r, s in zip(ref, dets.data["sam_iou"]))
        rows.append(
            (
                f"(a) {args.boxes} box prompts, 1 image (decode only)",
                t_ref,
                t_ours,
                f"min mask IoU {worst:.4f}, max IoU-pred diff {diff:.1e}",
            )
        )

    # (b) automatic generation, encoder included on both sides
    # Random weights give near-identical full-image masks, which box NMS would fold into one;
    # --box-nms 1.0 (default) keeps every candidate, so hundreds of masks are compared.
    settings = dict(
        points_per_side=args.grid,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=args.box_nms,
    )
    reference = SamAutomaticMaskGenerator(official, **settings)
    t_ref_amg, ref_masks = timed(lambda: reference.generate(image), 2)
    generator = AutomaticMaskGenerator(
        SamCore(sam, chunk_size=args.chunk_size, cache_bytes=0), **settings
    )
    t_amg, amg = timed(lambda: generator.generate(image), 2)
    ref_stack = np.stack(
        [
            mask_utils.decode(m["segmentation"]) > 0
            if isinstance(m["segmentation"], dict)
            else m["segmentation"]
            for m in ref_masks
        ]
    )
    rows.append(
        (
            f"(b) automatic, {args.grid}x{args.grid} grid (encoder included)",
            t_ref_amg,
            t_amg,
            f"{len(ref_masks)} vs {len(amg)} masks, min match IoU "
            f"{match_iou(ref_stack, amg.mask):.4f}",
        )
    )
    # (b') the same without the encoder (embedding cached), the part textseg changes
    generator_cached = AutomaticMaskGenerator(core, **settings)
    core.cache.max_bytes = 1 << 30
    core.encode(image)
    t_amg_cached, _ = timed(lambda: generator_cached.generate(image), 2)
    rows.append(
        (
            f"(b') automatic, {args.grid}x{args.grid} grid (decode + post-processing)",
            t_ref_amg - t_ref_enc,
            t_amg_cached,
            "reference minus its encoder time",
        )
    )

    print(f"model {args.model} (random weights), image {w}x{h}, chunk {core.chunk_size}")
    print(f"machine: {machine()}")
    print()
    header = ("case", "segment_anything (s)", "textseg (s)", "speed-up", "check")
    body = [(n, f"{r:.2f}", f"{o:.2f}", f"{r / o:.2f}x", c) for n, r, o, c in rows]
    print(table(header, body))


if __name__ == "__main__":
    main()
