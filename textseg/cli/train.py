"""Training commands.

- ``textseg train DATASET --arch ARCH --out DIR``: a specialist on a COCO dataset
  (:func:`textseg.train.specialist.train_specialist`);
- ``textseg train-text-prompt``: the CLIP -> SAM text-prompt adapter
  (:func:`textseg.train.text_prompt.train_text_prompt`).
"""

from __future__ import annotations

import argparse
from typing import Any

from textseg.cli._common import arg_type
from textseg.validators import positive_int, positive_number, unit_interval

__all__ = ["add_parser", "run", "run_specialist"]


def _input_size(value: int, name: str) -> int:
    from textseg.train.specialist import check_input_size

    return check_input_size(value)  # type: ignore[return-value]


_POSITIVE = arg_type(positive_int)
_RATE = arg_type(positive_number, float)

_ARCH_HELP = (
    "architecture (textseg models --task specialist): segformer-b0 (default) .. segformer-b5 "
    "(semantic; transformers, Apache-2.0 code; NVIDIA's MiT backbone weights are research/"
    "non-commercial), maskrcnn-r50-fpn (instance; torchvision, BSD-3-Clause), yolo11n-seg / "
    "yolo11s-seg / yolo11m-seg (instance; needs pip install 'textseg[yolo]': ultralytics is "
    "AGPL-3.0, which binds what you distribute with it)"
)


