"""The core benchmarks on one device, textseg vs the official code, in one table.

    python benchmarks/bench_gpu.py [--device cuda] [--sam sam-vit-b] [--images 4] [--boxes 64]
                                   [--grid 16] [--precision bfloat16] [--compile] [--tiny]

Rows (same random weights, same coco-dev images, both sides in this process, timed with the
device synchronised; the best of ``--repeats``):

- image encoder, images/s: ``SamPredictor.set_image`` per image vs ``SamCore.encode_many``
  (batch 1 and batch ``--batch``), float32, and with ``--precision`` (bf16/fp16 autocast on
  CUDA, the weights kept float32) for textseg;
- ``--boxes`` box prompts on one cached embedding: one ``SamPredictor.predict`` per box vs
  ``SamCore.predict`` (batched, the device's chunk size);
- automatic masks, ``--grid`` x ``--grid`` points, encoder included:
  ``SamAutomaticMaskGenerator`` vs ``AutomaticMaskGenerator`` (thresholds 0, same settings;
  mask counts shown);
- grounded text-to-mask per image (Grounding DINO + SAM, 5 classes): the Grounded-SAM loop
  (one detector call per class, one SAM call per box; ``bench_grounded.py``'s reference, here
  moved to the device) vs ``TextSegmenter.from_preset("grounded-sam")``.

``benchmarks/gpu.sh`` runs this on a GPU (under 8 minutes on one); ``--device cpu --tiny`` (the
tiny random models, small sizes) is the smoke test the suite runs. Prints one Markdown table
and the machine; the ratio is reference / textseg (> 1: textseg is faster).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from _common import coco_images, machine, official_sam, random_boxes, table

T = TypeVar("T")
CLASSES = ["person", "car", "dog", "chair", "bottle"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device, repeats: int) -> tuple[float, T]:
    """Best wall time of ``repeats`` calls (device synchronised), and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out  # type: ignore[return-value]


def _grounded_reference(seg: Any, sam_name: str, device: torch.device) -> Any:
    """bench_grounded's Grounded-SAM loop, with its detector inputs moved to ``device``."""
    from bench_grounded import ReferenceGroundedSam

    class OnDevice(ReferenceGroundedSam):
        @torch.inference_mode()
        def detect(self, image: np.ndarray, classes: list[str]) -> tuple[np.ndarray, ...]:
            h, w = image.shape[:2]
            boxes, scores, ids = [], [], []
            for k, name in enumerate(classes):
                inputs = self.processor(images=image, text=f"{name}.", return_tensors="pt")
                outputs = self.model(**inputs.to(device))
                result = self.processor.post_process_grounded_object_detection(
                    outputs,
                    inputs["input_ids"],
                    threshold=self.box_threshold,
                    text_threshold=self.text_threshold,
                    target_sizes=[(h, w)],
                )[0]
                boxes.append(result["boxes"].cpu().numpy())
                scores.append(result["scores"].cpu().numpy())
                ids.append(np.full(len(result["scores"]), k))
            return np.concatenate(boxes), np.concatenate(scores), np.concatenate(ids)

    net = seg.prompter.inner.detector.net
    return OnDevice(
        net.model,
        net.tokenizer,
        official_sam(seg.sam.backend.model, sam_name).to(device),
        shortest_edge=net.options["shortest_edge"],
        longest_edge=net.options["longest_edge"],
        box_threshold=0.35,
    )


