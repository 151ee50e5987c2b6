"""``textseg app DIR``: serve the annotation app (:func:`textseg.app.build_app`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from textseg.app.layout import ANNOTATION_FILE, EXPORT_DIR
from textseg.cli._common import add_model_args, build_segmenter

__all__ = ["add_parser", "run"]


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("folder", metavar="DIR", help="folder of images to annotate")
    parser.add_argument(
        "--classes",
        nargs="+",
        default=[],
        metavar="CLASS",
        help="class names (space- or comma-separated); more can be typed in the app",
    )
    add_model_args(parser)
    parser.add_argument(
        "--specialist",
        default=None,
        metavar="DIR",
        help="a specialist trained by `textseg train` makes the proposals (its classes are "
        "offered when --classes is not given)",
    )
    parser.add_argument(
        "--prefill",
        action="store_true",
        help="assisted labelling: each image opens with the pipeline's (or the specialist's) "
        "masks as proposals to accept, fix with clicks or reject; the COCO file records "
        "source proposal / corrected / manual",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="build the models with random weights (trials, speed checks)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="OUT",
        help=f"the app's output folder: the COCO file and the exports ({EXPORT_DIR}/); default "
        f"DIR itself. Claimed for `textseg app` (another command's folder is refused) and "
        f"resumed when opened again",
    )
    parser.add_argument(
        "--annotations",
        default=ANNOTATION_FILE,
        help=f"COCO file written in OUT (default {ANNOTATION_FILE})",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the app answers to in the Host header, besides 127.0.0.1, "
        "localhost, [::1] and --host (e.g. this machine's name with --host 0.0.0.0); requests "
        "for other names are refused, so a web page cannot reach the app through DNS "
        "rebinding (repeatable)",
    )
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``textseg app`` on the CLI's subparsers; the handler is :func:`run`."""
    parser = subparsers.add_parser(
        "app", help="web app: click to cut out objects, save COCO masks beside the images"
    )
    _configure(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Serve the app until interrupted; returns the exit code."""
    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port: expected 1..65535, got {args.port}")
    # No usage statistics sent from a local annotation tool.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from textseg.app.server import build_app, host_guard
    from textseg.pipelines import TextSegmenter

    if args.prefill and not (args.classes or args.specialist):
        raise ValueError("--prefill: expected --classes or --specialist to propose, got neither")
    if args.random_weights and args.sam_checkpoint:
        raise ValueError(
            f"--sam-checkpoint {args.sam_checkpoint}: --random-weights builds every model with "
            f"random weights and would not load it; drop --random-weights to load the checkpoint "
            f"or drop --sam-checkpoint"
        )
    out = Path(args.out) if args.out is not None else folder
    # Claimed before the models load: another command's folder is refused at once.
    from textseg.app.draft import parse_classes
    from textseg.app.store import claim_app_folder

    with claim_app_folder(out, args.annotations) as claimed:
        # SAM answers the clicks; a specialist, when given, only makes the proposals.
        segmenter = build_segmenter(args, pretrained=not args.random_weights, specialist=None)
        proposer = None
        classes = parse_classes(args.classes)
        if args.specialist:
            from textseg.train.specialist import specialist_classes

            proposer = TextSegmenter.from_preset(
                args.preset, device=args.device, tiny=args.tiny, specialist=args.specialist
            )
            classes = classes or specialist_classes(args.specialist)
        demo = build_app(
            folder,
            classes=classes,
            preset=segmenter,
            annotation_file=args.annotations,
            out=out,
            claim=claimed,
            prefill=args.prefill,
            proposer=proposer,
        )
        print(
            f"textseg app: {len(demo.session.images)} images in {folder}, "
            f"saving to {demo.session.path}",
            flush=True,
        )
        if args.host in ("0.0.0.0", "::") and not args.allow_host:
            print(
                "textseg app: answering only requests for this machine's local names; give "
                "--allow-host NAME for the name other machines reach it by",
                flush=True,
            )
        demo.queue(default_concurrency_limit=1).launch(
            server_name=args.host,
            server_port=args.port,
            share=False,
            inbrowser=False,
            ssr_mode=False,
            show_error=True,
            footer_links=[],
            app_kwargs=host_guard(args.host, args.allow_host),
        )
    return 0