def _add_specialist_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a specialist (SegFormer, Mask R-CNN, YOLO-seg) on a COCO dataset",
        description=(
            "Train a small fast specialist on a COCO dataset: textseg label's output, the "
            "annotation app's file or any COCO folder. Writes OUT/model.safetensors (the best "
            "epoch), OUT/config.json and OUT/checkpoints/last.pt (every epoch; --resume "
            "continues a killed run). Run it with --specialist OUT on segment, count and label, "
            "or compare it with SAM in textseg eval --specialist OUT. YOLO-seg uses ultralytics "
            "(AGPL-3.0), an optional extra."
        ),
    )
    parser.add_argument(
        "dataset",
        metavar="DATASET",
        help="folder with annotations.json (e.g. textseg label's --out) or a COCO JSON file",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--arch", default="segformer-b0", help=_ARCH_HELP)
    parser.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="folder the file names are relative to (default DATASET/images, else DATASET); "
        "for textseg label DIR --out L, give DIR",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="train the architecture's tiny random-init variant: offline, seconds (trials, tests)",
    )
    parser.add_argument("--epochs", type=_POSITIVE, default=20, help="maximum epochs (default 20)")
    parser.add_argument(
        "--val-fraction",
        type=arg_type(lambda v, n: unit_interval(v, n, open_right=True), float),
        default=0.2,
        help="share of the images held out for validation and early stopping (default 0.2)",
    )
    parser.add_argument("--val", default=None, metavar="DATASET", help="a separate validation set")
    parser.add_argument("--val-images", default=None, metavar="DIR", help="its image folder")
    parser.add_argument(
        "--patience",
        type=_POSITIVE,
        default=5,
        help="stop after this many epochs without a better validation mIoU (default 5)",
    )
    parser.add_argument("--batch-size", type=_POSITIVE, default=None, help="images per step")
    parser.add_argument("--lr", type=_RATE, default=None, help="AdamW learning rate")
    parser.add_argument(
        "--input-size",
        type=arg_type(_input_size),
        default=None,
        help="input side (SegFormer) or short side, 32 to 4096 (default per architecture)",
    )
    parser.add_argument(
        "--no-pretrained",
        action="store_true",
        help="start from random weights instead of the registry's pretrained backbone",
    )
    parser.add_argument(
        "--backbone-checkpoint", default=None, metavar="FILE", help="backbone weights file"
    )
    parser.add_argument(
        "--source-weight",
        action="append",
        default=[],
        metavar="SOURCE=W",
        help="loss weight of annotations by provenance (their 'source' key): proposal, "
        "corrected, manual, unreviewed (no source key); 0 leaves them out (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_specialist)
    return parser


def run_specialist(args: argparse.Namespace) -> int:
    """Run ``textseg train``; prints the :class:`TrainReport`. Returns 0."""
    from textseg.train.specialist import train_specialist

    report = train_specialist(
        args.dataset,
        args.out,
        arch=args.arch,
        images=args.images,
        val=args.val,
        val_images=args.val_images,
        val_fraction=args.val_fraction,
        tiny=args.tiny,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        pretrained=not args.no_pretrained,
        backbone_checkpoint=args.backbone_checkpoint,
        input_size=args.input_size,
        source_weights=args.source_weight or None,
        resume=args.resume,
        progress=False if args.quiet else None,
    )
    print(report)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` and ``train-text-prompt`` commands to an ``argparse`` subparsers
    object.

    Returns:
        The ``train-text-prompt`` parser (its default ``func`` is :func:`run`).
    """
    _add_specialist_parser(subparsers)
    parser = subparsers.add_parser(
        "train-text-prompt",
        help="train the EXPERIMENTAL CLIP -> SAM text-prompt adapter",
        description=(
            "Train a text-prompt adapter as in the SAM paper: masked-crop CLIP image embeddings "
            "as prompts, SAM frozen. Writes OUT/model.safetensors and OUT/config.json."
        ),
    )
    parser.add_argument("--sam", default="sam-vit-b", help="SAM registry name (default sam-vit-b)")
    parser.add_argument(
        "--clip", default="clip-vit-b-32", help="CLIP registry name (default clip-vit-b-32)"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the tiny random-init variants of --sam and --clip: offline, seconds (trials, tests)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument(
        "--data",
        required=True,
        help="COCO folder (annotations.json + images/) or a folder of unlabelled images",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--text-mix", type=float, default=0.0)
    parser.add_argument("--adapter", default=None, help="adapter registry name (default: by pair)")
    parser.add_argument("--init-checkpoint", default=None)
    parser.add_argument("--sam-checkpoint", default=None)
    parser.add_argument("--clip-checkpoint", default=None)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--max-masks-per-image", type=int, default=16)
    parser.add_argument("--min-mask-area", type=int, default=256)
    parser.add_argument(
        "--points-per-side",
        type=int,
        default=32,
        help="grid of the automatic mask generator (unlabelled folders)",
    )
    parser.add_argument(
        "--pred-iou-thresh",
        type=float,
        default=0.88,
        help="automatic generator: keep masks whose predicted IoU is above this",
    )
    parser.add_argument(
        "--stability-score-thresh",
        type=float,
        default=0.95,
        help="automatic generator: keep masks whose stability score is at least this",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run :func:`train_text_prompt` from parsed arguments; prints a one-line summary.

    Returns:
        0. Library errors propagate for the CLI to turn into one line.
    """
    from textseg._registry import test_variant
    from textseg.train.text_prompt import train_text_prompt

    sam, clip = args.sam, args.clip
    if args.tiny:
        sam, clip = test_variant(sam), test_variant(clip)
    result = train_text_prompt(
        sam,
        clip,
        args.data,
        args.out,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        text_mix=args.text_mix,
        adapter=args.adapter,
        init_checkpoint=args.init_checkpoint,
        sam_checkpoint=args.sam_checkpoint,
        clip_checkpoint=args.clip_checkpoint,
        max_images=args.max_images,
        max_masks_per_image=args.max_masks_per_image,
        min_mask_area=args.min_mask_area,
        amg_options={
            "points_per_side": args.points_per_side,
            "pred_iou_thresh": args.pred_iou_thresh,
            "stability_score_thresh": args.stability_score_thresh,
        },
        device=args.device,
        seed=args.seed,
        log_every=args.log_every,
        resume=args.resume,
    )
    print(
        f"{result.adapter}: {result.num_masks} masks from {result.num_images} images, loss "
        f"{result.initial_loss:.4f} -> {result.final_loss:.4f}; saved {result.checkpoint}"
    )
    return 0
