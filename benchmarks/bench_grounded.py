"""Grounded text-to-mask: textseg vs the Grounded-SAM / autodistill code path, side by side.

    python benchmarks/bench_grounded.py [--images 8] [--classes 5] [--box-threshold 0.35]
                                        [--sam sam-vit-b] [--detector grounding-dino-tiny]

Both sides run in this process on the same coco-dev images with the same random weights at the
real architecture sizes (the published checkpoints cannot be downloaded here):

- textseg: ``TextSegmenter.from_preset("grounded-sam", pretrained=False)``: one Grounding DINO
  pass per image for all classes, each image encoded once, all boxes decoded in batches.
- reference: the Grounded-SAM / autodistill-grounded-sam loop, written here with public APIs
  only: per image ``SamPredictor.set_image``; per class one ``GroundingDinoForObjectDetection``
  call through the transformers ``GroundingDinoProcessor`` (caption ``"<class>."``) and
  ``post_process_grounded_object_detection``; then one ``SamPredictor.predict`` per box.
  Its Grounding DINO is the very module textseg uses (same object), its SAM the
  ``segment_anything`` model (official attention) holding textseg's SAM weights.

Same work on both sides: random weights make the detections arbitrary, so the box count is
fixed, not left to the thresholds. textseg runs first; the number of boxes its prompter hands to
SAM for each image is recorded, and the reference keeps, for that image, the same number of its
own boxes (highest scores over all classes; it keeps all it has when it has fewer, shown in the
table). Both sides use ``--box-threshold``.

Prints a Markdown table of seconds per stage and in total, and the ratio reference / textseg
(> 1: textseg is faster), all measured in this one run, and the machine it ran on. One warm-up
image per side is run first and not counted.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from _common import coco_images, machine, official_sam

#: COCO names, all in the offline BERT vocabulary of random-weight Grounding DINO builds.
CLASSES = ("person", "car", "dog", "chair", "bottle", "cup", "bicycle", "cat")


# ---------------------------------------------------------------------- the reference
@dataclass
class StageTimes:
    """Seconds per stage, summed over images."""

    detect: float = 0.0
    encode: float = 0.0
    decode: float = 0.0
    other: float = 0.0
    boxes: list[int] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.detect + self.encode + self.decode + self.other


class ReferenceGroundedSam:
    """The Grounded-SAM / autodistill-grounded-sam loop with public transformers and
    segment_anything APIs: per class one detector call, per box one SAM call.

    Args:
        detector_model: A ``GroundingDinoForObjectDetection``.
        tokenizer: Its BERT tokenizer.
        sam: A ``segment_anything`` SAM.
        shortest_edge: Detector input resize, shortest side.
        longest_edge: Detector input resize, longest side.
        box_threshold: Grounding DINO box threshold.
        text_threshold: Grounding DINO text threshold.
    """

    def __init__(
        self,
        detector_model: Any,
        tokenizer: Any,
        sam: torch.nn.Module,
        *,
        shortest_edge: int,
        longest_edge: int,
        box_threshold: float,
        text_threshold: float = 0.25,
    ) -> None:
        from segment_anything import SamPredictor
        from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

        size = {"shortest_edge": shortest_edge, "longest_edge": longest_edge}
        self.processor = GroundingDinoProcessor(
            image_processor=GroundingDinoImageProcessor(size=size), tokenizer=tokenizer
        )
        self.model = detector_model
        self.predictor = SamPredictor(sam)
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold

    @torch.inference_mode()
    def detect(self, image: np.ndarray, classes: list[str]) -> tuple[np.ndarray, ...]:
        """One detector call per class: ``(N, 4)`` XYXY pixels, ``(N,)`` scores, class ids."""
        h, w = image.shape[:2]
        boxes, scores, class_ids = [], [], []
        for k, name in enumerate(classes):
            inputs = self.processor(images=image, text=f"{name}.", return_tensors="pt")
            outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs,
                inputs["input_ids"],
                threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                target_sizes=[(h, w)],
            )[0]
            boxes.append(result["boxes"].numpy())
            scores.append(result["scores"].numpy())
            class_ids.append(np.full(len(result["scores"]), k))
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(class_ids)

    @torch.inference_mode()
    def segment(
        self, image: np.ndarray, classes: list[str], max_boxes: int | None, times: StageTimes
    ) -> list[np.ndarray]:
        """Masks of one image, one ``(H, W)`` bool per box; stage times added to ``times``."""
        t = time.perf_counter()
        boxes, scores, _ = self.detect(image, classes)
        order = np.argsort(-scores, kind="stable")[:max_boxes]
        times.detect += time.perf_counter() - t
        t = time.perf_counter()
        self.predictor.set_image(image)
        times.encode += time.perf_counter() - t
        t = time.perf_counter()
        masks = []
        for box in boxes[order]:
            m, _, _ = self.predictor.predict(box=box, multimask_output=False)
            masks.append(m[0])
        times.decode += time.perf_counter() - t
        times.boxes.append(len(order))
        return masks


# ---------------------------------------------------------------------- textseg
class CountingPrompter:
    """Wraps a prompter and records how many prompts (boxes) it gave for each image."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.counts: list[int] = []

    def prompts(self, image: Any, classes: Any) -> Any:
        out = self.inner.prompts(image, classes)
        self.counts.append(len(out.class_id))
        return out


