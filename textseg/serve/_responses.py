"""Results as the JSON the routes answer: one instance dict per mask.

Instances are written by :func:`textseg.io.coco.detections_to_coco` (the one COCO writer: the
pipeline's RLEs as they are, or exact polygons; ``score``, ``area``, ``bbox`` and every
per-instance field of :data:`textseg.fields.FIELDS` under its own name), then given the keys an
HTTP client wants: ``class_id``, ``class_name``, ``xyxy`` (the mask's box, XYXY absolute pixels,
inclusive like ``Detections.xyxy``) and ``mask`` (COCO RLE) or ``polygons``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import supervision as sv
from supervision.config import CLASS_NAME_DATA_FIELD

from textseg.io.coco import detections_to_coco
from textseg.vocab import UNKNOWN

__all__ = ["MaskFormat", "click_instances", "result_instances"]

MaskFormat = Literal["rle", "polygons"]

#: COCO keys that the instance dict replaces or leaves out.
_DROPPED = ("image_id", "category_id", "segmentation", "iscrowd")


def _instances(
    dets: sv.Detections,
    classes: list[str],
    height: int,
    width: int,
    masks: MaskFormat,
    rles: list[dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    # ``unknown`` (class_id -1) is not a COCO category: give it one past the vocabulary.
    class_id = np.asarray(dets.class_id if dets.class_id is not None else np.zeros(len(dets)))
    unknown = class_id < 0
    if unknown.any():
        dets.class_id = np.where(unknown, len(classes), class_id)
        classes = [*classes, UNKNOWN]
    annotations = detections_to_coco(
        dets,
        0,
        classes,
        height=height,
        width=width,
        segmentation="polygon" if masks == "polygons" else "rle",
        first_id=0,
        rles=rles,
    )
    out = []
    for ann, k, box in zip(annotations, class_id.tolist(), np.asarray(dets.xyxy).tolist()):
        item: dict[str, Any] = {
            "id": ann.pop("id"),
            "class_id": int(k),
            CLASS_NAME_DATA_FIELD: classes[k] if k >= 0 else UNKNOWN,
            "xyxy": box,
        }
        segmentation = ann.get("segmentation")
        for key in _DROPPED:
            ann.pop(key, None)
        item |= ann
        if segmentation is not None:
            item["polygons" if masks == "polygons" else "mask"] = segmentation
        out.append(item)
    return out


def result_instances(result: Any, classes: list[str], masks: MaskFormat) -> list[dict[str, Any]]:
    """The instances of a :class:`textseg.pipelines.Result` (its RLEs written as they are)."""
    h, w = result.image_size
    return _instances(result.boxes, classes, h, w, masks, result.masks.rles)


def click_instances(dets: sv.Detections, masks: MaskFormat) -> list[dict[str, Any]]:
    """The masks of a click (``mask`` (M, H, W) bool, ``confidence`` SAM's predicted IoU)."""
    dets = sv.Detections(
        xyxy=np.asarray(dets.xyxy, np.float32),
        mask=np.asarray(dets.mask, bool),
        confidence=dets.confidence,
        class_id=np.zeros(len(dets), np.int64),
        data={k: v for k, v in dets.data.items() if k != "low_res_logits"},
    )
    h, w = dets.mask.shape[1:]
    items = _instances(dets, ["object"], h, w, masks, None)
    for item in items:
        del item["class_id"], item[CLASS_NAME_DATA_FIELD]
    return items
