"""YOLO-seg specialists at inference, through ultralytics (optional: ``pip install
'textseg[yolo]'``; **AGPL-3.0**): the architecture built from ultralytics' bundled YAML
(:func:`build_segmentation_model`), the weights loaded strictly from ``model.safetensors``
(:func:`load_yolo_specialist`, nothing unpickled) and :class:`YoloNet`, the predictor.
Training is :mod:`textseg.train.yolo`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch
from PIL import Image

from textseg._registry import get_model_cfg

__all__ = ["YoloNet", "build_segmentation_model", "load_yolo_specialist"]

_INSTALL = (
    "YOLO-seg specialists need ultralytics (AGPL-3.0): pip install 'textseg[yolo]'; or pick "
    "--arch segformer-b0 (Apache-2.0) or maskrcnn-r50-fpn (BSD)"
)


@contextlib.contextmanager
def keep_threads() -> Iterator[None]:
    """ultralytics sets torch's global thread count (to cores - 1) on import and in every
    ``select_device`` (each train and predict call); put the caller's back afterwards, so the
    other models of the process keep theirs."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def import_ultralytics() -> Any:
    """Import ultralytics, undoing its one process-wide patch: on import it replaces
    ``PIL.Image.open`` by a wrapper that tries to pip-install ``pi-heif`` whenever Pillow cannot
    identify a file, which turned textseg's "cannot read image" into an install attempt and a
    ``ModuleNotFoundError`` for every later image read of the process."""
    with keep_threads():
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
    import_ultralytics()
    from ultralytics.nn.tasks import SegmentationModel

    return SegmentationModel(yaml_name(yaml, scale), nc=nc, verbose=False)


def yaml_name(yaml: str, scale: str | None) -> str:
    """``yolo11-seg.yaml`` at scale ``n`` -> ``yolo11n-seg.yaml`` (ultralytics reads the scale
    from the name)."""
    return yaml.replace("-seg.yaml", f"{scale}-seg.yaml") if scale else yaml


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
            with keep_threads():
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
