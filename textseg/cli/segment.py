"""``textseg segment`` (files: COCO, results, counts, annotated images, more formats) and
``textseg count`` (a table).

``segment`` runs :mod:`textseg.pipelines.runner` (the runner of ``textseg label`` too) on its
files. What it writes in ``--out`` (owned through :func:`textseg.io.folder.claim_output`; a
second run into the same folder must say ``--overwrite`` or ``--append``, and two runs at the
same time are refused):

- ``annotations.json``: COCO instances (RLE masks, or polygons with ``--format
  coco-polygons``); ``file_name`` is each image's path relative to the inputs' common folder
  (distinct, existing paths), or the ground truth's with ``--coco GT.json``;
- ``results.json``: the COCO results list for ``COCO(GT).loadRes``; ``counts.csv`` /
  ``counts.json``; ``errors.csv``; ``annotated/<file_name>``;
- the derived formats of ``--format`` (see :mod:`textseg.io.export`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from textseg.cli._common import (
    CliError,
    add_pipeline_args,
    build_segmenter,
    check_images,
    segmenter_spec,
    vocabulary,
)

__all__ = [
    "add_output_args",
    "add_parsers",
    "export_options",
    "ground_truth",
    "run_count",
    "run_segment",
]


def add_output_args(p: argparse.ArgumentParser) -> None:
    """The output options shared by ``segment`` and ``label``."""
    from textseg.io.formats import FORMATS

    p.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        default=None,
        help="what to write besides annotations.json (COCO RLE) and results.json; repeatable: "
        "coco-polygons (annotations.json with polygons), yolo (ultralytics YOLO-seg dataset), "
        "png (instance and class-index PNGs), labelstudio (tasks with brush masks), cvat "
        "(COCO in datumaro's layout)",
    )
    p.add_argument(
        "--coco",
        default=None,
        metavar="GT.json",
        help="your COCO file: classes, category ids and image ids come from it, so "
        "results.json scores against it with pycocotools",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="YOLO export: fraction of images in the val split (default 0: val names train)",
    )
    p.add_argument(
        "--link-images",
        action="store_true",
        help="hard-link the images into yolo/ and cvat/ instead of copying them",
    )
    p.add_argument(
        "--yolo-trace",
        choices=("centres", "edges"),
        default="centres",
        help="YOLO polygons through pixel centres (default: what ultralytics fills back to the "
        "mask) or along pixel edges (exact for pycocotools)",
    )
    # Label Studio export: where its tasks say the images are.
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--labelstudio-root",
        default=None,
        metavar="DIR",
        help="Label Studio export: the LOCAL_FILES_DOCUMENT_ROOT the images are under "
        "(default: the images' folder's parent; the tasks name the folder)",
    )
    where.add_argument(
        "--image-url-prefix",
        default=None,
        metavar="URL",
        help="Label Studio export: the tasks' images are URL + file name (served over HTTP) "
        "instead of Label Studio's local files",
    )


def add_parsers(subparsers: Any) -> None:
    """Add the ``segment`` and ``count`` commands to ``subparsers``."""
    segment = subparsers.add_parser("segment", help="segment named objects in images")
    segment.add_argument("images", nargs="+", metavar="IMAGE")
    add_pipeline_args(segment)
    segment.add_argument("--out", default="textseg-out", help="output folder")
    add_output_args(segment)
    mode = segment.add_mutually_exclusive_group()
    mode.add_argument(
        "--overwrite", action="store_true", help="replace the results already in --out"
    )
    mode.add_argument(
        "--append",
        action="store_true",
        help="add to the results already in --out (an image segmented again is replaced)",
    )
    segment.set_defaults(func=run_segment)

    count = subparsers.add_parser("count", help="count named objects per image and class")
    count.add_argument("images", nargs="+", metavar="IMAGE")
    add_pipeline_args(count)
    count.add_argument("--json", action="store_true", help="print JSON")
    count.set_defaults(func=run_count)


def export_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`textseg.io.export.write_exports` options of :func:`add_output_args`."""
    return {
        "val_fraction": args.val_fraction,
        "link_images": args.link_images,
        "yolo_trace": args.yolo_trace,
        "labelstudio_root": args.labelstudio_root,
        "image_url_prefix": args.image_url_prefix,
    }


def ground_truth(args: argparse.Namespace) -> Any:
    """The ``--coco`` file as a :class:`textseg.io.coco.GroundTruth`, or None."""
    from textseg.io.coco import GroundTruth

    return GroundTruth(args.coco) if args.coco else None


# ---------------------------------------------------------------------- commands
def run_segment(args: argparse.Namespace) -> int:
    """``textseg segment``: the runner (:mod:`textseg.pipelines.runner`) on the given files."""
    from textseg.io.formats import OWNED
    from textseg.pipelines import runner

    formats = args.format or ["coco"]
    gt = ground_truth(args)
    vocab = vocabulary(args, ground_truth=gt)
    images = check_images(args.images)
    plan = runner.plan_files(images, vocab, ground_truth=args.coco)
    for name, reason in plan.failed.items():
        print(f"textseg: skipped {name}: {reason}", file=sys.stderr)
    write = runner.WriteOptions(
        command="segment",
        mode="overwrite" if args.overwrite else "append" if args.append else "new",
        redo=True,
        annotate=True,
        segmentation="polygon" if "coco-polygons" in formats else "rle",
        formats=formats,
        export_options=export_options(args),
    )
    report = runner.run_plan(
        plan, args.out, segmenter_spec(args), write=write, on_outcome=_print_outcome
    )
    extra = [f for f in formats if f not in ("coco", "coco-polygons")]
    print(
        f"wrote {report.annotations}, results.json, counts.csv, annotated/"
        + "".join(f", {OWNED[f][0]}/" for f in extra)
    )
    if report.labelled == 0:
        raise CliError(f"no image could be segmented ({len(report.failed)} failed; see errors.csv)")
    return 0


def _print_outcome(item: Any, outcome: Any) -> None:
    if isinstance(outcome, str):
        print(f"textseg: skipped {item.path}: {outcome}", file=sys.stderr)
        return
    found = ", ".join(f"{k}: {v}" for k, v in outcome.counts.items())
    t = outcome.timings
    print(
        f"{item.path}: {found} ({t['total']:.0f} ms: encode {t['encode']:.0f}, prompt "
        f"{t['prompt']:.0f}, decode {t['decode']:.0f}, label {t['label']:.0f})"
    )


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_count(args: argparse.Namespace) -> int:
    """``textseg count``: a per-image, per-class table (or JSON); a bad image is reported and
    skipped, the others are counted."""
    vocab = vocabulary(args)
    images = check_images(args.images)
    segmenter = build_segmenter(args)
    table: dict[str, dict[str, int]] = {}
    failed: dict[str, str] = {}
    for path in images:
        try:
            table[str(path)] = segmenter.segment(str(path), vocab).counts
        except Exception as err:  # one image's failure must not lose the others
            if os.environ.get("TEXTSEG_DEBUG"):
                raise
            failed[str(path)] = _one_line(err)
            print(f"textseg: skipped {path}: {failed[str(path)]}", file=sys.stderr)
    if not table:
        raise CliError(f"no image could be counted ({len(failed)} failed)")
    if args.json:
        totals = {c: sum(row.get(c, 0) for row in table.values()) for c in vocab.names}
        payload = {"classes": vocab.names, "images": table, "totals": totals, "errors": failed}
        print(json.dumps(payload, indent=2, allow_nan=False))
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
