"""``textseg label DIR -c CLASS ... --out OUT``: label a folder
(:func:`textseg.pipelines.labeling.label_folder`).

The pipeline options (``--preset``, ``--device``, ``--negative``, ``--synonym``...) are the same
as for ``textseg segment``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from textseg.cli._common import add_pipeline_args, arg_type, preset_options, vocabulary
from textseg.cli.segment import add_output_args, export_options, ground_truth
from textseg.validators import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``label`` command to ``subparsers`` (from ``parser.add_subparsers()``).

    Returns:
        The command's parser (its ``func`` default is :func:`run`).
    """
    parser = subparsers.add_parser(
        "label",
        help="label every image of a folder (COCO RLE + counts CSV), resumable",
        description=(
            "Label every image of DIR (recursively) into OUT/annotations.json (COCO, RLE "
            "masks), OUT/counts.csv and OUT/errors.csv. Run again with the same --out to "
            "resume an interrupted run."
        ),
    )
    parser.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    add_pipeline_args(parser)
    parser.add_argument("--out", required=True, help="output folder (resumes when it exists)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete what an earlier `textseg label` wrote in --out and label from scratch",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: a Ray Data actor pool (pip install 'textseg[ray]')",
    )
    parser.add_argument(
        "--workers",
        type=arg_type(positive_int),
        default=None,
        metavar="N",
        help="Ray actors, one model copy each (default: one per GPU, else per CPU)",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        metavar="G",
        help="GPUs per Ray actor (default 1 when the cluster has GPUs, else 0)",
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0,
        metavar="C",
        help="CPUs per Ray actor, also its torch threads (default 1)",
    )
    parser.add_argument(
        "--batch-size", type=arg_type(positive_int), default=1, help="images per segmenter call"
    )
    parser.add_argument(
        "--save-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between checkpoints of the output files (0: after every image)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_output_args(parser)
    parser.add_argument(
        "--review-queue",
        action="store_true",
        help="also write OUT/review_queue.csv: the images ranked by how unsure the pipeline was "
        "(low SAM IoU, low CLIP margin, detector/labeler disagreement), worst first",
    )
    # None: label_folder picks cuda for Ray actors with GPUs, else cpu.
    parser.set_defaults(func=run, device=None)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``textseg label`` with parsed arguments; returns the exit code.

    Raises:
        FileNotFoundError / NotADirectoryError: DIR is missing or a file.
        ValueError: Bad options, or no image of DIR could be read.
    """
    from textseg.pipelines.labeling import label_folder

    formats = args.format or ["coco"]
    gt = ground_truth(args)
    report = label_folder(
        args.folder,
        vocabulary(args, ground_truth=gt),
        args.out,
        preset=args.preset,
        preset_kwargs=preset_options(args),
        engine=args.engine,
        batch_size=args.batch_size,
        num_workers=args.workers,
        num_gpus_per_worker=args.gpus_per_worker,
        num_cpus_per_worker=args.cpus_per_worker,
        device=args.device,
        save_every=args.save_every,
        progress=not args.quiet,
        seed=args.seed,
        ground_truth=args.coco,
        segmentation="polygon" if "coco-polygons" in formats else "rle",
        mode="overwrite" if args.overwrite else "resume",
        formats=formats,
        export_options=export_options(args),
    )
    for name, reason in report.failed.items():
        print(f"textseg: skipped {name}: {reason}", file=sys.stderr)
    print(report)
    if args.review_queue:
        from textseg.train.review import write_review_queue

        print(f"wrote {write_review_queue(report.annotations)} (review the first rows first)")
    if report.failed and report.labelled + report.resumed == 0:
        # Nothing labelled in this run or an earlier one: the job failed. Images that stay
        # unreadable beside labelled ones are reported (errors.csv), not a failed job.
        raise ValueError(
            f"no image of {args.folder} could be labelled ({len(report.failed)} failed); see "
            f"{report.errors}"
        )
    return 0
