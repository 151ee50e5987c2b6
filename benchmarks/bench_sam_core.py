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
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from textseg._hub import build_model
from textseg._image import load_image
from textseg._registry import get_model_cfg
from textseg.sam import AutomaticMaskGenerator, Prompts, SamCore

DATA = Path(os.environ.get("TEXTSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _boxes(n: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, w * 0.6, n)
    y0 = rng.uniform(0, h * 0.6, n)
    x1 = np.minimum(x0 + rng.uniform(20, w * 0.4, n), w - 1)
    y1 = np.minimum(y0 + rng.uniform(20, h * 0.4, n), h - 1)
    return np.stack([x0, y0, x1, y1], 1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _match(ref: np.ndarray, ours: np.ndarray) -> float:
    """Smallest best-match IoU of each reference mask among ours (1.0 = all found)."""
    if len(ref) == 0 or len(ours) == 0:
        return 1.0 if len(ref) == len(ours) else 0.0

    def rles(masks: np.ndarray) -> list[dict]:
        return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))

    ious = mask_utils.iou(rles(ref), rles(ours), [0] * len(ours))  # (len(ref), len(ours))
    return float(np.asarray(ious).max(1).min())


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
    sam = build_model(args.model, task="sam", pretrained=False)
    # The reference: the same weights in the official modules (official attention).
    cfg = get_model_cfg(args.model, "sam")
    official = build_model(
        replace(cfg, arch={**cfg.arch, "sdpa_attention": False}), pretrained=False
    )
    official.load_state_dict(sam.state_dict())
    official.eval()
    image = load_image(args.image)
    h, w = image.shape[:2]
    rows = []

    with torch.inference_mode():
        # (c) encoder
        predictor = SamPredictor(official)
        t_ref_enc, _ = _timed(lambda: predictor.set_image(image), 2)
        core = SamCore(sam, chunk_size=args.chunk_size, cache_bytes=0)
        t_enc, emb = _timed(lambda: core.encode(image), 2)
        diff = float((emb.embedding - predictor.features).abs().max())
        rows.append(("(c) image encoder, 1 image", t_ref_enc, t_enc, f"max abs diff {diff:.1e}"))

        # (a) N boxes on one image, embedding already computed on both sides
        boxes = _boxes(args.boxes, h, w)
        t_ref, ref = _timed(
            lambda: [predictor.predict(box=b, multimask_output=False) for b in boxes], 3
        )
        t_ours, dets = _timed(lambda: core.predict(emb, Prompts.from_boxes(boxes)), 3)
        worst = min(_iou(r[0][0], m) for r, m in zip(ref, dets.mask))
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
    t_ref_amg, ref_masks = _timed(lambda: reference.generate(image), 2)
    generator = AutomaticMaskGenerator(
        SamCore(sam, chunk_size=args.chunk_size, cache_bytes=0), **settings
    )
    t_amg, amg = _timed(lambda: generator.generate(image), 2)
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
            f"{min(_match(ref_stack, amg.mask), _match(amg.mask, ref_stack)):.4f}",
        )
    )
    # (b') the same without the encoder (embedding cached), the part textseg changes
    generator_cached = AutomaticMaskGenerator(core, **settings)
    core.cache.max_bytes = 1 << 30
    core.encode(image)
    t_amg_cached, _ = _timed(lambda: generator_cached.generate(image), 2)
    rows.append(
        (
            f"(b') automatic, {args.grid}x{args.grid} grid (decode + post-processing)",
            t_ref_amg - t_ref_enc,
            t_amg_cached,
            "reference minus its encoder time",
        )
    )

    print(f"model {args.model} (random weights), image {w}x{h}, chunk {core.chunk_size}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, python {sys.version.split()[0]}"
    )
    print()
    print("| case | segment_anything (s) | textseg (s) | speed-up | check |")
    print("|---|---:|---:|---:|---|")
    for name, ref_t, ours_t, check in rows:
        print(f"| {name} | {ref_t:.2f} | {ours_t:.2f} | {ref_t / ours_t:.2f}x | {check} |")


if __name__ == "__main__":
    main()
