"""The mask -> class name interface."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import supervision as sv

from textseg._image import ImageInput
from textseg.vocab import UNKNOWN, ClassesInput

__all__ = ["UNKNOWN", "Labeler"]


@runtime_checkable
class Labeler(Protocol):
    """Names (or checks the names of) detections.

    ``label(image, detections, classes)`` takes one image (a path, PIL image or ``(H, W, 3)``
    uint8 RGB array), its ``sv.Detections`` (``mask`` ``(N, H, W)`` bool at the image's
    resolution, or only ``xyxy`` ``(N, 4)`` XYXY absolute pixels) and the vocabulary, and returns
    new ``sv.Detections`` with ``class_id`` (index into the vocabulary's class names, ``-1`` for
    :data:`UNKNOWN`) and ``data["class_name"]`` set. A labeler never forces a label: a detection
    no class fits is :data:`UNKNOWN`.
    """

    def label(
        self, image: ImageInput, detections: sv.Detections, classes: ClassesInput
    ) -> sv.Detections: ...
