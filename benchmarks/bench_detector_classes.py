"""Five classes on one image: one batched Grounding DINO pass vs one pass per class.

autodistill-grounded-sam (and most Grounded-SAM scripts) run the detector once per class. textseg
puts every prompt in one caption and reads each class from its token span, so five classes cost
one forward pass. Both arms below use the same detector object (same weights, same pre- and
post-processing); only the number of forward passes differs.

Runs the real ``grounding-dino-tiny`` architecture (Swin-T + BERT-base, 172M parameters) with
random weights (``pretrained=False``), so no download is needed; speed does not depend on the
weights.

    python benchmarks/bench_detector_classes.py [--image PATH] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from textseg._image import to_rgb_uint8
from textseg.detectors import GroundingDinoDetector

CLASSES = ["person", "car", "dog", "traffic light", "bicycle"]
DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "demo" / "truck.jpg"


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="grounding-dino-tiny")
    args = parser.parse_args()

    image = to_rgb_uint8(args.image)
    torch.manual_seed(0)
    det = GroundingDinoDetector(args.model, pretrained=False, device=args.device, box_threshold=0.0)
    det.detect(image[:64, :64], CLASSES[:1])  # warm-up (lazy init), small to stay cheap

    batched_s, batched = timed(lambda: det.detect(image, CLASSES), args.repeats)
    loop_s, looped = timed(lambda: [det.detect(image, [c]) for c in CLASSES], args.repeats)

    h, w = image.shape[:2]
    params = sum(p.numel() for p in det.model.parameters()) / 1e6
    print(
        f"{args.model} ({params:.0f}M params, random weights), {args.device}, "
        f"image {w}x{h}, {len(CLASSES)} classes, median of {args.repeats}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'arm':<34}{'forwards':>9}{'seconds':>10}{'s/class':>10}")
    print(
        f"{'textseg: one batched caption':<34}{1:>9}{batched_s:>10.2f}"
        f"{batched_s / len(CLASSES):>10.2f}"
    )
    print(
        f"{'per-class loop (autodistill)':<34}{len(CLASSES):>9}{loop_s:>10.2f}"
        f"{loop_s / len(CLASSES):>10.2f}"
    )
    print(f"speed-up (loop / batched): {loop_s / batched_s:.2f}x")
    print(f"boxes kept: batched {len(batched)}, loop {sum(len(d) for d in looped)}")


if __name__ == "__main__":
    main()
