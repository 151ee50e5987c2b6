"""What the pipeline commands share: the pipeline options, the vocabulary and the segmenter.

Library errors are raised as they are and turned into one line by :func:`textseg.cli.main`;
:class:`CliError` is for mistakes only the command line can make.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CliError",
    "add_model_args",
    "add_pipeline_args",
    "build_segmenter",
    "check_images",
    "preset_options",
    "vocabulary",
]


class CliError(Exception):
    """An error to report as one line (the message) with a non-zero exit."""


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options that choose and build a preset's models (every pipeline command)."""
    p.add_argument(
        "--preset",
        default="grounded-sam",
        help="pipeline preset (default grounded-sam; see README 'Picking a preset')",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="build the preset with tiny random models: runs offline in seconds, masks are "
        "meaningless (trials, tests)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--dtype",
        default="float32",
        help="SAM precision: float32, bfloat16 or float16 (autocast on CUDA), or int8 (CPU: "
        "dynamic quantization of the image encoder; opt-in, masks close to float32's)",
    )
    p.add_argument("--sam", default=None, help="override the preset's SAM model (registry name)")
    p.add_argument(
        "--sam-checkpoint",
        default=None,
        metavar="FILE",
        help="fine-tuned SAM weights (e.g. MedSAM) of the --sam architecture, loaded strictly",
    )
    p.add_argument("--detector", default=None, help="override the preset's detector")
    p.add_argument("--clip", default=None, help="override the preset's CLIP model")
    p.add_argument("--box-threshold", type=float, default=None, help="detector score threshold")
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="N",
        help="refinement rounds: decode each prompt again with its previous mask (default 0)",
    )
    p.add_argument(
        "--text-adapter",
        default=None,
        metavar="PATH",
        help="trained CLIP -> SAM adapter for --preset clip-tokens (from train-text-prompt)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch seed under which the models are built: models without weights (--tiny) "
        "are the same every run (default 0)",
    )


def preset_options(args: argparse.Namespace) -> dict[str, Any]:
    """``TextSegmenter.from_preset`` keyword arguments from :func:`add_model_args` options
    (without the device, which some commands choose themselves)."""
    options: dict[str, Any] = {
        "tiny": args.tiny,
        "dtype": args.dtype,
        "box_threshold": args.box_threshold,
    }
    for key in ("sam", "sam_checkpoint", "detector", "clip"):
        if getattr(args, key, None):
            options[key] = getattr(args, key)
    if getattr(args, "refine", 0):
        options["refine"] = args.refine
    if getattr(args, "min_area", 0):
        options["min_area"] = args.min_area
    if getattr(args, "text_adapter", None):
        options["text_adapter_checkpoint"] = args.text_adapter
    if getattr(args, "specialist", None):
        options["specialist"] = args.specialist
    if getattr(args, "exemplar", None):
        from textseg.prompters.sam3 import Exemplar

        options["exemplars"] = [Exemplar.parse(text) for text in args.exemplar]
    return options


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The model options plus the vocabulary options (segment, count, label)."""
    add_model_args(p)
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
    p.add_argument("--min-area", type=int, default=0, help="drop masks smaller than this (px)")
    p.add_argument(
        "--exemplar",
        action="append",
        default=[],
        metavar="[neg:]X0,Y0,X1,Y1[:CLASS]",
        help="SAM 3 presets: a box on the image (pixels) meaning 'more like this' CLASS, or "
        "with neg: 'not this' (repeatable; CLASS may be left out with one class)",
    )
    p.add_argument(
        "--specialist",
        default=None,
        metavar="DIR",
        help="a specialist trained by `textseg train` replaces the preset's models (no -c: "
        "all its classes)",
    )


def vocabulary(args: argparse.Namespace, classes: Sequence[str] | None = None) -> Any:
    """The vocabulary of ``-c``/``--synonym``/``--negative`` (``classes`` replaces ``-c``)."""
    from textseg.vocab import Vocabulary

    classes = list(classes) if classes is not None else args.classes
    if not classes and getattr(args, "specialist", None):
        from textseg.specialists import specialist_classes

        classes = specialist_classes(args.specialist)
    if not classes:
        raise CliError("no classes given: add -c CLASS (repeat for several)")
    synonyms: dict[str, list[str]] = {}
    for item in args.synonym:
        cls, sep, prompt = item.partition("=")
        if not sep or not cls.strip() or not prompt.strip():
            raise CliError(f"--synonym expects CLASS=PROMPT, got {item!r}")
        synonyms.setdefault(cls.strip(), []).append(prompt.strip())
    return Vocabulary(classes, synonyms=synonyms or None, negatives=args.negative)


def build_segmenter(args: argparse.Namespace, **overrides: Any) -> Any:
    """The preset of the command line, built under ``--seed`` (the global RNG is restored);
    ``overrides`` replace ``TextSegmenter.from_preset`` keyword arguments."""
    import torch

    from textseg.pipelines import TextSegmenter

    options = {**preset_options(args), **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return TextSegmenter.from_preset(args.preset, device=args.device, **options)


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
