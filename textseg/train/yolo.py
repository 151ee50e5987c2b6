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

import contextlib
import csv
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch
from PIL import Image

from textseg._registry import get_model_cfg
from textseg.train.data import TrainingSet, open_dataset, split_indices
from textseg.train.output import (
    CONFIG,
    CONFIG_FORMAT,
    WEIGHTS,
    TrainReport,
    _atomic_json,
    _atomic_safetensors,
)

__all__ = ["YoloNet", "build_segmentation_model", "load_yolo_specialist", "train_yolo"]

_INSTALL = (
    "YOLO-seg specialists need ultralytics (AGPL-3.0): pip install 'textseg[yolo]'; or pick "
    "--arch segformer-b0 (Apache-2.0) or maskrcnn-r50-fpn (BSD)"
)


@contextlib.contextmanager
def _keep_threads() -> Iterator[None]:
    """ultralytics sets torch's global thread count (to cores - 1) on import and in every
    ``select_device`` (each train and predict call); put the caller's back afterwards, so the
    other models of the process keep theirs."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _ultralytics() -> Any:
    """Import ultralytics, undoing its one process-wide patch: on import it replaces
    ``PIL.Image.open`` by a wrapper that tries to pip-install ``pi-heif`` whenever Pillow cannot
    identify a file, which turned textseg's "cannot read image" into an install attempt and a
    ``ModuleNotFoundError`` for every later image read of the process."""
    with _keep_threads():
        try:
            import ultralytics
            from ultralytics.utils import patches
        except ImportError as err:
            raise ImportError(_INSTALL) from err
    if Image.open is getattr(patches, "image_open", None):
        Image.open = patches._image_open
    return ultralytics


def build_segmentation_model(yaml: str, scale: str | None, nc: int) -> Any:
    """An ultralytics ``SegmentationModel`` from its bundled YAML (e.g. ``yolo11-seg.yaml``
    at scale ``"n"``), random weights, ``nc`` classes.

    Raises:
        ImportError: ultralytics is not installed.
    """
    _ultralytics()
    from ultralytics.nn.tasks import SegmentationModel

    return SegmentationModel(_yaml_name(yaml, scale), nc=nc, verbose=False)


def _yaml_name(yaml: str, scale: str | None) -> str:
    """``yolo11-seg.yaml`` at scale ``n`` -> ``yolo11n-seg.yaml`` (ultralytics reads the scale
    from the name)."""
    return yaml.replace("-seg.yaml", f"{scale}-seg.yaml") if scale else yaml


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
    _ultralytics()
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
        with _keep_threads():
            model.train(resume=True)
    else:
        yaml_path, _, n_val = _write_yolo_dataset(train_data, val_data, out / "yolo-data")
        if n_val == 0:  # ultralytics needs a validation split; reuse the training images
            text = yaml_path.read_text(encoding="utf-8")
            yaml_path.write_text(text + "val: images/train\n", encoding="utf-8")
        model = YOLO(_yaml_name(cfg.arch["yaml"], cfg.arch.get("scale")), task="segment")
        with _keep_threads():
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


class YoloNet:
    """A loaded YOLO-seg specialist: ``predict(images) -> list[Detections]`` through
    ultralytics' predictor (letterbox, NMS, masks at the image's resolution)."""

    kind = "instance"

    def __init__(self, model: Any, classes: Sequence[str], imgsz: int, conf: float) -> None:
        from ultralytics import YOLO

        model.names = dict(enumerate(classes))
        self.classes = list(classes)
        self.imgsz = imgsz
        self.conf = conf
        self._yolo = YOLO(model.yaml["yaml_file"], task="segment")
        self._yolo.model = model

    def predict(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            # ultralytics reads numpy images as BGR (OpenCV's order).
            with _keep_threads():
                result = self._yolo.predict(
                    np.ascontiguousarray(image[:, :, ::-1]),
                    imgsz=self.imgsz,
                    conf=self.conf,
                    retina_masks=True,
                    verbose=False,
                    device=str(next(self._yolo.model.parameters()).device),
                )[0]
            if result.masks is None or len(result.boxes) == 0:
                out.append(
                    sv.Detections(
                        xyxy=np.zeros((0, 4), np.float32),
                        mask=np.zeros((0, h, w), bool),
                        confidence=np.zeros(0, np.float32),
                        class_id=np.zeros(0, np.int64),
                    )
                )
                continue
            masks = result.masks.data.cpu().numpy() > 0.5
            keep = masks.any(axis=(1, 2))
            masks = masks[keep]
            out.append(
                sv.Detections(
                    xyxy=sv.mask_to_xyxy(masks).astype(np.float32)
                    if len(masks)
                    else np.zeros((0, 4), np.float32),
                    mask=masks,
                    confidence=result.boxes.conf.cpu().numpy()[keep].astype(np.float32),
                    class_id=result.boxes.cls.cpu().numpy()[keep].astype(np.int64),
                )
            )
        return out


def load_yolo_specialist(path: Path, config: Mapping[str, Any], device: str) -> YoloNet:
    """Build the YOLO-seg architecture of ``config`` and load ``model.safetensors`` strictly."""
    from textseg._device import resolve_device
    from textseg._hub import load_state_dict, load_strict

    cfg = get_model_cfg(config["arch"], "specialist")
    classes = list(config["classes"])
    model = build_segmentation_model(cfg.arch["yaml"], cfg.arch.get("scale"), len(classes))
    load_strict(model, load_state_dict(path / "model.safetensors"), f"specialist {path}")
    model.to(resolve_device(device)).eval()
    settings = config["settings"].get("net_settings", {})
    return YoloNet(
        model, classes, int(settings.get("input_size", 640)), settings.get("score_threshold", 0.25)
    )