def build_sides(args: argparse.Namespace) -> tuple[Any, ReferenceGroundedSam]:
    """textseg's preset (random weights) and the reference holding the same weights."""
    from textseg.pipelines import TextSegmenter

    torch.manual_seed(0)
    seg = TextSegmenter.from_preset(
        "grounded-sam",
        pretrained=False,
        sam=args.sam,
        detector=args.detector,
        box_threshold=args.box_threshold,
    )
    seg.prompter = CountingPrompter(seg.prompter)
    net = seg.prompter.inner.detector.net
    reference = ReferenceGroundedSam(
        net.model,
        net.tokenizer,
        official_sam(seg.sam.backend.model, args.sam),
        shortest_edge=net.options["shortest_edge"],
        longest_edge=net.options["longest_edge"],
        box_threshold=args.box_threshold,
    )
    return seg, reference


def run_textseg(seg: Any, images: list[np.ndarray], classes: list[str]) -> StageTimes:
    times = StageTimes()
    for image in images:
        result = seg.segment(image, classes)
        t = result.timings
        times.detect += t["prompt"] / 1e3
        times.encode += t["encode"] / 1e3
        times.decode += t["decode"] / 1e3
        times.other += (t["total"] - t["prompt"] - t["encode"] - t["decode"]) / 1e3
        times.boxes.append(seg.prompter.counts[-1])
    return times


def run_reference(
    reference: ReferenceGroundedSam,
    images: list[np.ndarray],
    classes: list[str],
    budgets: list[int],
) -> StageTimes:
    times = StageTimes()
    for image, budget in zip(images, budgets):
        reference.segment(image, classes, budget, times)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, default=5, help=f"first N of {CLASSES}")
    parser.add_argument("--box-threshold", type=float, default=0.35)
    parser.add_argument("--sam", default="sam-vit-b")
    parser.add_argument("--detector", default="grounding-dino-tiny")
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.classes <= len(CLASSES):
        parser.error(f"--classes: 1 to {len(CLASSES)}")

    classes = list(CLASSES[: args.classes])
    seg, reference = build_sides(args)
    named = coco_images(args.images + 1)
    warmup, images = named[0][1], [a for _, a in named[1:]]
    with torch.inference_mode():
        if not args.no_warmup:
            seg.segment(warmup, classes)
            reference.segment(warmup, classes, 1, StageTimes())
            seg.prompter.counts.clear()
        gc.collect()
        ours = run_textseg(seg, images, classes)
        gc.collect()
        ref = run_reference(reference, images, classes, ours.boxes)

    sizes = sorted({f"{a.shape[1]}x{a.shape[0]}" for a in images})
    print(
        f"grounded text-to-mask, {len(images)} coco-dev images ({', '.join(sizes[:3])}"
        f"{'...' if len(sizes) > 3 else ''}), {len(classes)} classes {classes}; detector "
        f"{args.detector}, SAM {args.sam}, random weights, box threshold {args.box_threshold}"
    )
    print(
        f"boxes decoded: textseg {sum(ours.boxes)}, reference {sum(ref.boxes)} (per image "
        f"{ours.boxes} / {ref.boxes})"
    )
    print(f"machine: {machine()}")
    print()
    print("| stage (s, all images) | reference: Grounded-SAM loop | textseg | ratio |")
    print("|---|---:|---:|---:|")
    rows = [
        (f"detect ({len(classes)} calls/img vs 1)", ref.detect, ours.detect),
        ("SAM encode", ref.encode, ours.encode),
        ("SAM decode (1 call/box vs batched)", ref.decode, ours.decode),
        ("post-processing (textseg only: dedup, RLE)", ref.other, ours.other),
        ("**total**", ref.total, ours.total),
        ("per image", ref.total / len(images), ours.total / len(images)),
    ]
    for name, r, o in rows:
        ratio = f"{r / o:.2f}x" if o > 0 and r > 0 else "-"
        print(f"| {name} | {r:.2f} | {o:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
