"""YOLO-seg specialists through ultralytics (optional: ``pip install 'textseg[yolo]'``).

**Licence: ultralytics is AGPL-3.0.** Installing it is the user's choice; textseg never
depends on it by default, and a model trained or run with it is subject to its terms when
distributed.

Training hands the work to ultralytics' own trainer (its augmentation, its losses, its
checkpoints): textseg writes the COCO dataset as a YOLO-seg dataset (:class:`textseg.io.yolo.
YoloWriter`, the same split as the other specialists), trains
``yolo11{n,s,m}-seg.yaml`` from random initialisation, then stores the best weights as a state
dict (``model.safetensors``) beside ``config.json``, the layout every specialist has, so
:func:`textseg.train.load_specialist` loads it strictly without unpickling anything.

What differs from SegFormer and Mask R-CNN, because ultralytics owns the loop:

- checkpoints are ultralytics' (pickled Python objects: loading one runs its code). After each
  epoch textseg copies ultralytics' ``last.pt`` to ``OUT/checkpoints/yolo-epochN.pt`` and
  records its sha256 in ``config.json``; ``--resume`` hands ultralytics that copy only when
  its hash matches, written back over ``OUT/ultralytics/weights/last.pt`` (so a file planted
  there is never read), and refuses a mismatch. ``model.safetensors`` is written from the
  trainer's own weights in the same callback: nothing ultralytics saved is unpickled;
- everything stays in ``OUT`` (ultralytics gets absolute paths: a relative one would send it
  to its own ``runs/`` folder); a finished run is never handed back to ultralytics;
- early stopping is ultralytics' ``patience`` on its own fitness (mask mAP), not textseg's mIoU;
- provenance weights can only filter (0 or 1): ultralytics has no per-instance loss weight.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg._registry import get_model_cfg
from textseg.io._common import atomic_write
from textseg.specialists.yolo import import_ultralytics, keep_threads, yaml_name
from textseg.train.data import TrainingSet, open_split
from textseg.train.output import (
    CONFIG,
    CONFIG_FORMAT,
    WEIGHTS,
    TrainReport,
    _atomic_json,
    _atomic_safetensors,
    check_same_settings,
    claim_run,
    read_json,
    sha256_file,
    written,
)

__all__ = ["train_yolo"]


def _write_yolo_dataset(
    train: TrainingSet, val: TrainingSet | None, root: Path
) -> tuple[Path, int, int]:
    """The training (and validation) images as a YOLO-seg dataset under ``root``."""
    from textseg.io.export import flat_names
    from textseg.io.yolo import YoloWriter

    weights = set(train.source_weights.values())
    if not weights <= {0.0, 1.0}:
        raise ValueError(
            f"source weights: YOLO training can only keep (1) or leave out (0) annotations by "
            f"provenance, got {train.source_weights}; use SegFormer or Mask R-CNN to weight them"
        )
    writer = YoloWriter(root, train.classes, link_images=True)
    counts = {"train": 0, "val": 0}
    parts = [("train", train)] + ([("val", val)] if val is not None and len(val) else [])
    flat = flat_names([f for _, d in parts for f in d.file_names])
    for split, data in parts:
        for index in range(len(data)):
            example = data.load(index)
            if example.excluded:
                continue  # its left-out instances must not be learnt as background
            h, w = example.image.shape[:2]
            dets = sv.Detections(
                xyxy=sv.mask_to_xyxy(example.masks).astype(np.float32)
                if len(example.masks)
                else np.zeros((0, 4), np.float32),
                mask=example.masks,
                class_id=example.class_ids,
            )
            source = data.images_dir / example.file_name
            writer.add(flat[example.file_name], w, h, dets, image=source, split=split)
            counts[split] += 1
    writer.close()
    return root / "data.yaml", counts["train"], counts["val"]


def train_yolo(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str,
    images: str | os.PathLike[str] | None = None,
    val: str | os.PathLike[str] | None = None,
    val_images: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    epochs: int = 20,
    batch_size: int | None = None,
    lr: float | None = None,
    patience: int = 5,
    seed: int = 0,
    device: str = "cpu",
    input_size: int | None = None,
    source_weights: Mapping[str, float] | Sequence[str] | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> TrainReport:
    """Train the YOLO-seg registry entry ``name`` with ultralytics (see the module docstring;
    the options are :func:`textseg.train.train_specialist`'s).

    Returns:
        A :class:`textseg.train.TrainReport`.

    Raises:
        ImportError: ultralytics is not installed.
        ValueError: Provenance weights other than 0 and 1; ``out`` holds a run and ``resume``
            is False, or ``resume`` with no run, other settings, or a checkpoint whose sha256
            is not the one textseg recorded.
    """
    import_ultralytics()
    cfg = get_model_cfg(name, "specialist")
    # Absolute: ultralytics puts a relative project under its own runs_dir.
    out = Path(out).resolve()
    train_data, val_data = open_split(
        dataset,
        images=images,
        val=val,
        val_images=val_images,
        val_fraction=val_fraction,
        seed=seed,
        source_weights=source_weights,
    )
    imgsz = int(input_size or cfg.input_size or 640)
    settings: dict[str, Any] = {
        "arch": name,
        "classes": train_data.classes,
        "epochs": int(epochs),
        "batch_size": int(batch_size or 8),
        "lr": float(lr if lr is not None else 1e-3),
        "patience": int(patience),
        "seed": seed,
        "input_size": imgsz,
        "source_weights": train_data.source_weights,
        "train_files": train_data.file_names,
        "val_files": val_data.file_names if val_data is not None else [],
    }
    with claim_run(out, "train", resume=resume) as folder:
        previous = None
        if resume and (out / CONFIG).is_file():
            previous = read_json(out / CONFIG, "specialist config")
            saved = {k: v for k, v in previous.get("settings", {}).items() if k != "net_settings"}
            if previous.get("status") == "done" and saved.get("epochs") != settings["epochs"]:
                raise ValueError(
                    f"resume: the run in {out} is finished ({previous.get('epochs_done')} of its "
                    f"{saved.get('epochs')} epochs); ultralytics cannot extend a finished run: "
                    f"train into another folder for more epochs"
                )
            check_same_settings(out, saved, settings)
        config = {
            "format": CONFIG_FORMAT,
            "arch": name,
            "kind": "instance",
            "family": "yolo",
            "classes": train_data.classes,
            "settings": {
                **settings,
                "net_settings": {"input_size": imgsz, "score_threshold": 0.25},
            },
            "dataset": str(Path(dataset)),
            "images": str(train_data.images_dir),
            "provenance": train_data.provenance(),
            "status": "training",
            "licence": "AGPL-3.0 (ultralytics)",
            **{k: previous[k] for k in _CARRIED if previous and k in previous},
        }
        if previous is None or previous.get("status") != "done":
            _run(out, cfg, train_data, val_data, settings, config, device)
        if not (out / WEIGHTS).is_file():
            raise RuntimeError(f"{out / WEIGHTS} was not written: ultralytics saved no epoch")
        history = config.get("history", {})
        config.update(status="done", epochs_done=len(history.get("train_loss", [])))
        _atomic_json(out / CONFIG, config)
        written("final")
        folder.update(complete=True)
        written("complete")
    losses = history.get("train_loss", [])
    return TrainReport(
        out=out,
        arch=name,
        kind="instance",
        classes=train_data.classes,
        epochs=len(losses),
        best_epoch=int(config.get("best_epoch", len(losses))),
        best_miou=None,
        train_loss=losses,
        val_miou=[None] * len(losses),
        resumed_from=int(previous.get("epochs_done", 0)) if previous else 0,
        seconds=float(config.get("train_seconds", 0.0)),
        train_images=len(train_data),
        val_images=0 if val_data is None else len(val_data),
    )


#: What a resumed run keeps from the config of the run it continues.
_CARRIED = ("checkpoint", "history", "best_epoch", "epochs_done", "train_seconds", "status")


def _run(
    out: Path,
    cfg: Any,
    train_data: TrainingSet,
    val_data: TrainingSet | None,
    settings: Mapping[str, Any],
    config: dict[str, Any],
    device: str,
) -> None:
    """Hand the run to ultralytics: fresh, or resumed from textseg's verified copy of its last
    checkpoint. ``config`` is rewritten after every epoch (history, checkpoint record)."""
    from ultralytics import YOLO

    run_dir, checkpoints = out / "ultralytics", out / "checkpoints"
    last = run_dir / "weights" / "last.pt"
    record = config.get("checkpoint")
    epochs = int(settings["epochs"])
    done = record is not None and (int(record["epoch"]) >= epochs or record.get("stopped"))
    seconds_before = float(config.get("train_seconds", 0.0))
    config["status"] = "training"
    _atomic_json(out / CONFIG, config)  # the settings, before ultralytics writes anything
    written("settings")
    if done:
        return
    start = time.perf_counter()

    def on_model_save(trainer: Any) -> None:
        epoch = int(trainer.epoch) + 1
        if trainer.best_fitness == trainer.fitness:
            state = {k: v.detach().float() for k, v in trainer.ema.ema.state_dict().items()}
            _atomic_safetensors(out / WEIGHTS, state)
            config["best_epoch"] = epoch
            written("weights")
        payload = Path(trainer.last).read_bytes()
        copy = checkpoints / f"yolo-epoch{epoch}.pt"
        checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write(copy, payload)
        written("checkpoint")
        config["checkpoint"] = {
            "file": str(copy.relative_to(out)),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "epoch": epoch,
            "stopped": bool(trainer.stop) and epoch < epochs,
        }
        config["history"] = _history(run_dir / "results.csv")
        config["epochs_done"] = epoch
        config["train_seconds"] = seconds_before + time.perf_counter() - start
        _atomic_json(out / CONFIG, config)
        written("config")
        for old in checkpoints.glob("yolo-epoch*.pt"):
            if old != copy:
                old.unlink(missing_ok=True)

    if record is not None:
        source = out / str(record["file"])
        if not source.is_file() or sha256_file(source) != record.get("sha256"):
            raise ValueError(
                f"{source}: not the checkpoint textseg wrote (its sha256 differs from the one "
                f"in {out / CONFIG}); it is not loaded (ultralytics checkpoints run code when "
                f"loaded): delete the folder's run or train into another folder"
            )
        # ultralytics resumes from its own last.pt: put the verified copy there, over whatever
        # the folder holds, and drop the results rows of epochs the copy has not seen.
        last.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, last)
        _truncate_results(run_dir / "results.csv", int(record["epoch"]))
        model = YOLO(str(last))
        model.add_callback("on_model_save", on_model_save)
        with keep_threads():
            # Where this folder is now, not where the checkpoint says it was.
            model.train(
                resume=True, data=str(out / "yolo-data" / "data.yaml"), save_dir=str(run_dir)
            )
        return
    for stale in (run_dir, out / "yolo-data", checkpoints):  # a run killed before its first epoch
        if stale.exists():
            shutil.rmtree(stale)
    yaml_path, _, n_val = _write_yolo_dataset(train_data, val_data, out / "yolo-data")
    if n_val == 0:  # ultralytics needs a validation split; reuse the training images
        text = yaml_path.read_text(encoding="utf-8")
        yaml_path.write_text(text + "val: images/train\n", encoding="utf-8")
    model = YOLO(yaml_name(cfg.arch["yaml"], cfg.arch.get("scale")), task="segment")
    model.add_callback("on_model_save", on_model_save)
    with keep_threads():
        model.train(
            data=str(yaml_path),
            epochs=epochs,
            imgsz=int(settings["input_size"]),
            batch=int(settings["batch_size"]),
            lr0=float(settings["lr"]),
            optimizer="AdamW",
            patience=int(settings["patience"]),
            seed=int(settings["seed"]),
            deterministic=True,
            device=device,
            project=str(out),
            name="ultralytics",
            exist_ok=True,
            pretrained=False,
            plots=False,
            amp=False,
            workers=0,
            verbose=False,
        )


def _truncate_results(path: Path, epochs: int) -> None:
    """Keep the rows of ``results.csv`` for epochs ``<= epochs`` (a killed run may have logged
    an epoch whose checkpoint it never saved; the resumed run logs it again)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:1] + [
        line for line in lines[1:] if line.strip() and _epoch(line.split(",")[0]) <= epochs
    ]
    atomic_write(path, "".join(kept))


def _epoch(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _history(path: Path) -> dict[str, list[float | None]]:
    """Per-epoch training loss (box + seg + cls + dfl) and mask mAP50-95 from results.csv."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    loss_keys = [k for k in (rows[0] if rows else {}) if k.startswith("train/")]

    def number(text: str | None) -> float | None:
        try:
            value = float(text) if text not in (None, "") else None
        except ValueError:
            return None
        return value if value is not None and np.isfinite(value) else None

    # One row per epoch, the last one logged: a resumed run logs again the epoch it redoes.
    rows = list({_epoch(r.get("epoch", "0")): r for r in rows}.values())
    losses = [sum(number(r[k]) or 0.0 for k in loss_keys) for r in rows]
    return {
        "train_loss": losses,
        "val_mask_map": [number(r.get("metrics/mAP50-95(M)")) for r in rows],
    }
