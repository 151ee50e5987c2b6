"""Time per image of each preset on this machine, through ``textseg eval``'s comparison.

    python benchmarks/bench_presets.py [--presets grounded-sam,grounded-sam-hq,fast,...]
                                       [--images 1] [--out bench-presets]

Every preset is built at its real size with random weights (``pretrained=False``; the published
checkpoints cannot be downloaded here) and run by :func:`textseg.eval.compare.compare_presets`
on the first coco-dev images with the text protocol (all the image's classes prompted), one
preset in memory at a time. The metrics are meaningless with random weights; the per-stage times
are what a user's CPU pays, except that random detectors return an arbitrary number of boxes
(shown), which moves the SAM decode time. Prints the comparison's timing table and the machine.
"""

from __future__ import annotations

import argparse

from _common import DATA, machine

from textseg.eval.compare import compare_presets

PRESETS = "grounded-sam,grounded-sam-hq,fast,owlv2-sam,clip-points,sam3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=PRESETS)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--out", default="bench-presets")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    comparison = compare_presets(
        DATA / "coco-dev",
        args.presets,
        "text",
        max_images=args.images,
        out_dir=args.out,
        progress=False,
        pretrained=False,
    )
    markdown = comparison.to_markdown()
    print(markdown[markdown.index("Time per image") :])
    for preset, report in comparison.reports.items():
        print(f"{preset}: {report['text'].metrics.get('detections')} masks")
    for preset, error in comparison.errors.items():
        print(f"{preset}: failed: {error}")


if __name__ == "__main__":
    main()
