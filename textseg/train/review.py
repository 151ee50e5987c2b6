"""Active selection: the labelled images ranked by how unsure the pipeline was, worst first.

:func:`review_queue` reads a COCO file written by ``textseg label`` (its annotations carry the
pipeline's per-instance fields, :data:`textseg.fields.FIELDS`) and scores every annotation by
the signals it has, each turned into a doubt in [0, 1]:

- ``sam_iou`` (SAM's predicted IoU): doubt ``1 - sam_iou``;
- ``clip_margin`` (CLIP's margin of the output class over the runner-up or reject, in
  [-1, 1]; a verifying or naming labeler writes it): doubt ``(1 - clip_margin) / 2``;
- ``score`` (the detector's box score, or the prompter's): doubt ``1 - score``;
- disagreement between detector and labeler: the detector's matched text (``prompt``) is the
  name of another category than the one written (the labeler relabelled it), or CLIP preferred
  something else (``clip_margin < 0``): doubt 1;
- class ``unknown`` (the labeler could not name the mask): doubt 1.

Signals an annotation lacks are left out (never filled in). An annotation's doubt is the mean
of its signals; an image's uncertainty is the doubt of its most doubtful annotation (ties: the
mean over its annotations). Images where nothing was found have no uncertainty to rank by: they
come after every scored image, flagged ``detections = 0`` (a miss cannot be scored from the
labels; a person may still want to look).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textseg.fields import CLASS_NAME, CLIP_MARGIN, SAM_IOU
from textseg.io.coco import load_coco
from textseg.vocab import UNKNOWN

__all__ = ["REVIEW_QUEUE", "ReviewItem", "review_queue", "write_review_queue"]

#: File name of the queue written beside the labels.
REVIEW_QUEUE = "review_queue.csv"

_COLUMNS = (
    "rank",
    "file_name",
    "image_id",
    "uncertainty",
    "mean_doubt",
    "detections",
    "doubtful",
    "min_sam_iou",
    "min_clip_margin",
    "min_score",
    "disagreements",
    "unknown",
    "worst_reason",
)


@dataclass(frozen=True)
class ReviewItem:
    """One image of the queue.

    Attributes:
        file_name: The image record's ``file_name``.
        image_id: Its COCO id.
        uncertainty: Doubt of its most doubtful annotation, in [0, 1]; None when nothing was
            found.
        mean_doubt: Mean doubt over its annotations (None when nothing was found).
        detections: Annotations of the image.
        doubtful: Annotations whose doubt is at least 0.5.
        min_sam_iou, min_clip_margin, min_score: The smallest value of each signal (None when
            no annotation has it).
        disagreements: Annotations where detector and labeler disagree.
        unknown: Annotations of class ``unknown``.
        worst_reason: The signal with the largest doubt in the worst annotation.
    """

    file_name: str
    image_id: int
    uncertainty: float | None
    mean_doubt: float | None
    detections: int
    doubtful: int
    min_sam_iou: float | None
    min_clip_margin: float | None
    min_score: float | None
    disagreements: int
    unknown: int
    worst_reason: str


def _column(data: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    """``(n,)`` float64, NaN where an annotation lacks the field."""
    raw = data.get(key)
    if raw is None:
        return np.full(n, np.nan)
    return np.asarray([np.nan if v is None else float(v) for v in raw], np.float64)


def _min(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else None


def review_queue(annotations: str | os.PathLike[str]) -> list[ReviewItem]:
    """The images of a labelled COCO file, most uncertain first (see the module docstring).

    Args:
        annotations: ``OUT/annotations.json`` of ``textseg label`` (any COCO file whose
            annotations carry ``sam_iou`` / ``clip_margin`` / ``score`` / ``prompt``).

    Returns:
        One :class:`ReviewItem` per image: scored images by decreasing uncertainty (then mean
        doubt, then file name), then the images with nothing found, by file name.

    Raises:
        FileNotFoundError, ValueError: As :func:`textseg.io.coco.load_coco`.
    """
    coco = load_coco(annotations)
    names = {n.casefold() for n in coco.classes}
    items: list[ReviewItem] = []
    for record in coco.images:
        image_id = int(record["id"])
        dets = coco.detections[image_id]
        n = len(dets)
        if n == 0:
            items.append(
                ReviewItem(
                    str(record["file_name"]),
                    image_id,
                    None,
                    None,
                    0,
                    0,
                    None,
                    None,
                    None,
                    0,
                    0,
                    "nothing found",
                )
            )
            continue
        data = dets.data
        sam_iou = _column(data, SAM_IOU, n)
        margin = _column(data, CLIP_MARGIN, n)
        score = (
            np.asarray(dets.confidence, np.float64)
            if dets.confidence is not None
            else np.full(n, np.nan)
        )
        class_name = [str(c) for c in data.get(CLASS_NAME, [""] * n)]
        prompt = data.get("prompt")
        relabelled = np.zeros(n, bool)
        if prompt is not None:
            for i, (p, c) in enumerate(zip(prompt, class_name)):
                if (
                    p is not None
                    and str(p).casefold() in names
                    and str(p).casefold() != c.casefold()
                ):
                    relabelled[i] = True
        unknown = np.asarray([c == UNKNOWN for c in class_name])
        disagree = relabelled | (np.nan_to_num(margin, nan=1.0) < 0)
        signals = {
            "low sam_iou": 1.0 - np.clip(sam_iou, 0.0, 1.0),
            "low clip_margin": (1.0 - np.clip(margin, -1.0, 1.0)) / 2.0,
            "low score": 1.0 - np.clip(score, 0.0, 1.0),
            "detector/labeler disagree": np.where(
                np.isfinite(margin) | (prompt is not None), disagree.astype(float), np.nan
            ),
            "unknown class": np.where(unknown, 1.0, np.nan),
        }
        table = np.stack(list(signals.values()), axis=1)  # (n, signals), NaN = absent
        has = np.isfinite(table).any(axis=1)
        doubt = np.full(n, np.nan)
        doubt[has] = np.nanmean(table[has], axis=1)
        doubt[unknown] = 1.0
        if not np.isfinite(doubt).any():
            uncertainty = mean = None
            reason = "no signal"
        else:
            worst = int(np.nanargmax(doubt))
            uncertainty = float(doubt[worst])
            mean = float(np.nanmean(doubt))
            row = np.nan_to_num(table[worst], nan=-1.0)
            reason = list(signals)[int(np.argmax(row))]
        items.append(
            ReviewItem(
                file_name=str(record["file_name"]),
                image_id=image_id,
                uncertainty=uncertainty,
                mean_doubt=mean,
                detections=n,
                doubtful=int((np.nan_to_num(doubt, nan=0.0) >= 0.5).sum()),
                min_sam_iou=_min(sam_iou),
                min_clip_margin=_min(margin),
                min_score=_min(score),
                disagreements=int(disagree.sum()),
                unknown=int(unknown.sum()),
                worst_reason=reason,
            )
        )
    scored = [it for it in items if it.uncertainty is not None]
    rest = [it for it in items if it.uncertainty is None]
    scored.sort(key=lambda it: (-it.uncertainty, -(it.mean_doubt or 0.0), it.file_name))
    rest.sort(key=lambda it: it.file_name)
    return scored + rest


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_review_queue(
    annotations: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> Path:
    """Write :func:`review_queue` as CSV (default ``review_queue.csv`` beside ``annotations``).

    Columns: ``rank`` (1 = review first), ``file_name``, ``image_id``, ``uncertainty``,
    ``mean_doubt``, ``detections``, ``doubtful``, ``min_sam_iou``, ``min_clip_margin``,
    ``min_score``, ``disagreements``, ``unknown``, ``worst_reason``; a value not measured is an
    empty cell. Written atomically.

    Returns:
        The CSV path.
    """
    annotations = Path(annotations)
    target = Path(path) if path is not None else annotations.parent / REVIEW_QUEUE
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for rank, item in enumerate(review_queue(annotations), start=1):
        writer.writerow([_cell(rank), *(_cell(getattr(item, c)) for c in _COLUMNS[1:])])
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, target)
    return target
