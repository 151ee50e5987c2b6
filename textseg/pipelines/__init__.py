"""Compositions: text -> prompts -> SAM masks -> names and counts."""

from textseg.pipelines.decode import attach_prompts, decode_prompts
from textseg.pipelines.presets import PRESETS, build_components, list_presets
from textseg.pipelines.selectors import ClipMaskSelector, MaskSelector
from textseg.pipelines.text_segmenter import Result, TextSegmenter, dedup_masks

__all__ = [
    "PRESETS",
    "ClipMaskSelector",
    "MaskSelector",
    "Result",
    "TextSegmenter",
    "attach_prompts",
    "build_components",
    "decode_prompts",
    "dedup_masks",
    "list_presets",
]
