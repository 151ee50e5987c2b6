"""Labelers: mask -> class name (``Labeler.label(image, detections, classes)``)."""

from textseg.labelers.base import UNKNOWN, Labeler
from textseg.labelers.clip import DEFAULT_BACKGROUND, DEFAULT_TEMPLATES, ClipLabeler

__all__ = ["DEFAULT_BACKGROUND", "DEFAULT_TEMPLATES", "UNKNOWN", "ClipLabeler", "Labeler"]
