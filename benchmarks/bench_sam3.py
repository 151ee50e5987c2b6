"""SAM 3 with many classes: textseg's way vs transformers' example code, side by side.

    python benchmarks/bench_sam3.py [--classes 1,5,20] [--image-size 1008] [--repeats 1]
                                    [--reference-max 20] [--pipelines]

Both sides run in this process on the same coco-dev image with the same random weights at the
real SAM 3 size (``Sam3Prompter("sam3", pretrained=False)``: the 1008 px ViT, the CLIP text
encoder, the detector and the mask head, ~840M parameters; the gated checkpoint cannot be
downloaded here), one model in memory:

- textseg: ``Sam3Prompter.prompts(image, classes)``: the image encoded once, every class's text
  encoded in one batch, the detector run on the cached vision features for the classes
  (``concept_batch_size`` at a time), vocabulary rules and masks kept at 288x288.
- reference: the transformers documentation's example, once per class: ``Sam3Processor(images=
  image, text=cls)``, ``Sam3Model(**inputs)`` (the whole model: vision, text, detector) and
  ``post_process_instance_segmentation`` (masks at full image size).
- also shown: the documentation's "efficient multi-prompt" variant (vision features computed
  once, then one model call per class), which textseg's batching goes beyond.

``--image-size`` runs the same weights at a smaller input (the ViT tiles its position
embeddings), for machines where 1008 px takes too long; ``--reference-max`` skips the
per-class reference above that many classes (the table says so). ``--pipelines`` adds textseg's
``grounded-sam`` pipeline and the ``sam3`` pipeline per image on the same image, 5 classes (the
SAM 3 tracker the sam3 preset loads for clicks is not run by ``segment`` and is not built).

Prints Markdown tables of seconds and the ratio reference / textseg (> 1: textseg is faster),
and the machine. A warm-up call per side is not counted.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import torch
from _common import coco_images, machine, table

#: COCO names (in CLIP's vocabulary), the first N are asked for.
CLASSES = (
    "person", "car", "dog", "chair", "bottle", "cup", "bicycle", "cat", "bus", "truck",
    "horse", "bench", "bird", "umbrella", "book", "clock", "vase", "couch", "tv", "laptop",
)  # fmt: skip


def _prompter(image_size: int, model: str = "sam3"):
    """The real-size SAM 3 (random weights); ``image_size`` other than 1008 builds the same
    parameters for a smaller input (RoPE and feature sizes follow the input)."""
    from dataclasses import replace

    from textseg._hub import create_model
    from textseg._registry import get_model_cfg
    from textseg.prompters.sam3 import Sam3Prompter

    cfg = get_model_cfg(model, "sam3")
    if image_size != cfg.arch["vision"]["image_size"]:
        vision = {**cfg.arch["vision"], "image_size": image_size}
        cfg = replace(cfg, arch={**cfg.arch, "vision": vision})
    torch.manual_seed(0)
    return Sam3Prompter(create_model(cfg, pretrained=False), box_threshold=0.5)


def _reference(prompter, image: np.ndarray, classes: list[str], efficient: bool) -> list:
    """transformers' documented code, once per class (``efficient``: vision features once)."""
    from transformers import Sam3Processor

    processor = Sam3Processor(
        image_processor=prompter.image_processor, tokenizer=prompter.net.tokenizer
    )
    model = prompter.net.model
    out = []
    with torch.inference_mode():
        if efficient:
            image_inputs = processor(images=image, return_tensors="pt")
            vision = model.get_vision_features(pixel_values=image_inputs.pixel_values)
        for cls in classes:
            if efficient:
                text_inputs = processor(text=cls, return_tensors="pt")
                outputs = model(vision_embeds=vision, **text_inputs)
            else:
                inputs = processor(images=image, text=cls, return_tensors="pt")
                outputs = model(**inputs)
            out.append(
                processor.post_process_instance_segmentation(
                    outputs, threshold=0.5, mask_threshold=0.5, target_sizes=[image.shape[:2]]
                )[0]
            )
    return out


