"""``textseg segment`` (files: COCO, counts, annotated images) and ``textseg count`` (a table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from textseg.cli._common import (
    CliError,
    add_pipeline_args,
    build_segmenter,
    check_images,
    vocabulary,
)

__all__ = ["add_parsers", "run_count", "run_segment"]


def add_parsers(subparsers: Any) -> None:
    """Add the ``segment`` and ``count`` commands to ``subparsers``."""
    segment = subparsers.add_parser("segment", help="segment named objects in images")
    segment.add_argument("images", nargs="+", metavar="IMAGE")
    add_pipeline_args(segment)
    segment.add_argument("--out", default="textseg-out", help="output folder")
    segment.add_argument(
        "--format",
        choices=("coco", "yolo", "png"),
        default="coco",
        help="extra export beside annotations.json (COCO, RLE)",
    )
    segment.set_defaults(func=run_segment)

    count = subparsers.add_parser("count", help="count named objects per image and class")
    count.add_argument("images", nargs="+", metavar="IMAGE")
    add_pipeline_args(count)
    count.add_argument("--json", action="store_true", help="print JSON")
    count.set_defaults(func=run_count)


def run_segment(args: argparse.Namespace) -> int:
    from textseg.io.annotate import save_annotated
    from textseg.io.coco import CocoWriter
    from textseg.io.counts import save_counts_csv, save_counts_json

    vocab = vocabulary(args)
    images = check_images(args.images)
    out = Path(args.out)
    segmenter = build_segmenter(args)
    writer = (
        CocoWriter(out / "annotations.json", vocab.names, resume=False)
        if (not (out / "annotations.json").exists())
        else CocoWriter(out / "annotations.json", vocab.names)
    )
    yolo = png_dir = None
    if args.format == "yolo":
        from textseg.io.yolo import YoloWriter

        yolo = YoloWriter(out / "yolo", vocab.names)
    elif args.format == "png":
        png_dir = out / "masks"
    counts: dict[str, dict[str, int]] = {}
    failures = 0
    with writer:
        for path in images:
            try:
                result = segmenter.segment(str(path), vocab)
            except (ValueError, FileNotFoundError) as err:
                failures += 1
                print(f"textseg: skipped {path}: {err}", file=sys.stderr)
                continue
            dets = result.detections
            h, w = result.image_size
            name = path.name
            if name in writer:  # same file name from another folder: keep both
                name = "__".join(path.resolve().parts[-2:])
            writer.add(name, w, h, dets)
            counts[name] = result.counts
            save_annotated(out / "annotated" / f"{path.stem}.jpg", str(path), dets)
            if yolo is not None:
                yolo.add(name, w, h, dets)
            if png_dir is not None:
                from textseg.io.png import save_index_png, save_instance_masks

                save_instance_masks(
                    png_dir, dets, stem=path.stem, classes=vocab.names, overwrite=True
                )
                save_index_png(png_dir / f"{path.stem}_index.png", dets)
            found = ", ".join(f"{k}: {v}" for k, v in result.counts.items())
            t = result.timings
            print(
                f"{path}: {found} ({t['total']:.0f} ms: encode {t['encode']:.0f}, prompt "
                f"{t['prompt']:.0f}, decode {t['decode']:.0f}, label {t['label']:.0f})"
            )
    if yolo is not None:
        yolo.close()
    save_counts_csv(out / "counts.csv", counts, names=vocab.names)
    save_counts_json(out / "counts.json", counts, names=vocab.names)
    print(f"wrote {out / 'annotations.json'}, {out / 'counts.csv'} and {out / 'annotated'}/")
    if failures == len(images):
        raise CliError(f"no image could be segmented ({failures} failed)")
    return 0


def run_count(args: argparse.Namespace) -> int:
    import json

    vocab = vocabulary(args)
    images = check_images(args.images)
    segmenter = build_segmenter(args)
    table: dict[str, dict[str, int]] = {}
    for path in images:
        table[str(path)] = segmenter.segment(str(path), vocab).counts
    if args.json:
        totals = {c: sum(row.get(c, 0) for row in table.values()) for c in vocab.names}
        print(json.dumps({"classes": vocab.names, "images": table, "totals": totals}, indent=2))
        return 0
    names = vocab.names + (["unknown"] if any("unknown" in r for r in table.values()) else [])
    width = max(len("image"), *(len(k) for k in table))
    print("image".ljust(width) + "".join(f"  {n:>{max(len(n), 5)}}" for n in names))
    for image, row in table.items():
        cells = "".join(f"  {row.get(n, 0):>{max(len(n), 5)}}" for n in names)
        print(image.ljust(width) + cells)
    totals = "".join(
        f"  {sum(r.get(n, 0) for r in table.values()):>{max(len(n), 5)}}" for n in names
    )
    print("total".ljust(width) + totals)
    return 0
