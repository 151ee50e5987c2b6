"""What a training run leaves in its output folder, shared by every trainer
(:mod:`textseg.train.specialist`, :mod:`textseg.train.yolo`, :mod:`textseg.train.text_prompt`):
the file names, the config format, :class:`TrainReport`, the atomic writers (temp file beside
the target + ``os.replace``: a kill never leaves half a file), the checkpoint and config
readers (one line naming the file when it is not what textseg wrote) and :func:`written`, the
test hook called after each write of a run.

The order of the writes is what makes every killed run resumable: the manifest
(:func:`textseg.io.folder.claim_output`) first, then ``config.json`` with the settings, then
per epoch the best weights, the checkpoint and the history, at the end the final config and
the manifest marked complete. A kill between any two leaves a folder ``--resume`` continues.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textseg.io._common import atomic_write
from textseg.io.folder import KILL_ENV, OutputFolder, claim_output, written
from textseg.specialists.predictor import CONFIG, CONFIG_FORMAT, WEIGHTS

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "CONFIG_FORMAT",
    "KILL_ENV",
    "OWNED",
    "RESUME_HINT",
    "WEIGHTS",
    "TrainReport",
    "check_resumable",
    "check_same_settings",
    "claim_run",
    "load_checkpoint",
    "read_json",
    "sha256_file",
    "written",
]

CHECKPOINT = "checkpoints/last.pt"
#: What ``textseg train`` owns in its output folder (:func:`textseg.io.folder.claim_output`).
OWNED = (CONFIG, WEIGHTS, "checkpoints", "ultralytics", "yolo-data")
RESUME_HINT = "pass --resume (resume=True) to continue the run"


def claim_run(
    out: Path, command: str, *, resume: bool, owned: tuple[str, ...] = OWNED
) -> OutputFolder:
    """Claim ``out`` for a training run (:func:`textseg.io.folder.claim_output`): a new folder,
    or with ``resume`` one a run of ``command`` was started in. The manifest is the run's first
    write (test hook ``"manifest"``)."""
    if resume:
        check_resumable(out)
    folder = claim_output(
        out, command, owned=owned, mode="resume" if resume else "new", hint=RESUME_HINT
    )
    written("manifest")
    return folder


def check_resumable(out: Path) -> None:
    """Refuse ``resume`` for a folder no training run was started in."""
    from textseg.io.folder import read_manifest

    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is None and not (out / CONFIG).exists() and not (out / CHECKPOINT).exists():
        raise ValueError(
            f"resume: {out} holds no training run to resume (no {CONFIG}, no {CHECKPOINT}); "
            f"train without --resume"
        )


def check_same_settings(out: Path, saved: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """Refuse to resume the run in ``out`` (trained with ``saved``) with other ``settings``."""
    differ = [k for k in settings if saved.get(k) != settings[k]]
    if differ:
        shown = ", ".join(
            f"{k}: {saved.get(k)!r} -> {settings[k]!r}"
            for k in differ[:3]
            if k not in ("train_files", "val_files")
        )
        raise ValueError(
            f"resume: the settings differ from the run in {out} ({', '.join(differ)}"
            f"{'; ' + shown if shown else ''}); resume with the same options, or train into "
            f"another folder"
        )


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``ValueError`` naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable {what} ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a {what} (expected a JSON object)")
    return data


def load_checkpoint(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A training checkpoint textseg wrote (tensors and plain values only: nothing is
    unpickled), holding ``keys``.

    Raises:
        ValueError: One line naming the file and what is wrong with it (truncated, not a
            checkpoint, written by something else, or missing entries).
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running the file's code: never.
        raise ValueError(
            f"{path}: not a checkpoint textseg wrote (it holds Python objects other than "
            f"tensors; textseg does not unpickle them); delete it or train into another folder"
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError) as err:
        why = "truncated" if isinstance(err, EOFError) else str(err).splitlines()[0]
        raise ValueError(
            f"{path}: not a readable checkpoint ({why}); delete it or train into another folder"
        ) from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"{path}: not a textseg training checkpoint (no {', '.join(missing)}); delete it or "
            f"train into another folder"
        )
    return state


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
