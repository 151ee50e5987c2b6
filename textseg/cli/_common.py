"""What the pipeline commands share: the pipeline options, the vocabulary and the segmenter.

Library errors are raised as they are and turned into one line by :func:`textseg.cli.main`;
:class:`CliError` is for mistakes only the command line can make.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textseg.validators import non_negative_int

__all__ = [
    "CliError",
    "add_model_args",
    "add_pipeline_args",
    "arg_type",
    "build_segmenter",
    "check_images",
    "preset_options",
    "segmenter_spec",
    "vocabulary",
]


class CliError(Exception):
    """An error to report as one line (the message) with a non-zero exit."""


def arg_type(check: Callable[[Any, str], Any], convert: Callable[[str], Any] = int) -> Any:
    """An argparse ``type=`` from a :mod:`textseg.validators` check: the text is converted
    (``int``, ``float``), then checked; a bad value is argparse's one-line usage error."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if convert is int else 'a number'}, got {text!r}"
            ) from None
        try:
            return check(value, "value")
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value: ")) from None

    parse.__name__ = getattr(check, "__name__", "value").replace("_", " ")
    return parse


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
    p.add_argument(
        "--min-area",
        type=arg_type(non_negative_int),
        default=0,
        help="drop masks smaller than this (px, an integer >= 0)",
    )
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


def vocabulary(args: argparse.Namespace, ground_truth: Any = None) -> Any:
    """The vocabulary of ``-c``/``--synonym``/``--negative``.

    Without ``-c``: the classes of ``ground_truth`` (a :class:`textseg.io.coco.GroundTruth`),
    else of ``--specialist``; with both, the ground truth's classes the specialist knows (the
    others are named on stderr as dropped: the specialist cannot find them).

    Raises:
        CliError: No class at all, none shared by the ground truth and the specialist, or a
            bad ``--synonym``.
    """
    import sys

    from textseg.vocab import Vocabulary, normalize_name

    classes = list(args.classes)
    if classes and ground_truth is not None:
        classes = ground_truth.classes(classes)[0]  # each must be one of its categories
    if not classes:
        specialist = getattr(args, "specialist", None)
        known = None
        if specialist:
            from textseg.specialists import specialist_classes

            known = specialist_classes(specialist)
        if ground_truth is not None:
            classes = list(ground_truth.categories)
            if known is not None:
                folded = {normalize_name(k).casefold() for k in known}
                kept = [c for c in classes if normalize_name(c).casefold() in folded]
                dropped = [c for c in classes if c not in kept]
                if not kept:
                    raise CliError(
                        f"the specialist {specialist} knows none of the classes of "
                        f"{ground_truth.path} (it knows {known}); pass -c CLASS"
                    )
                if dropped:
                    print(
                        f"textseg: {len(dropped)} classes of {ground_truth.path} dropped, the "
                        f"specialist does not know them: {', '.join(dropped)}",
                        file=sys.stderr,
                    )
                classes = kept
        elif known is not None:
            classes = known
    if not classes:
        raise CliError("no classes given: add -c CLASS (repeat for several)")
    synonyms: dict[str, list[str]] = {}
    for item in args.synonym:
        cls, sep, prompt = item.partition("=")
        if not sep or not cls.strip() or not prompt.strip():
            raise CliError(f"--synonym expects CLASS=PROMPT, got {item!r}")
        synonyms.setdefault(cls.strip(), []).append(prompt.strip())
    return Vocabulary(classes, synonyms=synonyms or None, negatives=args.negative)


def segmenter_spec(args: argparse.Namespace, *, device: str | None = None) -> Any:
    """How the runner builds the command line's preset (under ``--seed``), as
    :class:`textseg.pipelines.engines.SegmenterSpec`; ``device`` replaces ``--device``."""
    from textseg.pipelines.engines import SegmenterSpec

    return SegmenterSpec(args.preset, preset_options(args), None, args.seed, device or args.device)


def build_segmenter(args: argparse.Namespace, **overrides: Any) -> Any:
    """The preset of the command line, built under ``--seed`` (the global RNG is restored);
    ``overrides`` replace ``TextSegmenter.from_preset`` keyword arguments."""
    from dataclasses import replace

    spec = segmenter_spec(args)
    return replace(spec, options={**spec.options, **overrides}).build()


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
