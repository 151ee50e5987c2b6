"""Metric primitives of the evaluation protocols, each checked against pycocotools or by hand.

- :func:`mask_iou`: IoU of paired masks (prediction ``i`` against ground truth ``i``);
- :func:`mean_iou`: mean IoU overall and per class;
- :func:`farthest_interior_point`: the click of the SAM paper's 1-point protocol;
- :func:`coco_mask_ap`: mask AP / AP50 / AP75 overall and per class through pycocotools' COCOeval;
- :func:`count_errors`: per-image, per-class count errors (MAE, exact-match rate).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from textseg.masks import paired_iou

__all__ = [
    "coco_mask_ap",
    "count_errors",
    "farthest_interior_point",
    "mask_iou",
    "mean_iou",
]


def _as_masks(masks: Any, what: str) -> np.ndarray:
    array = np.asarray(masks)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{what}: expected (N, H, W) or (H, W) masks, got shape {array.shape}")
    if array.dtype != np.bool_:
        raise TypeError(
            f"{what}: expected bool masks, got dtype {array.dtype}; threshold them first "
            f"(e.g. masks > 0)"
        )
    return array


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of each predicted mask with the ground-truth mask at the same index.

    Two empty masks have IoU 1 (they agree); an empty prediction of a non-empty mask has IoU 0.

    Args:
        pred: ``(N, H, W)`` bool (or one ``(H, W)`` mask).
        gt: ``(N, H, W)`` bool, same shape as ``pred``.

    Returns:
        ``(N,)`` float64 IoU in [0, 1].

    Raises:
        TypeError: Masks that are not bool.
        ValueError: Shapes that are not ``(N, H, W)`` or differ.
    """
    pred = _as_masks(pred, "pred")
    gt = _as_masks(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt: expected the same (N, H, W) shape (one prediction per ground-truth "
            f"mask, same image size), got {pred.shape} and {gt.shape}"
        )
    return paired_iou(pred, gt, empty=1.0)


def mean_iou(
    ious: Sequence[float] | np.ndarray,
    class_ids: Sequence[int] | np.ndarray,
    classes: Sequence[str],
) -> tuple[float, dict[str, dict[str, float | int | None]]]:
    """Mean IoU over instances, and per class.

    Args:
        ious: ``(N,)`` IoU of each instance.
        class_ids: ``(N,)`` int index into ``classes`` of each instance.
        classes: Class names.

    Returns:
        ``(miou, per_class)``: the mean over all instances (NaN when N = 0) and
        ``{class: {"n": instances, "miou": mean or None}}`` for every class.

    Raises:
        ValueError: Lengths differ, or a class id is out of range.
    """
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if ious.shape != class_ids.shape:
        raise ValueError(
            f"ious and class_ids: expected one class id per IoU, got {ious.size} IoUs and "
            f"{class_ids.size} class ids"
        )
    if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= len(classes)):
        raise ValueError(
            f"class_ids: expected indices in [0, {len(classes)}), got values in "
            f"[{class_ids.min()}, {class_ids.max()}]"
        )
    per_class: dict[str, dict[str, float | int | None]] = {}
    for k, name in enumerate(classes):
        sel = ious[class_ids == k]
        per_class[name] = {"n": int(sel.size), "miou": float(sel.mean()) if sel.size else None}
    miou = float(ious.mean()) if ious.size else float("nan")
    return miou, per_class


