"""One training image and its instances (:class:`Example`): what the training data yields and
what a specialist network's loss reads (:mod:`textseg.specialists.nets`)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["IGNORE", "Example"]

#: Label of ignored pixels in semantic targets.
IGNORE = 255


@dataclass
class Example:
    """One training image and its instances.

    Attributes:
        file_name: The image record's ``file_name``.
        image: ``(H, W, 3)`` uint8 RGB.
        masks: ``(N, H, W)`` bool instance masks (weight > 0 only).
        class_ids: ``(N,)`` int64 index into :attr:`textseg.train.data.TrainingSet.classes`.
        weights: ``(N,)`` float32 loss weight of each instance (> 0).
        ignore: ``(H, W)`` bool pixels to leave out of the loss (crowd, ``unknown``, weight-0
            instances).
        excluded: Instances left out by a weight of 0 (instance training skips the image).
    """

    file_name: str
    image: np.ndarray
    masks: np.ndarray
    class_ids: np.ndarray
    weights: np.ndarray
    ignore: np.ndarray
    excluded: int = 0

    def semantic(self, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The semantic target: ``(H, W)`` int64 labels (0 background, ``k + 1`` class k,
        :data:`IGNORE`) and ``(H, W)`` float32 pixel weights, optionally resized (nearest) to
        ``size`` ``(H, W)``.

        Overlapping instances: the smaller one is painted last (it stays visible).
        """
        h, w = self.image.shape[:2]
        labels = np.zeros((h, w), np.int64)
        weights = np.ones((h, w), np.float32)
        areas = self.masks.reshape(len(self.masks), -1).sum(axis=1) if len(self.masks) else []
        for i in np.argsort(-np.asarray(areas), kind="stable"):
            labels[self.masks[i]] = int(self.class_ids[i]) + 1
            weights[self.masks[i]] = float(self.weights[i])
        labels[self.ignore] = IGNORE
        if size is not None and (h, w) != tuple(size):
            dsize = (int(size[1]), int(size[0]))
            labels = cv2.resize(labels.astype(np.uint8), dsize, interpolation=cv2.INTER_NEAREST)
            labels = labels.astype(np.int64)
            weights = cv2.resize(weights, dsize, interpolation=cv2.INTER_NEAREST)
        return labels, weights
