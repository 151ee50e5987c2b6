"""Mask post-processing of SAM logits shared by the SAM core and the automatic generator
(mask geometry, IoU, boxes and NMS: :mod:`textseg.masks`).

Conventions: masks are ``(N, H, W)`` bool (numpy) or logits (torch); boxes are ``(N, 4)`` XYXY
absolute pixels, float32, with x1/y1 the last column/row of the mask (inclusive), as
supervision's ``mask_to_xyxy`` and segment_anything compute them: a one-pixel mask at (x, y) has
box (x, y, x, y).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from textseg.fields import STABILITY_SCORE

__all__ = ["remove_small_regions", STABILITY_SCORE]


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
