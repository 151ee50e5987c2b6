"""Mask post-processing shared by the SAM core and the automatic generator.

Conventions: masks are ``(N, H, W)`` bool (numpy) or logits (torch); boxes are ``(N, 4)`` XYXY
absolute pixels, float32, with x1/y1 the last column/row of the mask (inclusive), as
supervision's ``mask_to_xyxy`` and segment_anything compute them: a one-pixel mask at (x, y) has
box (x, y, x, y).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = [
    "mask_iou_matrix",
    "mask_nms",
    "masks_to_boxes",
    "remove_small_regions",
    "stability_score",
]


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks binarised at ``threshold + offset`` and ``threshold - offset``.

    Args:
        logits: ``(..., H, W)`` mask logits.
        threshold: The mask threshold (0.0 for SAM).
        offset: The offset (1.0 in SAM's automatic generator).

    Returns:
        ``(...)`` float32 scores in [0, 1]; 0 where the mask is empty even at the low
        threshold.
    """
    high = (logits > (threshold + offset)).sum(dim=(-1, -2), dtype=torch.int32)
    low = (logits > (threshold - offset)).sum(dim=(-1, -2), dtype=torch.int32)
    return (high.float() / low.float().clamp(min=1)).where(low > 0, torch.zeros_like(high.float()))


def masks_to_boxes(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, H, W)`` bool masks -> ``(N, 4)`` float32 XYXY boxes (inclusive last pixel);
    empty masks give zeros."""
    if isinstance(masks, torch.Tensor):
        m = masks.bool()
        n, h, w = m.shape
        if n == 0:
            return np.zeros((0, 4), np.float32)
        rows = m.any(dim=2)
        cols = m.any(dim=1)
        ar_h = torch.arange(h, device=m.device)
        ar_w = torch.arange(w, device=m.device)
        y0 = torch.where(rows, ar_h, h).amin(dim=1)
        y1 = torch.where(rows, ar_h, -1).amax(dim=1)
        x0 = torch.where(cols, ar_w, w).amin(dim=1)
        x1 = torch.where(cols, ar_w, -1).amax(dim=1)
        boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
        empty = ~rows.any(dim=1)
        boxes[empty] = 0.0
        return boxes.cpu().numpy().astype(np.float32)
    return masks_to_boxes(torch.from_numpy(np.asarray(masks, dtype=bool)))


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Remove islands (``mode="islands"``) or fill holes (``mode="holes"``) smaller than an area.

    Args:
        mask: ``(H, W)`` bool mask.
        area_thresh: Regions with fewer pixels than this are removed/filled.
        mode: ``"islands"`` or ``"holes"``.

    Returns:
        The new mask and whether it changed. When every island is small, the largest is kept.
    """
    if mode not in ("islands", "holes"):
        raise ValueError(f"mode: expected 'islands' or 'holes', got {mode!r}")
    holes = mode == "holes"
    working = (mask ^ holes).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if len(small) == 0:
        return mask, False
    if holes:
        # Background (label 0 of the inverted mask is the object) and small holes become mask.
        return np.isin(labels, np.concatenate([[0], small])), True
    keep = np.setdiff1d(np.arange(1, n_labels), small)
    if len(keep) == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep), True


def _rles(masks: np.ndarray) -> list[dict]:
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def mask_iou_matrix(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise mask IoU and intersection-over-smaller-area (containment).

    Args:
        masks: ``(N, H, W)`` bool masks.

    Returns:
        ``(N, N)`` IoU and ``(N, N)`` containment, both float64; computed on run-length
        encodings, so cost grows with the masks' perimeters, not their areas.
    """
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0)), np.zeros((0, 0))
    rles = _rles(masks)
    iou = np.asarray(mask_utils.iou(rles, rles, [0] * n), dtype=np.float64).reshape(n, n)
    area = mask_utils.area(rles).astype(np.float64)
    inter = iou * (area[:, None] + area[None, :]) / (1.0 + iou)
    smaller = np.minimum(area[:, None], area[None, :])
    contain = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    return iou, contain


def mask_nms(
    masks: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = 0.7,
    containment_threshold: float | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression on masks (not boxes).

    A mask is dropped when a higher-scoring kept mask overlaps it with IoU above
    ``iou_threshold``, or (if given) covers more than ``containment_threshold`` of the smaller
    of the two.

    Args:
        masks: ``(N, H, W)`` bool masks.
        scores: ``(N,)`` scores, higher is better.

    Returns:
        Indices of the kept masks, highest score first.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    if len(order) == 0:
        return order.astype(np.int64)
    iou, contain = mask_iou_matrix(masks)
    suppress = iou > iou_threshold
    if containment_threshold is not None:
        suppress |= contain > containment_threshold
    keep: list[int] = []
    removed = np.zeros(len(order), bool)
    for i in order:
        if removed[i]:
            continue
        keep.append(int(i))
        removed |= suppress[i]
    return np.asarray(keep, dtype=np.int64)
