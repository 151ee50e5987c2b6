"""How time and memory grow: 1, 8, 64 boxes on one image, and 1, 4, 16 images, side by side.

    python benchmarks/bench_scaling.py [--boxes 1 8 64] [--images 1 4 16] [--classes 5]
                                       [--sam sam-vit-b] [--detector grounding-dino-tiny]

(1) Boxes: one image whose embedding is computed once on both sides; N box prompts decoded by
    ``SamCore.predict`` (batched) vs ``SamPredictor.predict`` once per box (Grounded-SAM).
(2) Images: the grounded text-to-mask job of ``bench_grounded.py`` (5 classes) on the first K
    coco-dev images; textseg's preset vs the Grounded-SAM / autodistill loop. Each side runs in
    its own fresh process, so its resident memory is its own: the table gives the peak resident
    set size during the job (sampled every 5 ms) and its growth over the process with the models
    loaded. Both processes build the same models (textseg's preset, then the segment_anything
    SAM holding its weights) and drop the SAM they do not use before the job starts.

Random weights at the real architecture sizes; the reference decodes, per image, as many boxes as
textseg did (see ``bench_grounded.py``). Ratios are reference / textseg (> 1: textseg is better).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys

import torch
from _common import (
    RssSampler,
    coco_images,
    machine,
    official_sam,
    random_boxes,
    table,
    timed,
)
from bench_grounded import CLASSES, StageTimes, build_sides, run_reference, run_textseg

from textseg.sam import Prompts, SamCore


def box_scaling(args: argparse.Namespace) -> list[tuple[object, ...]]:
    """Rows of the boxes table: decode time for each box count."""
    from segment_anything import SamPredictor

    from textseg._hub import create_model

    torch.manual_seed(0)
    sam = create_model(args.sam, task="sam", pretrained=False)
    predictor = SamPredictor(official_sam(sam, args.sam))
    core = SamCore(sam)
    image = coco_images(1)[0][1]
    h, w = image.shape[:2]
    rows = []
    with torch.inference_mode():
        predictor.set_image(image)
        emb = core.encode(image)
        for n in args.boxes:
            boxes = random_boxes(n, h, w, seed=n)
            t_ref, _ = timed(
                lambda b=boxes: [predictor.predict(box=x, multimask_output=False) for x in b], 2
            )
            t_ours, _ = timed(lambda b=boxes: core.predict(emb, Prompts.from_boxes(b)), 2)
            rows.append((n, f"{t_ref * 1e3:.0f}", f"{t_ours * 1e3:.0f}", f"{t_ref / t_ours:.2f}x"))
    return rows


def child(args: argparse.Namespace) -> None:
    """One side of the images job in this process; prints one JSON line."""
    seg, reference = build_sides(args)
    classes = list(CLASSES[: args.classes])
    named = coco_images(args.num_images + 1)
    warmup, images = named[0][1], [a for _, a in named[1:]]
    with torch.inference_mode():
        if args.child == "textseg":
            reference.predictor = None  # the segment_anything copy of SAM is not used
            del reference
            gc.collect()
            seg.segment(warmup, classes)
            seg.prompter.counts.clear()
            seg.sam.cache.clear()
            base = RssSampler.current()
            with RssSampler() as rss:
                times = run_textseg(seg, images, classes)
        else:
            seg.sam = None  # textseg's SAM is not used; its detector is the reference's
            gc.collect()
            reference.segment(warmup, classes, 1, StageTimes())
            base = RssSampler.current()
            budgets = [int(b) for b in args.budgets.split(",")]
            with RssSampler() as rss:
                times = run_reference(reference, images, classes, budgets)
    print(
        json.dumps(
            {
                "seconds": times.total,
                "peak_mb": rss.peak,
                "base_mb": base,
                "boxes": times.boxes,
            }
        )
    )


def _run_child(args: argparse.Namespace, side: str, k: int, budgets: list[int] | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--num-images",
        str(k),
        "--classes",
        str(args.classes),
        "--sam",
        args.sam,
        "--detector",
        args.detector,
        "--box-threshold",
        str(args.box_threshold),
    ]
    if budgets is not None:
        cmd += ["--budgets", ",".join(map(str, budgets))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} with {k} images failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, nargs="*", default=[1, 8, 64])
    parser.add_argument("--images", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--box-threshold", type=float, default=0.35)
    parser.add_argument("--sam", default="sam-vit-b")
    parser.add_argument("--detector", default="grounding-dino-tiny")
    parser.add_argument("--child", choices=("textseg", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--num-images", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--budgets", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print(f"machine: {machine()}; SAM {args.sam}, detector {args.detector}, random weights")
    if args.boxes:
        print()
        print("(1) decode N box prompts on one cached image embedding")
        print()
        header = ("boxes", "SamPredictor loop (ms)", "textseg batched (ms)", "speed-up")
        print(table(header, box_scaling(args)))
    if args.images:
        rows = []
        for k in args.images:
            ours = _run_child(args, "textseg", k, None)
            ref = _run_child(args, "reference", k, ours["boxes"])
            rows.append(
                (
                    k,
                    f"{sum(ours['boxes'])}",
                    f"{ref['seconds']:.1f}",
                    f"{ours['seconds']:.1f}",
                    f"{ref['seconds'] / ours['seconds']:.2f}x",
                    f"{ref['peak_mb']:.0f} (+{ref['peak_mb'] - ref['base_mb']:.0f})",
                    f"{ours['peak_mb']:.0f} (+{ours['peak_mb'] - ours['base_mb']:.0f})",
                )
            )
        print()
        print(
            f"(2) grounded text-to-mask, {args.classes} classes, K coco-dev images; "
            "peak RSS in MiB (growth over the loaded models)"
        )
        print()
        header = (
            "images",
            "boxes",
            "reference (s)",
            "textseg (s)",
            "speed-up",
            "reference peak RSS",
            "textseg peak RSS",
        )
        print(table(header, rows))


if __name__ == "__main__":
    main()
