"""What a specialist run leaves in its output folder, shared by every architecture's trainer
(:mod:`textseg.train.specialist`, :mod:`textseg.train.yolo`): the file names, the config
format, :class:`TrainReport` and the atomic writers (temp file beside the target +
``os.replace``: a kill never leaves half a file)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textseg.io._common import atomic_write
from textseg.specialists.predictor import CONFIG, CONFIG_FORMAT, WEIGHTS

__all__ = ["CHECKPOINT", "CONFIG", "CONFIG_FORMAT", "WEIGHTS", "TrainReport"]

CHECKPOINT = "checkpoints/last.pt"


@dataclass
class TrainReport:
    """What :func:`train_specialist` did.

    Attributes:
        out: The output folder.
        arch: Registry name of the architecture trained (the tiny variant with ``tiny``).
        kind: ``"semantic"`` or ``"instance"``.
        classes: The class names learnt.
        epochs: Epochs finished (all runs together).
        best_epoch: 1-based epoch whose weights are in ``model.safetensors``.
        best_miou: Its validation mIoU (None without validation images).
        train_loss: Mean training loss per epoch.
        val_miou: Validation mIoU per epoch (None entries without validation images).
        stopped_early: Early stopping ended the run.
        resumed_from: Epochs already done when this call started (0: a fresh run).
        seconds: Training time, all runs together.
        train_images: Training images; val_images: validation images.
    """

    out: Path
    arch: str
    kind: str
    classes: list[str]
    epochs: int
    best_epoch: int
    best_miou: float | None
    train_loss: list[float] = field(repr=False)
    val_miou: list[float | None] = field(repr=False)
    stopped_early: bool = False
    resumed_from: int = 0
    seconds: float = 0.0
    train_images: int = 0
    val_images: int = 0

    def __str__(self) -> str:
        miou = "-" if self.best_miou is None else f"{self.best_miou:.4f}"
        first = self.train_loss[0] if self.train_loss else float("nan")
        last = self.train_loss[-1] if self.train_loss else float("nan")
        stop = ", stopped early" if self.stopped_early else ""
        return (
            f"{self.arch}: {self.epochs} epochs on {self.train_images} images ({self.val_images} "
            f"held out){stop}; loss {first:.4f} -> {last:.4f}; best epoch {self.best_epoch}, "
            f"val mIoU {miou}; {self.seconds:.1f} s; saved {self.out / WEIGHTS}"
        )


def _atomic_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def _atomic_torch(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(dict(data), tmp)
    os.replace(tmp, path)


def _atomic_safetensors(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)
