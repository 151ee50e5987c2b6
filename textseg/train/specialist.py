"""Train a specialist on a COCO dataset: :func:`train_specialist` (running one is
:mod:`textseg.specialists`; :func:`load_specialist` is re-exported here).

The SAM data engine's last step: a foundation model labels (``textseg label``), a person may
correct, and a small fast model is trained on the result. Architectures are registry entries of
task ``"specialist"`` (:mod:`textseg.specialists.pretrained`): SegFormer b0..b5 (semantic, the
default), Mask R-CNN (instance) and, through ultralytics, YOLO-seg (instance, AGPL-3.0,
:mod:`textseg.train.yolo`).

The output folder ``out`` (claimed by ``textseg train``: :func:`textseg.io.folder.claim_output`)
holds:

- ``.textseg.json``: the manifest, written first;
- ``config.json``: the architecture, the classes, the settings, the train/validation split,
  the history (training loss and validation mIoU per epoch), the best epoch and the time spent;
- ``model.safetensors``: the weights of the best epoch (by validation mIoU; the last epoch when
  there is no validation set or its images hold no annotation), loaded strictly by
  :func:`load_specialist`;
- ``checkpoints/last.pt``: the whole training state after the last finished epoch (weights,
  optimiser, counters, history), rewritten atomically every epoch.

``config.json`` (with the settings) is written before the first checkpoint and the settings are
kept in the checkpoint too, so a run killed after any write resumes with ``resume=True`` from
the last finished epoch and ends in the same state as an uninterrupted run: the shuffling, flips
and any randomness of epoch e are drawn from ``(seed, e)`` alone. Early stopping ends training
when the validation mIoU has not improved for ``patience`` epochs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textseg._device import resolve_device
from textseg._registry import get_model_cfg, test_variant
from textseg.specialists.nets import SpecialistNet, build_specialist
from textseg.specialists.predictor import (
    Specialist,
    is_specialist_dir,
    load_specialist,
    specialist_classes,
)
from textseg.train.data import TrainingSet, open_split
from textseg.train.metrics import SemanticIoU
from textseg.train.output import (
    CHECKPOINT,
    CONFIG,
    CONFIG_FORMAT,
    WEIGHTS,
    TrainReport,
    _atomic_json,
    _atomic_safetensors,
    _atomic_torch,
    check_same_settings,
    claim_run,
    load_checkpoint,
    read_json,
    written,
)
from textseg.validators import optional_positive_int, positive_int

__all__ = [
    "CONFIG_FORMAT",
    "Specialist",
    "TrainReport",
    "is_specialist_dir",
    "load_specialist",
    "specialist_classes",
    "train_specialist",
]

logger = logging.getLogger(__name__)

#: Learning rate (AdamW) per family; tiny test variants train at :data:`TINY_LR`.
DEFAULT_LR = {"segformer": 6e-5, "maskrcnn": 1e-4, "yolo": 1e-3}
TINY_LR = 1e-3
#: Images per optimiser step per family.
DEFAULT_BATCH = {"segformer": 8, "maskrcnn": 2, "yolo": 8}


#: The largest input side textseg trains at: memory grows with its square (20000 took 10 GB).
MAX_INPUT_SIZE = 4096
#: The smallest: SegFormer and Mask R-CNN downsample 32 times.
MIN_INPUT_SIZE = 32


def check_input_size(value: Any) -> int | None:
    """None (the architecture's default) or an input side in ``[MIN_INPUT_SIZE,
    MAX_INPUT_SIZE]``."""
    value = optional_positive_int(value, "input_size")
    if value is not None and not MIN_INPUT_SIZE <= value <= MAX_INPUT_SIZE:
        raise ValueError(
            f"input_size: expected {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} pixels (the maximum: "
            f"memory grows with its square), got {value}"
        )
    return value


def specialist_arch(arch: str, tiny: bool) -> str:
    """The registry name trained for ``arch`` (its tiny variant with ``tiny``).

    Raises:
        ValueError: ``arch`` is not a specialist architecture; the message lists those
            ``textseg train`` takes.
    """
    cfg = get_model_cfg(arch, "specialist")
    return test_variant(cfg.name) if tiny else cfg.name


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def evaluate_net(net: SpecialistNet, data: TrainingSet, *, batch_size: int = 4) -> dict[str, Any]:
    """Semantic mIoU of ``net`` on every image of ``data`` (:class:`SemanticIoU`)."""
    metric = SemanticIoU(data.classes)
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(data), batch_size):
            examples = [data.load(i) for i in range(start, min(len(data), start + batch_size))]
            preds = net.predict([e.image for e in examples])
            for e, p in zip(examples, preds):
                metric.update(p.mask, p.class_id, e.masks, e.class_ids, e.image.shape[:2], e.ignore)
    finally:
        net.train(was_training)
    return metric.to_dict()


def train_specialist(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    arch: str = "segformer-b0",
    images: str | os.PathLike[str] | None = None,
    val: str | os.PathLike[str] | None = None,
    val_images: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    tiny: bool = False,
    epochs: int = 20,
    batch_size: int | None = None,
    lr: float | None = None,
    patience: int = 5,
    seed: int = 0,
    device: str = "cpu",
    pretrained: bool = True,
    backbone_checkpoint: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
    source_weights: Mapping[str, float] | Sequence[str] | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> TrainReport:
    """Train a specialist on a COCO dataset into ``out``.

    Args:
        dataset: A folder with ``annotations.json`` (``textseg label``'s output, a COCO folder)
            or the COCO JSON.
        out: Output folder (see the module docstring).
        arch: Registry name (``textseg models --task specialist``): ``segformer-b0`` ..
            ``segformer-b5``, ``maskrcnn-r50-fpn``, ``yolo11n-seg`` ... (YOLO needs the
            ``textseg[yolo]`` extra, AGPL-3.0).
        images: Folder the ``file_name`` s are relative to (default ``images/`` beside the
            JSON, else its folder). For ``textseg label DIR --out L``: DIR.
        val: A separate validation dataset (same classes) instead of ``val_fraction``.
        val_images: Its image folder.
        val_fraction: Share of the images held out for validation (seeded split).
        tiny: Train the architecture's tiny random-init variant (offline, seconds).
        epochs: Maximum number of epochs.
        batch_size: Images per optimiser step (default per family).
        lr: AdamW learning rate, decayed linearly to 0 (default per family).
        patience: Stop after this many epochs without a better validation mIoU.
        seed: Seed of the initialisation, the split and every epoch's shuffling and flips.
        device: ``"cpu"``, ``"cuda"``...
        pretrained: Start from the registry's pretrained backbone (its weights must be on disk
            or downloadable); False: random init.
        backbone_checkpoint: An explicit backbone weights file (first in the resolution order).
        input_size: Input side (SegFormer: square side; Mask R-CNN: short side).
        source_weights: Loss weight per provenance, e.g. ``{"proposal": 0.5, "unreviewed":
            0}`` (:func:`textseg.train.data.parse_source_weights`).
        resume: Continue the run in ``out`` from its last finished epoch.
        progress: Progress bars (None: on a terminal only).

    Returns:
        A :class:`TrainReport`.

    Raises:
        FileNotFoundError: Dataset or images missing.
        ValueError: Bad options; ``out`` holds a run and ``resume`` is False; ``resume`` with
            no run in ``out`` or with settings that differ from it.
        WeightsNotFoundError: ``pretrained`` and the backbone weights are missing.
    """
    start_time = time.perf_counter()
    epochs = positive_int(epochs, "epochs")
    patience = positive_int(patience, "patience (epochs)")
    batch_size = optional_positive_int(batch_size, "batch_size")
    input_size = check_input_size(input_size)
    name = specialist_arch(arch, tiny)
    cfg = get_model_cfg(name, "specialist")
    family = cfg.arch["family"]
    if family == "yolo":
        from textseg.train.yolo import train_yolo

        return train_yolo(
            dataset,
            out,
            name=name,
            images=images,
            val=val,
            val_images=val_images,
            val_fraction=val_fraction,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            seed=seed,
            device=device,
            input_size=input_size,
            source_weights=source_weights,
            resume=resume,
            progress=progress,
        )
    out = Path(out)
    train_data, val_data = open_split(
        dataset,
        images=images,
        val=val,
        val_images=val_images,
        val_fraction=val_fraction,
        seed=seed,
        source_weights=source_weights,
    )
    batch = batch_size or DEFAULT_BATCH[family]
    rate = float(lr if lr is not None else (TINY_LR if cfg.is_test else DEFAULT_LR[family]))
    settings: dict[str, Any] = {
        "arch": name,
        "classes": train_data.classes,
        "epochs": epochs,
        "batch_size": batch,
        "lr": rate,
        "patience": patience,
        "seed": seed,
        "input_size": input_size,
        "pretrained": bool(pretrained and (cfg.weights is not None or backbone_checkpoint)),
        "source_weights": train_data.source_weights,
        "train_files": train_data.file_names,
        "val_files": val_data.file_names if val_data is not None else [],
    }
    with claim_run(out, "train", resume=resume) as folder:
        state = _resume_state(out, settings) if resume else None
        report = _train(
            out,
            cfg,
            train_data,
            val_data,
            settings,
            state,
            dataset=dataset,
            device=device,
            backbone_checkpoint=backbone_checkpoint,
            progress=progress,
            start_time=start_time,
        )
        folder.update(complete=True)
        written("complete")
    return report


def _build_net(
    cfg: Any,
    classes: list[str],
    settings: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    backbone_checkpoint: str | os.PathLike[str] | None,
) -> SpecialistNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings["seed"])
        if state is not None:
            return build_specialist(cfg.name, classes, **state["net_settings"])
        backbone = None
        if settings["pretrained"]:
            from textseg._hub import WeightsNotFoundError, create_model

            try:
                backbone = create_model(cfg, checkpoint=backbone_checkpoint)
            except WeightsNotFoundError as err:
                raise WeightsNotFoundError(
                    f"{err}; or train from random weights: pretrained=False (--no-pretrained)"
                ) from None
        size = settings["input_size"]
        return build_specialist(
            cfg.name, classes, backbone=backbone, **({"input_size": size} if size else {})
        )


def _train(
    out: Path,
    cfg: Any,
    train_data: TrainingSet,
    val_data: TrainingSet | None,
    settings: dict[str, Any],
    state: dict[str, Any] | None,
    *,
    dataset: str | os.PathLike[str],
    device: str,
    backbone_checkpoint: str | os.PathLike[str] | None,
    progress: bool | None,
    start_time: float,
) -> TrainReport:
    """The epochs of a claimed run (fresh, ``state`` None, or resumed from ``state``)."""
    name, seed, epochs = cfg.name, settings["seed"], settings["epochs"]
    batch, rate, patience = settings["batch_size"], settings["lr"], settings["patience"]
    net = _build_net(cfg, train_data.classes, settings, state, backbone_checkpoint)
    net.to(resolve_device(device))
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=rate, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_data) / batch)
    total_steps = epochs * steps_per_epoch
    history: dict[str, list[Any]] = {"train_loss": [], "val_miou": []}
    first_epoch = best_epoch = bad_epochs = 0
    best = -1.0
    seconds_before = 0.0
    if state is not None:
        net.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"])
        best_epoch = int(state["best_epoch"])
        bad_epochs = int(state["bad_epochs"])
        best = float(state["best"])
        history = {k: list(v) for k, v in state["history"].items()}
        seconds_before = float(state["seconds"])
    settings["net_settings"] = net.settings()
    config = {
        "format": CONFIG_FORMAT,
        "arch": name,
        "kind": net.kind,
        "family": cfg.arch["family"],
        "classes": train_data.classes,
        "settings": settings,
        "dataset": str(Path(dataset)),
        "images": str(train_data.images_dir),
        "provenance": train_data.provenance(),
        "status": "training",
        "history": history,
        "best_epoch": best_epoch,
        "epochs_done": first_epoch,
    }
    # The settings are on disk before the first checkpoint: every later kill can resume.
    _atomic_json(out / CONFIG, config)
    written("settings")
    validated = val_data is not None and len(val_data) > 0

    from tqdm.auto import tqdm

    net.train()
    for epoch in range(first_epoch, epochs):
        if bad_epochs >= patience:  # early stopping (also when a stopped run is resumed)
            break
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 100_003 + epoch)
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(len(train_data))
            flips = rng.random(len(train_data)) < 0.5
            losses = []
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"{name} epoch {epoch + 1}/{epochs}",
                unit="step",
                disable=None if progress is None else not progress,
                leave=False,
            )
            for step in range(steps_per_epoch):
                rows = order[step * batch : (step + 1) * batch]
                examples = [train_data.load(int(i)) for i in rows]
                keep = [
                    k for k, e in enumerate(examples) if net.kind != "instance" or not e.excluded
                ]
                if not keep:
                    bar.update(1)
                    continue
                done = epoch * steps_per_epoch + step
                for group in optimizer.param_groups:
                    group["lr"] = rate * (1.0 - done / total_steps)
                loss = net.loss([examples[k] for k in keep], [bool(flips[rows[k]]) for k in keep])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                bar.update(1)
            bar.close()
        history["train_loss"].append(float(np.mean(losses)) if losses else None)
        miou = None
        if validated:
            miou = _number(evaluate_net(net, val_data, batch_size=batch)["miou"])
        history["val_miou"].append(miou)
        if miou is None and epoch == first_epoch and validated:
            logger.warning(
                "the %d held-out images have no annotation of a trained class: no validation "
                "score; model.safetensors keeps the last epoch and early stopping is off",
                len(val_data),
            )
        # Without a validation score (no held-out images, or none annotated) the last epoch
        # is kept; with one, the best.
        if (miou is None and best < 0) or (miou is not None and miou > best):
            best = -1.0 if miou is None else miou
            best_epoch, bad_epochs = epoch + 1, 0
            _atomic_safetensors(out / WEIGHTS, net.state_dict())
            written("weights")
        else:
            bad_epochs += 1
        seconds = seconds_before + time.perf_counter() - start_time
        _atomic_torch(
            out / CHECKPOINT,
            {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "history": history,
                "seconds": seconds,
                "net_settings": net.settings(),
                "settings": _comparable(settings),
            },
        )
        written("checkpoint")
        config.update(
            history=history, best_epoch=best_epoch, train_seconds=seconds, epochs_done=epoch + 1
        )
        _atomic_json(out / CONFIG, config)
        written("config")
        logger.info(
            "epoch %d/%d: loss %s, val mIoU %s",
            epoch + 1,
            epochs,
            "-" if history["train_loss"][-1] is None else f"{history['train_loss'][-1]:.4f}",
            "-" if miou is None else f"{miou:.4f}",
        )
    if not (out / WEIGHTS).is_file():
        raise RuntimeError(
            f"{out / WEIGHTS} was not written: no epoch finished; resume the run (--resume)"
        )
    stopped = bad_epochs >= patience and len(history["train_loss"]) < epochs
    seconds = seconds_before + time.perf_counter() - start_time
    config.update(
        status="done",
        history=history,
        best_epoch=best_epoch,
        best_val_miou=None if best < 0 else best,
        stopped_early=stopped,
        epochs_done=len(history["train_loss"]),
        train_seconds=seconds,
    )
    _atomic_json(out / CONFIG, config)
    written("final")
    return TrainReport(
        out=out,
        arch=name,
        kind=net.kind,
        classes=train_data.classes,
        epochs=len(history["train_loss"]),
        best_epoch=best_epoch,
        best_miou=None if best < 0 else best,
        train_loss=history["train_loss"],
        val_miou=history["val_miou"],
        stopped_early=stopped,
        resumed_from=first_epoch,
        seconds=seconds,
        train_images=len(train_data),
        val_images=0 if val_data is None else len(val_data),
    )


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues."""
    return {k: v for k, v in settings.items() if k != "net_settings"}


_CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "epoch",
    "best",
    "best_epoch",
    "bad_epochs",
    "history",
    "seconds",
    "net_settings",
)


def _resume_state(out: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: the run stopped before its first one), after
    checking the run was trained with ``settings``."""
    config_path, checkpoint = out / CONFIG, out / CHECKPOINT
    saved = None
    if config_path.is_file():
        saved = read_json(config_path, "specialist config").get("settings")
    state = load_checkpoint(checkpoint, _CHECKPOINT_KEYS) if checkpoint.is_file() else None
    if state is not None and isinstance(state.get("settings"), dict):
        saved = state["settings"]
    if saved is None:
        return None  # killed before the settings were written: nothing was trained yet
    check_same_settings(out, dict(saved), _comparable(settings))
    return state
