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
    """``(N, H, W)`` bool masks (numpy, or torch on any device) -> ``(N, 4)`` float32 XYXY
    boxes, x2/y2 the last column/row of the mask (inclusive, as supervision's
    ``mask_to_xyxy``); empty masks give zeros. The one mask -> box conversion of textseg."""
    if isinstance(masks, torch.Tensor):
        m = masks.bool()
        rows, cols = m.any(dim=2).cpu().numpy(), m.any(dim=1).cpu().numpy()
    else:
        m = np.asarray(masks, dtype=bool)
        rows, cols = m.any(axis=2), m.any(axis=1)
    n = rows.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    h, w = rows.shape[1], cols.shape[1]
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - 1 - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - 1 - np.argmax(rows[:, ::-1], axis=1)
    boxes[~rows.any(axis=1)] = 0.0
    return boxes


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


#: Measured on a 2-core AMD EPYC (torch 2.14): seconds per run-length run visited by
#: pycocotools' pairwise IoU, and per multiply-add of the dense intersection product.
_RLE_SECONDS_PER_RUN = 3e-9
_DENSE_SECONDS_PER_MAC = 2.5e-11


def mask_iou_matrix(masks: np.ndarray, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Pairwise mask IoU and intersection-over-smaller-area (containment), exact.

    Two exact ways, chosen by their estimated cost: run-length encodings (pycocotools; cost grows
    with the masks' perimeters, the fast way for smooth masks) or a blocked matrix product of the
    flattened masks over their joint bounding box (cost grows with the pixel count; the fast way
    for many ragged masks, e.g. hundreds of candidates from the automatic generator, where the
    run-length way takes minutes).

    Args:
        masks: ``(N, H, W)`` bool masks.
        method: ``"auto"`` (the cheaper of the two), ``"rle"`` or ``"dense"``.

    Returns:
        ``(N, N)`` IoU and ``(N, N)`` containment, both float64.
    """
    if method not in ("auto", "rle", "dense"):
        raise ValueError(f"method: expected 'auto', 'rle' or 'dense', got {method!r}")
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0)), np.zeros((0, 0))
    masks = np.asarray(masks, dtype=bool)
    # From the dense masks: pycocotools' area() overflows on 256+ RLEs (2.0.11, numpy 2).
    area = masks.reshape(n, -1).sum(1, dtype=np.float64)
    rows = np.flatnonzero(masks.any(axis=(0, 2)))
    cols = np.flatnonzero(masks.any(axis=(0, 1)))
    if len(rows) == 0:  # all empty
        return np.zeros((n, n)), np.zeros((n, n))
    masks = masks[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if method == "auto":
        method = _cheaper_iou_method(masks)
    if method == "rle":
        rles = _rles(masks)
        iou = np.asarray(mask_utils.iou(rles, rles, [0] * n), dtype=np.float64).reshape(n, n)
        inter = iou * (area[:, None] + area[None, :]) / (1.0 + iou)
        inter = np.round(inter)
    else:
        inter = _dense_intersections(masks.reshape(n, -1))
        union = area[:, None] + area[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    smaller = np.minimum(area[:, None], area[None, :])
    contain = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    return iou, contain


def _cheaper_iou_method(masks: np.ndarray) -> str:
    """``"rle"`` or ``"dense"``: the way :func:`mask_iou_matrix` estimates as cheaper."""
    n = len(masks)
    # Runs down the columns (RLE order): each pair visits the runs of both masks.
    runs = np.count_nonzero(masks[:, 1:, :] != masks[:, :-1, :]) + n * masks.shape[2]
    rle_cost = 2.0 * n * runs * _RLE_SECONDS_PER_RUN
    dense_cost = float(n) * n * masks[0].size * _DENSE_SECONDS_PER_MAC
    return "rle" if rle_cost <= dense_cost else "dense"


def _dense_intersections(flat: np.ndarray, block_bytes: int = 1 << 25) -> np.ndarray:
    """``(N, N)`` pixel counts of pairwise intersections of ``(N, P)`` bool masks, exact.

    float32 products over pixel blocks of at most 2**24 pixels are exact integers; the blocks
    are summed in float64.
    """
    n, p = flat.shape
    block = int(min(max(block_bytes // (4 * n), 1024), 1 << 24))
    inter = torch.zeros((n, n), dtype=torch.float64)
    for start in range(0, p, block):
        part = torch.from_numpy(np.ascontiguousarray(flat[:, start : start + block]))
        part = part.to(torch.float32)
        inter += (part @ part.T).to(torch.float64)
    return inter.numpy()


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
