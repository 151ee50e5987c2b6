"""What the pipeline commands share: the pipeline options, the vocabulary and the segmenter.

Library errors are raised as they are and turned into one line by :func:`textseg.cli.main`;
:class:`CliError` is for mistakes only the command line can make.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CliError", "add_pipeline_args", "build_segmenter", "check_images", "vocabulary"]


class CliError(Exception):
    """An error to report as one line (the message) with a non-zero exit."""


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="CLASS",
        help="a class name to find (repeat for several)",
    )
    p.add_argument(
        "--preset",
        default="grounded-sam",
        help="pipeline preset (default grounded-sam; tiny-test runs offline)",
    )
    p.add_argument(
        "--negative",
        action="append",
        default=[],
        metavar="PROMPT",
        help="suppress matches of this prompt (repeatable)",
    )
    p.add_argument(
        "--synonym",
        action="append",
        default=[],
        metavar="CLASS=PROMPT",
        help="another prompt for a class (repeatable)",
    )
    p.add_argument("--box-threshold", type=float, default=None, help="detector score threshold")
    p.add_argument("--min-area", type=int, default=0, help="drop masks smaller than this (px)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (SAM)")
    p.add_argument("--sam", default=None, help="override the preset's SAM model")
    p.add_argument("--detector", default=None, help="override the preset's detector")
    p.add_argument(
        "--text-adapter",
        default=None,
        metavar="PATH",
        help="trained CLIP -> SAM adapter for --preset clip-tokens (from train-text-prompt)",
    )


def vocabulary(args: argparse.Namespace) -> Any:
    from textseg.vocab import Vocabulary

    if not args.classes:
        raise CliError("no classes given: add -c CLASS (repeat for several)")
    synonyms: dict[str, list[str]] = {}
    for item in args.synonym:
        cls, sep, prompt = item.partition("=")
        if not sep or not cls.strip() or not prompt.strip():
            raise CliError(f"--synonym expects CLASS=PROMPT, got {item!r}")
        synonyms.setdefault(cls.strip(), []).append(prompt.strip())
    return Vocabulary(args.classes, synonyms=synonyms or None, negatives=args.negative)


def build_segmenter(args: argparse.Namespace) -> Any:
    from textseg.pipelines import TextSegmenter

    overrides = {k: v for k, v in (("sam", args.sam), ("detector", args.detector)) if v}
    if args.text_adapter:
        overrides["text_adapter_checkpoint"] = args.text_adapter
    return TextSegmenter.from_preset(
        args.preset,
        device=args.device,
        dtype=args.dtype,
        box_threshold=args.box_threshold,
        min_area=args.min_area,
        **overrides,
    )


def check_images(paths: Sequence[str]) -> list[Path]:
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise CliError(f"image not found: {path}")
        if path.is_dir():
            raise CliError(f"{path} is a folder; use `textseg label {path} ...` for folders")
        out.append(path)
    return out