def _textseg(prompter, image: np.ndarray, classes: list[str]):
    prompter._last = None  # a new image: the encoder runs
    return prompter.prompts(image, classes)


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _s(seconds: float) -> str:
    return f"{seconds:.1f}" if np.isfinite(seconds) else "not run"


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x" if np.isfinite(ratio) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", default="1,5,20")
    parser.add_argument("--image-size", type=int, default=1008)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--reference-max", type=int, default=20)
    parser.add_argument("--pipelines", action="store_true")
    parser.add_argument("--offset", type=int, default=0, help="which coco-dev image")
    parser.add_argument("--model", default="sam3", help="sam3 (default), or a tiny test entry")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up calls")
    parser.add_argument(
        "--no-efficient", action="store_true", help="skip the vision-once reference variant"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.classes.split(",")]
    name, image = coco_images(1, args.offset)[0]
    print(f"machine: {machine()}")
    print(f"image: {name} {image.shape[1]}x{image.shape[0]}, SAM 3 input {args.image_size} px")

    start = time.perf_counter()
    prompter = _prompter(args.image_size, args.model)
    params = sum(p.numel() for p in prompter.net.model.parameters()) / 1e6
    took = time.perf_counter() - start
    print(f"SAM 3 built (random weights, {params:.0f}M parameters) in {took:.0f} s")
    if not args.no_warmup:  # not counted: allocator, kernels, tokenizer caches
        _textseg(prompter, image, list(CLASSES[:1]))
        _reference(prompter, image, list(CLASSES[:1]), efficient=False)

    rows = []
    for n in counts:
        classes = list(CLASSES[:n])
        t_ours, found = _best(lambda c=classes: _textseg(prompter, image, c), args.repeats)
        if n <= args.reference_max:
            t_ref, _ = _best(lambda c=classes: _reference(prompter, image, c, False), args.repeats)
            t_eff = float("nan")
            if not args.no_efficient:
                t_eff, _ = _best(
                    lambda c=classes: _reference(prompter, image, c, True), args.repeats
                )
            rows.append(
                (n, f"{t_ref:.1f}", _s(t_eff), f"{t_ours:.1f}", f"**{t_ref / t_ours:.2f}x**",
                 _x(t_eff / t_ours), len(found))
            )  # fmt: skip
        else:
            rows.append((n, "not run", "not run", f"{t_ours:.1f}", "-", "-", len(found)))
        print(f"  {n} classes done", flush=True)
    print()
    print(
        table(
            ("classes", "reference: model per class (s)", "vision once, model per class (s)",
             "textseg (s)", "speed-up", "vs vision-once", "instances (textseg)"),
            rows,
        )
    )  # fmt: skip

    if args.pipelines:
        from textseg.pipelines import TextSegmenter
        from textseg.sam import SamCore

        classes = list(CLASSES[:5])
        seg = TextSegmenter(prompter, SamCore("sam3-tracker-tiny-test"))
        if not args.no_warmup:
            seg.segment(image, classes)

        def run_sam3():
            prompter._last = None  # a new image each time: the encoder runs
            return seg.segment(image, classes)

        t_sam3, result = _best(run_sam3, args.repeats)
        sam3_timings = result.timings
        del seg, prompter
        gc.collect()
        torch.manual_seed(0)
        grounded = TextSegmenter.from_preset("grounded-sam", pretrained=False)
        if not args.no_warmup:
            grounded.segment(image, classes)

        def run_grounded():
            grounded.sam.cache.clear()  # a new image each time: the encoder runs
            return grounded.segment(image, classes)

        t_gs, result = _best(run_grounded, args.repeats)
        gst = result.timings
        stages = ("encode", "prompt", "decode", "dedup")
        print()
        print(
            table(
                ("pipeline (5 classes, 1 image)", "total (s)", *stages),
                [
                    ("sam3", f"{t_sam3:.1f}", *(f"{sam3_timings[k] / 1e3:.1f}" for k in stages)),
                    ("grounded-sam", f"{t_gs:.1f}", *(f"{gst[k] / 1e3:.1f}" for k in stages)),
                ],
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()
