"""The ``textseg`` command line.

Every library error becomes one line on stderr and a non-zero exit (1 for runtime errors, 2 for
usage errors), never a traceback; ``TEXTSEG_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

_EXIT_ERROR = 1


class CliError(Exception):
    """An error to report as one line (the message) with a non-zero exit."""


def _cmd_models(args: argparse.Namespace) -> int:
    from textseg._hub import locate_weights
    from textseg._registry import get_model_cfg, list_models

    rows = []
    for name in list_models(args.task):
        cfg = get_model_cfg(name)
        loc = locate_weights(cfg)
        source = cfg.weights.source if cfg.weights else "(random init, no weights)"
        where = {
            "random-init": "built in memory",
            "TEXTSEG_WEIGHTS": f"TEXTSEG_WEIGHTS: {loc.path}",
            "hub-cache": f"cache: {loc.path}",
            "download": "not present: downloads on first use",
        }[loc.source]
        license_ = cfg.weights.license if cfg.weights else "-"
        rows.append((name, cfg.task, "yes" if loc.present else "no", license_, source, where))
    if args.json:
        import json

        keys = ("name", "task", "present", "license", "source", "resolves_from")
        print(json.dumps([dict(zip(keys, r)) for r in rows], indent=2))
        return 0
    header = ("name", "task", "present", "license", "source", "resolves from")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:4], widths)]
        print("  ".join([*cells, row[4], "|", row[5]]))
    return 0


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
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


def _vocabulary(args: argparse.Namespace) -> Any:
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


def _segmenter(args: argparse.Namespace) -> Any:
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


def _check_images(paths: Sequence[str]) -> list[Path]:
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise CliError(f"image not found: {path}")
        if path.is_dir():
            raise CliError(f"{path} is a folder; use `textseg label {path} ...` for folders")
        out.append(path)
    return out


def _cmd_segment(args: argparse.Namespace) -> int:
    from textseg.io.annotate import save_annotated
    from textseg.io.coco import CocoWriter
    from textseg.io.counts import save_counts_csv, save_counts_json

    vocab = _vocabulary(args)
    images = _check_images(args.images)
    out = Path(args.out)
    segmenter = _segmenter(args)
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


def _cmd_count(args: argparse.Namespace) -> int:
    import json

    vocab = _vocabulary(args)
    images = _check_images(args.images)
    segmenter = _segmenter(args)
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


Command = Callable[[argparse.Namespace], int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textseg",
        description="Open-vocabulary text-to-mask segmentation: name it, SAM cuts it out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = sub.add_parser("models", help="list registered models and where their weights are")
    models.add_argument("--task", help="only this task (sam, detector, clip, text-prompt)")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=_cmd_models)

    segment = sub.add_parser("segment", help="segment named objects in images")
    segment.add_argument("images", nargs="+", metavar="IMAGE")
    _add_pipeline_args(segment)
    segment.add_argument("--out", default="textseg-out", help="output folder")
    segment.add_argument(
        "--format",
        choices=("coco", "yolo", "png"),
        default="coco",
        help="extra export beside annotations.json (COCO, RLE)",
    )
    segment.set_defaults(func=_cmd_segment)

    count = sub.add_parser("count", help="count named objects per image and class")
    count.add_argument("images", nargs="+", metavar="IMAGE")
    _add_pipeline_args(count)
    count.add_argument("--json", action="store_true", help="print JSON")
    count.set_defaults(func=_cmd_count)

    # The heavier commands live beside the code they drive; each registers its own parser.
    from textseg.app.server import add_parser as add_app
    from textseg.eval.cli import add_parser as add_eval
    from textseg.pipelines.labeling_cli import add_parser as add_label
    from textseg.prompters.train_text_prompt import add_train_parser as add_train

    add_label(sub)
    add_eval(sub)
    add_app(sub)
    add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``textseg`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    if args.command == "train-text-prompt":  # long runs: show the loss as it goes
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return func(args)
    except KeyboardInterrupt:
        print("textseg: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the CLI's contract: one line, no traceback
        if os.environ.get("TEXTSEG_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"textseg: error: {message}", file=sys.stderr)
        return _EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