def main(argv: list[str] | None = None) -> list[tuple[Any, ...]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sam", default="sam-vit-b")
    parser.add_argument("--detector", default="grounding-dino-tiny")
    parser.add_argument("--images", type=int, default=4, help="encoder and grounded images")
    parser.add_argument("--batch", type=int, default=4, help="encoder batch size")
    parser.add_argument("--boxes", type=int, default=64)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--precision", default="bfloat16", help="textseg half dtype, or none")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random models (the suite's smoke test)"
    )
    args = parser.parse_args(argv)

    from segment_anything import SamAutomaticMaskGenerator, SamPredictor

    from textseg._device import resolve_device
    from textseg._hub import create_model
    from textseg.pipelines import TextSegmenter
    from textseg.sam import AutomaticMaskGenerator, Prompts, SamCore

    device = resolve_device(args.device)
    sam_name = "sam-vit-tiny-test" if args.tiny else args.sam
    torch.manual_seed(0)
    sam = create_model(sam_name, task="sam", pretrained=False).to(device).eval()
    official = official_sam(sam.cpu(), sam_name).to(device)
    sam.to(device)
    images = [a for _, a in coco_images(args.images)]
    rows: list[tuple[Any, ...]] = []

    def core(**kw: Any) -> SamCore:
        return SamCore(sam, device=device, cache_bytes=0, compile=args.compile, **kw)

    with torch.inference_mode():
        # --- encoder
        predictor = SamPredictor(official)
        predictor.set_image(images[0])  # warm-up (cuDNN / allocator)

        def ref_encode() -> None:
            for image in images:
                predictor.set_image(image)

        t_ref, _ = timed(ref_encode, device, args.repeats)
        n = len(images)
        for batch in sorted({1, args.batch}):
            ours = core()
            ours.encode_many(images[:batch], batch_size=batch)  # warm-up
            t, _ = timed(lambda o=ours, b=batch: o.encode_many(images, batch_size=b), device, 2)
            rows.append(
                (f"encoder, images/s (float32, batch {batch})", n / t_ref, n / t, "fp32 both")
            )
        if args.precision not in ("none", "float32"):
            half = core(dtype=args.precision)
            half.encode_many(images[:1])
            t, _ = timed(lambda: half.encode_many(images, batch_size=args.batch), device, 2)
            rows.append(
                (
                    f"encoder, images/s ({args.precision} {half.precision.name}, batch "
                    f"{args.batch})",
                    n / t_ref,
                    n / t,
                    "reference fp32",
                )
            )

        # --- boxes on one embedding
        image = images[0]
        h, w = image.shape[:2]
        boxes = random_boxes(args.boxes, h, w)
        predictor.set_image(image)
        ours = core()
        emb = ours.encode(image)
        ours.predict(emb, Prompts.from_boxes(boxes[:2]))
        t_ref, ref = timed(
            lambda: [predictor.predict(box=b, multimask_output=False) for b in boxes],
            device,
            args.repeats,
        )
        t, dets = timed(lambda: ours.predict(emb, Prompts.from_boxes(boxes)), device, 3)
        rows.append(
            (
                f"{args.boxes} boxes on one embedding, ms (chunk {ours.chunk_size})",
                1e3 * t_ref,
                1e3 * t,
                f"{len(ref)} vs {len(dets)} masks",
            )
        )

        # --- automatic masks
        settings = dict(
            points_per_side=args.grid,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
            box_nms_thresh=1.0,
        )
        reference = SamAutomaticMaskGenerator(official, **settings)
        generator = AutomaticMaskGenerator(core(), **settings)
        t_ref, ref_masks = timed(lambda: reference.generate(image), device, 1)
        t, amg = timed(lambda: generator.generate(image), device, 1)
        rows.append(
            (
                f"automatic {args.grid}x{args.grid} grid, s (encoder included)",
                t_ref,
                t,
                f"{len(ref_masks)} vs {len(amg)} masks",
            )
        )

    # --- grounded text-to-mask
    seg = TextSegmenter.from_preset(
        "grounded-sam",
        tiny=args.tiny,
        device=str(device),
        pretrained=False,
        sam=args.sam,
        detector=args.detector,
        box_threshold=0.35,
    )
    from bench_grounded import CountingPrompter, StageTimes

    # The reference decodes as many boxes per image as textseg's prompter gave (random
    # weights make the detections arbitrary; bench_grounded.py does the same).
    seg.prompter = CountingPrompter(seg.prompter)
    ref_pipe = _grounded_reference(seg, seg.sam.name.split("+")[0], device)

    with torch.inference_mode():
        seg.segment(images[0], CLASSES)
        ref_pipe.segment(images[0], CLASSES, 1, StageTimes())
        seg.prompter.counts.clear()

        def ours_all() -> int:
            return sum(len(seg.segment(im, CLASSES).detections) for im in images)

        def ref_all() -> int:
            budgets = seg.prompter.counts[-len(images) :]
            return sum(
                len(ref_pipe.segment(im, CLASSES, k, StageTimes()))
                for im, k in zip(images, budgets)
            )

        t, _ = timed(ours_all, device, 1)
        t_ref, n_ref = timed(ref_all, device, 1)
    rows.append(
        (
            f"grounded pipeline, s per image ({len(CLASSES)} classes)",
            t_ref / n,
            t / n,
            f"{n_ref} vs {sum(seg.prompter.counts[-n:])} boxes decoded",
        )
    )

    print(
        f"device {device}, SAM {sam_name}, detector {'tiny' if args.tiny else args.detector}, "
        f"random weights, {n} coco-dev images, compile={args.compile}"
    )
    print(f"machine: {machine()}")
    print()
    body = []
    for name, ref_v, ours_v, note in rows:
        higher_better = "images/s" in name
        ratio = ours_v / ref_v if higher_better else ref_v / ours_v
        body.append((name, f"{ref_v:.3g}", f"{ours_v:.3g}", f"{ratio:.2f}x", note))
    print(table(("case", "official / reference", "textseg", "speed-up", "note"), body))
    return body


if __name__ == "__main__":
    main()
