"""Labelers: mask -> class name (``Labeler.label(image, detections, classes)``)."""

from textseg.labelers.base import UNKNOWN, Labeler
from textseg.labelers.clip import ClipLabeler

__all__ = ["UNKNOWN", "ClipLabeler", "Labeler"]