def farthest_interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel farthest from the mask's boundary: the SAM paper's first click.

    Distances are exact Euclidean distances to the nearest pixel outside the mask; the image
    border counts as outside, so a mask touching the border is not clicked at its edge. Ties go
    to the first pixel in row-major order. The click is a pixel index, the convention of SAM's
    point prompts (the model adds 0.5 to reach the pixel centre).

    Args:
        mask: ``(H, W)`` bool, not empty.

    Returns:
        ``(x, y)``: column and row of the pixel.

    Raises:
        TypeError: Not a bool mask.
        ValueError: Not 2-D, or empty.
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask: expected one (H, W) mask, got shape {array.shape}")
    if array.dtype != np.bool_:
        raise TypeError(f"mask: expected a bool mask, got dtype {array.dtype}")
    if not array.any():
        raise ValueError("mask: empty (no pixel set); it has no interior point to click")
    padded = np.pad(array, 1).astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def _quiet(fn: Any, *args: Any) -> Any:
    """Call a pycocotools function without its progress prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def coco_mask_ap(
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    *,
    image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
) -> tuple[dict[str, float | None], dict[int, dict[str, float | None]]]:
    """Mask AP through pycocotools' COCOeval (``iouType="segm"``, 101-point interpolation).

    Args:
        gt: A COCO instances dict (``images``, ``annotations`` with ``segmentation``,
            ``categories``). Annotations without ``area`` or ``iscrowd`` get them (area of the
            mask, not crowd); the dict is not modified.
        results: COCO results: dicts with ``image_id``, ``category_id``, ``segmentation``
            (RLE or polygons) and ``score``; a ``bbox`` is ignored (the area ranges use the
            mask's area). May be empty (AP 0 for every class with ground truth).
        image_ids: Images to evaluate (default: all of ``gt``).
        category_ids: Categories to evaluate (default: all of ``gt``).

    Returns:
        ``(overall, per_category)``: ``overall`` has ``ap`` (IoU 0.50:0.95), ``ap50``, ``ap75``,
        ``ap_small``, ``ap_medium``, ``ap_large`` and ``ar100``; ``per_category`` maps each
        category id to ``{"ap", "ap50"}``. A value is None where COCOeval has nothing to
        average (no ground truth).

    Raises:
        ValueError: A result for an image or category that is not evaluated.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from textseg.io.rle import to_rle

    dataset = copy.deepcopy(dict(gt))
    dataset.setdefault("info", {})
    dataset.setdefault("licenses", [])
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in dataset["images"]}
    for ann in dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            h, w = sizes[int(ann["image_id"])]
            rle = to_rle(ann["segmentation"], h, w, what=f"annotation {ann.get('id')}")
            ann["area"] = float(mask_utils.area(rle))
    image_ids = sorted(sizes) if image_ids is None else [int(i) for i in image_ids]
    if category_ids is None:
        category_ids = [int(c["id"]) for c in dataset["categories"]]
    category_ids = [int(c) for c in category_ids]
    allowed_images, allowed_cats = set(image_ids), set(category_ids)
    detections = []
    for i, res in enumerate(results):
        if int(res["image_id"]) not in allowed_images:
            raise ValueError(
                f"results[{i}]: image_id {res['image_id']} is not among the evaluated images"
            )
        if int(res["category_id"]) not in allowed_cats:
            raise ValueError(
                f"results[{i}]: category_id {res['category_id']} is not among the evaluated "
                f"categories {sorted(allowed_cats)[:20]}"
            )
        h, w = sizes[int(res["image_id"])]
        # Compressed RLE, the one form loadRes reads for masks; no "bbox": given one, loadRes
        # takes the box area as the detection's area, which puts detections in the wrong
        # small/medium/large range (Detectron2 drops it likewise).
        detections.append(
            {
                "image_id": int(res["image_id"]),
                "category_id": int(res["category_id"]),
                "segmentation": to_rle(res["segmentation"], h, w, what=f"results[{i}]"),
                "score": float(res["score"]),
            }
        )
    coco_gt = COCO()
    coco_gt.dataset = dataset
    _quiet(coco_gt.createIndex)
    if detections:
        coco_dt = _quiet(coco_gt.loadRes, detections)
    else:
        # loadRes cannot read an empty list; COCOeval scores an empty result set all the same
        # (AP 0 where there is ground truth, undefined elsewhere).
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": dataset["images"],
            "categories": dataset["categories"],
            "annotations": [],
        }
        _quiet(coco_dt.createIndex)
    keys = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")
    per_category: dict[int, dict[str, float | None]] = {}
    evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
    evaluator.params.imgIds = image_ids
    evaluator.params.catIds = category_ids
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    _quiet(evaluator.summarize)
    stats = evaluator.stats
    picks = (0, 1, 2, 3, 4, 5, 8)
    overall = {k: (float(stats[i]) if stats[i] >= 0 else None) for k, i in zip(keys, picks)}
    # precision: (IoU thresholds, recall points, categories, area ranges, max dets)
    precision = evaluator.eval["precision"]
    for k, cat in enumerate(evaluator.params.catIds):
        all_area = precision[:, :, k, 0, -1]
        at50 = precision[0, :, k, 0, -1]
        per_category[int(cat)] = {
            "ap": float(all_area[all_area > -1].mean()) if (all_area > -1).any() else None,
            "ap50": float(at50[at50 > -1].mean()) if (at50 > -1).any() else None,
        }
    return overall, per_category


def count_errors(
    pred: np.ndarray, gt: np.ndarray, classes: Sequence[str]
) -> tuple[dict[str, float], dict[str, dict[str, float | int]]]:
    """Count errors of an (images x classes) table of predicted against true counts.

    Args:
        pred: ``(I, C)`` int predicted instance counts per image and class.
        gt: ``(I, C)`` int true counts.
        classes: The ``C`` class names.

    Returns:
        ``(overall, per_class)``. ``overall``: ``mae`` (mean |pred - gt| over all image-class
        cells), ``exact`` (fraction of cells counted exactly), ``mae_present`` and
        ``exact_present`` (the same over cells whose true count is > 0), ``image_exact``
        (fraction of images with every class counted exactly) and ``bias`` (mean pred - gt).
        ``per_class``: ``{class: {"gt", "pred" (totals), "mae", "exact", "bias"}}``.
        Means over no cells are NaN.

    Raises:
        ValueError: Shapes differ or do not match ``classes``, or negative counts.
    """
    pred = np.asarray(pred, dtype=np.int64)
    gt = np.asarray(gt, dtype=np.int64)
    if pred.ndim != 2 or pred.shape != gt.shape or pred.shape[1] != len(classes):
        raise ValueError(
            f"pred and gt: expected two (images, {len(classes)}) count tables, got shapes "
            f"{pred.shape} and {gt.shape}"
        )
    if (pred < 0).any() or (gt < 0).any():
        raise ValueError("pred and gt: counts must be >= 0")
    err = np.abs(pred - gt)
    diff = pred - gt
    present = gt > 0

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else float("nan")

    overall = {
        "mae": mean(err),
        "exact": mean(err == 0),
        "mae_present": mean(err[present]),
        "exact_present": mean(err[present] == 0),
        "image_exact": mean((err == 0).all(axis=1)) if pred.shape[0] else float("nan"),
        "bias": mean(diff),
    }
    per_class = {
        name: {
            "gt": int(gt[:, k].sum()),
            "pred": int(pred[:, k].sum()),
            "mae": mean(err[:, k]),
            "exact": mean(err[:, k] == 0),
            "bias": mean(diff[:, k]),
        }
        for k, name in enumerate(classes)
    }
    return overall, per_class
