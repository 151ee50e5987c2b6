"""``textseg eval DATASET --preset NAME --out DIR``: the evaluation command
(:func:`textseg.eval.evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from textseg.cli._common import add_model_args, arg_type, preset_options
from textseg.eval.protocol_names import PROTOCOLS, parse_protocols
from textseg.validators import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a preset on a COCO-format dataset (mIoU, mask AP, labels, counts)",
        description=(
            "Evaluate a pipeline preset on a COCO-format dataset with five protocols: box "
            "(SAM with ground-truth boxes, mIoU), point (one click, mIoU), text (the pipeline "
            "with the class names, mask AP), label (the labeler naming ground-truth masks, "
            "accuracy) and count (per-image counts, MAE). Writes report.json, report.md, "
            "per_class.png and text_results.json to --out."
        ),
    )
    p.add_argument(
        "dataset",
        metavar="DATASET",
        help="folder with annotations.json and images/ (or a COCO JSON file)",
    )
    p.add_argument(
        "--annotations", default=None, help="the COCO JSON, if not DATASET/annotations.json"
    )
    p.add_argument("--images", default=None, help="the image folder, if not DATASET/images")
    add_model_args(p)
    p.add_argument(
        "--protocols",
        default=None,
        help=f"comma-separated subset of {','.join(PROTOCOLS)} (default all); video on a "
        "DAVIS-layout DATASET (J&F from first-frame masks, counts and ID switches from "
        "meta.json categories, see textseg.eval.video); or specialist: "
        "SAM with the ground-truth boxes vs specialists trained on the ground truth and on "
        "textseg's labels, on held-out images (the default with --specialist)",
    )
    p.add_argument(
        "--specialist",
        dest="specialist_dir",
        default=None,
        metavar="DIR",
        help="specialist protocol: a specialist from `textseg train` on textseg's labels (else "
        "the preset labels the training images and one is trained here)",
    )
    p.add_argument(
        "--arch",
        default="segformer-b0",
        help="specialist protocol: architecture trained here (a given --specialist names its own)",
    )
    p.add_argument(
        "--epochs",
        type=arg_type(positive_int),
        default=20,
        help="specialist protocol: training epochs",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.25,
        help="specialist protocol: share of the images held out (default 0.25)",
    )
    p.add_argument(
        "--max-images",
        type=arg_type(positive_int),
        default=None,
        metavar="N",
        help="evaluate only the first N images",
    )
    p.add_argument("--out", default="textseg-eval", help="output folder (default textseg-eval)")
    p.add_argument("--no-plot", action="store_true", help="do not write per_class.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``textseg eval``; prints one line per protocol and the files written.

    Raises:
        FileNotFoundError: Dataset, annotations or images missing.
        ValueError: Unknown protocol or preset, or a dataset with nothing to evaluate.
    """
    from textseg.io.folder import claim_output

    # The output-folder contract: eval owns its reports (a re-run replaces them); another
    # command's folder is refused in one line, and two runs never write one folder at once.
    presets = [p.strip() for p in args.preset.split(",")] if "," in args.preset else []
    owned = [*OWNED, *presets]
    # The dataset is read before the folder is claimed: a run refused for its input leaves no
    # folder behind.
    dataset = None
    if not (args.protocols and "video" in args.protocols.split(",")):
        from textseg.eval.dataset import load_dataset

        dataset = load_dataset(
            args.dataset,
            annotations=args.annotations,
            images=args.images,
            max_images=args.max_images,
        )
    with claim_output(args.out, "eval", owned=owned, mode="overwrite") as folder:
        code = _run(args, dataset)
        folder.update(complete=True)
    return code


#: What ``textseg eval`` writes in its output folder (and one folder per compared preset;
#: ``specialist/`` is a training run's own folder, claimed by that run).
OWNED = (
    "report.json",
    "report.md",
    "text_results.json",
    "per_class.png",
    "compare.json",
    "compare.md",
    "compare.png",
    "video_report.json",
    "video_report.md",
)


def _run(args: argparse.Namespace, dataset: Any) -> int:
    import torch

    from textseg.pipelines import TextSegmenter
    from textseg.pipelines.presets import get_preset

    if args.protocols and "video" in args.protocols.split(","):
        from textseg.cli.track import run_video_eval

        return run_video_eval(args)
    if "," in args.preset:  # several presets: one comparison report
        return _compare(args, dataset)
    default = "specialist" if args.specialist_dir else ",".join(PROTOCOLS)
    protocols = parse_protocols(args.protocols or default)
    from textseg.eval.protocols import evaluate

    # Random-initialised components (tiny-test, a --clip without weights) are drawn from the
    # seed, so two runs report the same numbers; fork_rng leaves the global RNG as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        segmenter = TextSegmenter.from_preset(
            args.preset, device=args.device, **preset_options(args)
        )
        report = evaluate(
            dataset,
            segmenter,
            protocols,
            labeler=args.clip,
            out_dir=args.out,
            plot=not args.no_plot,
            name=args.preset,
            progress=False if args.no_progress else None,
            tiny=args.tiny or get_preset(args.preset).tiny,
            specialist_options={
                "specialist": args.specialist_dir,
                "arch": args.arch,
                "epochs": args.epochs,
                "val_fraction": args.val_fraction,
                "seed": args.seed,
                "work_dir": Path(args.out) / "specialist",
            },
        )
    print(
        f"{report.dataset}: {report.images} images, {len(report.classes)} classes, "
        f"{report.timings['wall_s']:.1f} s"
    )
    for line in [*report.summary(), *report.timing_lines()]:
        print(f"  {line}")
    if "specialist" in report.protocols:  # the three rows: mIoU, label/train time, images/s
        for note in report["specialist"].notes:
            print(f"  {note}")
    written = ["report.json", "report.md"]
    if "text" in report.protocols:
        written.append("text_results.json")
    if not args.no_plot:
        written.append("per_class.png")
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def _compare(args: argparse.Namespace, dataset: Any) -> int:
    """``--preset a,b,c``: every preset on the same images (:func:`textseg.eval.compare.
    compare_presets`); ``--refine N`` adds the box protocol with N refinement rounds. Exits 1
    when a preset could not be built or run (the others are still reported)."""
    from textseg.eval.compare import compare_presets

    options = preset_options(args)
    refine = options.pop("refine", 0)
    comparison = compare_presets(
        dataset,
        args.preset,
        args.protocols or ",".join(PROTOCOLS),
        refine=refine,
        labeler=args.clip,
        out_dir=args.out,
        plot=not args.no_plot,
        progress=False if args.no_progress else None,
        seed=args.seed,
        device=args.device,
        **options,
    )
    print(f"{comparison.dataset}: {comparison.images} images, {len(comparison.classes)} classes")
    for line in comparison.lines():
        print(f"  {line}")
    written = ["compare.json", "compare.md", *([] if args.no_plot else ["compare.png"])]
    print(f"wrote {', '.join(written)} and one report per preset to {args.out}")
    return 1 if comparison.errors else 0
