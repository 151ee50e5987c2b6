"""``textseg train-text-prompt``: train the CLIP -> SAM text-prompt adapter
(:func:`textseg.train.text_prompt.train_text_prompt`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train-text-prompt`` command to an ``argparse`` subparsers object.

    The parser's default ``func`` is :func:`run`.
    """
    parser = subparsers.add_parser(
        "train-text-prompt",
        help="train the EXPERIMENTAL CLIP -> SAM text-prompt adapter",
        description=(
            "Train a text-prompt adapter as in the SAM paper: masked-crop CLIP image embeddings "
            "as prompts, SAM frozen. Writes OUT/model.safetensors and OUT/config.json."
        ),
    )
    parser.add_argument("--sam", required=True, help="SAM registry name, e.g. sam-vit-b")
    parser.add_argument("--clip", required=True, help="CLIP registry name, e.g. clip-vit-b-32")
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
    from textseg.train.text_prompt import train_text_prompt

    result = train_text_prompt(
        args.sam,
        args.clip,
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
    )
    print(
        f"{result.adapter}: {result.num_masks} masks from {result.num_images} images, loss "
        f"{result.initial_loss:.4f} -> {result.final_loss:.4f}; saved {result.checkpoint}"
    )
    return 0
