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

- checkpoints are ultralytics' (``OUT/ultralytics/weights/last.pt`` every epoch), and
  ``--resume`` is ultralytics' resume of that run (it unpickles its own checkpoint);
- early stopping is ultralytics' ``patience`` on its own fitness (mask mAP), not textseg's mIoU;
- provenance weights can only filter (0 or 1): ultralytics has no per-instance loss weight.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg._registry import get_model_cfg
from textseg.specialists.yolo import import_ultralytics, keep_threads, yaml_name
from textseg.train.data import TrainingSet, open_dataset, split_indices
from textseg.train.output import (
    CONFIG,
    CONFIG_FORMAT,
    WEIGHTS,
    TrainReport,
    _atomic_json,
    _atomic_safetensors,
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
) -> Any:
    """Train the YOLO-seg registry entry ``name`` with ultralytics (see the module docstring;
    the options are :func:`textseg.train.train_specialist`'s).

    Returns:
        A :class:`textseg.train.TrainReport`.

    Raises:
        ImportError: ultralytics is not installed.
        ValueError: Provenance weights other than 0 and 1; ``out`` holds a run and ``resume``
            is False, or ``resume`` with no run.
    """
    import_ultralytics()
    from ultralytics import YOLO

    cfg = get_model_cfg(name, "specialist")
    out = Path(out)
    run_dir = out / "ultralytics"
    last = run_dir / "weights" / "last.pt"
    if resume and not last.is_file():
        raise ValueError(f"resume: {out} holds no ultralytics run to resume (no {last})")
    if not resume and last.exists():
        raise ValueError(
            f"{out} holds a training run ({last}); pass resume=True (--resume) to continue it, "
            f"or choose another output folder"
        )
    data = open_dataset(dataset, images=images, source_weights=source_weights)
    if val is not None:
        val_data = open_dataset(val, images=val_images, source_weights=source_weights)
        train_data = data
    else:
        train_idx, val_idx = split_indices(len(data), val_fraction, seed)
        names = data.file_names
        train_data = data.subset([names[i] for i in train_idx])
        val_data = data.subset([names[i] for i in val_idx]) if len(val_idx) else None
    imgsz = int(input_size or cfg.input_size or 640)
    start = time.perf_counter()
    if resume:
        model = YOLO(str(last))
        with keep_threads():
            model.train(resume=True)
    else:
        yaml_path, _, n_val = _write_yolo_dataset(train_data, val_data, out / "yolo-data")
        if n_val == 0:  # ultralytics needs a validation split; reuse the training images
            text = yaml_path.read_text(encoding="utf-8")
            yaml_path.write_text(text + "val: images/train\n", encoding="utf-8")
        model = YOLO(yaml_name(cfg.arch["yaml"], cfg.arch.get("scale")), task="segment")
        with keep_threads():
            model.train(
                data=str(yaml_path),
                epochs=int(epochs),
                imgsz=imgsz,
                batch=int(batch_size or 8),
                lr0=float(lr if lr is not None else 1e-3),
                optimizer="AdamW",
                patience=int(patience),
                seed=int(seed),
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
    seconds = time.perf_counter() - start
    best = run_dir / "weights" / "best.pt"
    trained = YOLO(str(best if best.is_file() else last)).model
    state = {k: v.float() for k, v in trained.state_dict().items()}
    _atomic_safetensors(out / WEIGHTS, state)
    history = _history(run_dir / "results.csv")
    config = {
        "format": CONFIG_FORMAT,
        "arch": name,
        "kind": "instance",
        "family": "yolo",
        "classes": train_data.classes,
        "settings": {
            "arch": name,
            "classes": train_data.classes,
            "epochs": int(epochs),
            "seed": seed,
            "input_size": imgsz,
            "source_weights": train_data.source_weights,
            "train_files": train_data.file_names,
            "val_files": val_data.file_names if val_data is not None else [],
            "net_settings": {"input_size": imgsz, "score_threshold": 0.25},
        },
        "dataset": str(Path(dataset)),
        "images": str(train_data.images_dir),
        "provenance": train_data.provenance(),
        "history": history,
        "train_seconds": seconds,
        "epochs_done": len(history.get("train_loss", [])),
        "status": "done",
        "licence": "AGPL-3.0 (ultralytics)",
    }
    _atomic_json(out / CONFIG, config)
    losses = history.get("train_loss", [])
    return TrainReport(
        out=out,
        arch=name,
        kind="instance",
        classes=train_data.classes,
        epochs=len(losses),
        best_epoch=len(losses),
        best_miou=None,
        train_loss=losses,
        val_miou=[None] * len(losses),
        seconds=seconds,
        train_images=len(train_data),
        val_images=0 if val_data is None else len(val_data),
    )


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

    losses = [sum(number(r[k]) or 0.0 for k in loss_keys) for r in rows]
    return {
        "train_loss": losses,
        "val_mask_map": [number(r.get("metrics/mAP50-95(M)")) for r in rows],
    }
