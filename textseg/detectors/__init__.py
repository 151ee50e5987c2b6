"""Text -> boxes: Grounding DINO and OWLv2 through transformers, every class in one pass."""

from __future__ import annotations

import os
from typing import Any

from textseg.detectors.base import (
    Detector,
    DetectorBase,
    PostprocessConfig,
    TextDetectorModel,
    build_net,
    postprocess_detections,
)
from textseg.detectors.grounding_dino import GroundingDinoDetector
from textseg.detectors.owlv2 import Owlv2Detector

__all__ = [
    "Detector",
    "DetectorBase",
    "GroundingDinoDetector",
    "Owlv2Detector",
    "PostprocessConfig",
    "TextDetectorModel",
    "build_detector",
    "postprocess_detections",
]


def build_detector(
    model: str | TextDetectorModel,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    tiny: bool = False,
    **kwargs: Any,
) -> DetectorBase:
    """The right detector for a registry name (``textseg.list_models("detector")``).

    Args:
        model: Registry name or a built :class:`TextDetectorModel`.
        checkpoint: Explicit weights file or folder.
        pretrained: Load weights (False: random weights).
        tiny: Build the registry name's tiny random-init variant (``--tiny``), unless a
            ``checkpoint`` is given.
        **kwargs: Passed to :class:`GroundingDinoDetector` or :class:`Owlv2Detector`
            (``device``, ``box_threshold``...).

    Raises:
        ValueError: Unknown name; the message lists the valid names and the closest one.
    """
    from transformers import GroundingDinoForObjectDetection

    net = build_net(model, checkpoint=checkpoint, pretrained=pretrained, tiny=tiny)
    if isinstance(net.model, GroundingDinoForObjectDetection):
        return GroundingDinoDetector(net, **kwargs)
    return Owlv2Detector(net, **kwargs)
