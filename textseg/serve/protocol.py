"""What the HTTP routes need from the model side: one segmentation service per process."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import supervision as sv

from textseg.vocab import Vocabulary

__all__ = ["SegmentationService"]


class SegmentationService(Protocol):
    """Text-prompted segmentation and clicks answered from a cached SAM embedding.

    ``segment`` returns a :class:`textseg.pipelines.Result`; ``click`` returns ``sv.Detections``
    with ``mask`` (N, H, W) bool, ``confidence`` (SAM's predicted IoU), ``xyxy`` and
    ``metadata["cached"]`` (whether the embedding was already there: the image is encoded on
    its first click and the embedding reused by later ones).
    """

    def segment(self, image: np.ndarray, vocabulary: Vocabulary, **options: Any) -> Any: ...

    def click(
        self,
        image: np.ndarray,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = False,
    ) -> sv.Detections: ...

    def describe(self) -> dict[str, Any]: ...
