"""Semantic mIoU over a set of images: the one metric of specialist validation and comparison.

For each class c, the predicted region is the union of the predicted masks of class c and the
true region the union of the ground-truth masks of class c; intersections and unions are summed
over all images, and IoU_c = sum |P_c & G_c| / sum |P_c | G_c|. mIoU is the mean over the
classes whose union is not empty (a class predicted but absent scores 0; a class neither
predicted nor present is left out). Instance and semantic predictions are scored alike, so a
SegFormer, a Mask R-CNN and SAM prompted with boxes compare on one scale; a prediction equal to
the ground truth scores exactly 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SemanticIoU"]


def _union_by_class(
    masks: np.ndarray | None, class_ids: np.ndarray | None, c: int, shape: tuple[int, int]
) -> np.ndarray:
    out = np.zeros(shape, bool)
    if masks is None or class_ids is None or not len(masks):
        return out
    ids = np.asarray(class_ids, np.int64)
    for m in np.asarray(masks)[ids == c]:
        out |= m
    return out


class SemanticIoU:
    """Accumulates per-class intersections and unions image by image.

    Args:
        classes: The class names; ``class_id`` k is ``classes[k]`` (ids outside the range, such
            as -1 for ``unknown``, are not scored).
    """

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.inter = np.zeros(len(self.classes), np.int64)
        self.union = np.zeros(len(self.classes), np.int64)
        self.gt_pixels = np.zeros(len(self.classes), np.int64)
        self.images = 0

    def update(
        self,
        pred_masks: np.ndarray | None,
        pred_ids: np.ndarray | None,
        gt_masks: np.ndarray | None,
        gt_ids: np.ndarray | None,
        shape: tuple[int, int],
        ignore: np.ndarray | None = None,
    ) -> None:
        """Add one image.

        Args:
            pred_masks: ``(N, H, W)`` bool predicted masks (or None / empty).
            pred_ids: ``(N,)`` class index of each.
            gt_masks: ``(M, H, W)`` bool ground-truth masks.
            gt_ids: ``(M,)`` class index of each.
            shape: ``(H, W)``.
            ignore: ``(H, W)`` bool pixels not scored (crowd regions), or None.
        """
        present = np.union1d(
            np.asarray(pred_ids if pred_ids is not None else [], np.int64),
            np.asarray(gt_ids if gt_ids is not None else [], np.int64),
        )
        for c in present[(present >= 0) & (present < len(self.classes))].tolist():
            p = _union_by_class(pred_masks, pred_ids, c, shape)
            g = _union_by_class(gt_masks, gt_ids, c, shape)
            if ignore is not None:
                p &= ~ignore
                g &= ~ignore
            self.inter[c] += int(np.logical_and(p, g).sum())
            self.union[c] += int(np.logical_or(p, g).sum())
            self.gt_pixels[c] += int(g.sum())
        self.images += 1

    def per_class(self) -> dict[str, float | None]:
        """``{class: IoU}``; None for a class neither predicted nor present."""
        return {
            name: (float(self.inter[c] / self.union[c]) if self.union[c] else None)
            for c, name in enumerate(self.classes)
        }

    def miou(self) -> float | None:
        """Mean IoU over the classes with a non-empty union; None when there is none."""
        scored = self.union > 0
        if not scored.any():
            return None
        return float(np.mean(self.inter[scored] / self.union[scored]))

    def to_dict(self) -> dict[str, Any]:
        return {"miou": self.miou(), "per_class": self.per_class(), "images": self.images}
