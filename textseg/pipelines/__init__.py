"""Compositions: text -> prompts -> SAM masks -> names and counts."""

from textseg.pipelines.presets import PRESETS, build_preset, list_presets
from textseg.pipelines.text_segmenter import Result, TextSegmenter, count_classes, dedup_masks

__all__ = [
    "PRESETS",
    "Result",
    "TextSegmenter",
    "build_preset",
    "count_classes",
    "dedup_masks",
    "list_presets",
]
