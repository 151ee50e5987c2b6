"""Text -> SAM prompts: detector boxes, a point grid, dense-CLIP points, CLIP prompt tokens.

Every prompter has one method, ``prompts(image, classes) -> ClassPrompts`` (the
:class:`Prompter` protocol); the pipeline decodes them all the same way
(:func:`textseg.pipelines.decode_prompts`).

- :class:`BoxPrompter`: a text detector's boxes (Grounding DINO, OWLv2) as box prompts.
- :class:`GridPrompter`: the automatic generator's point grid, unnamed ("segment everything,
  then name it").
- :class:`ClipPointPrompter`: training-free points from dense CLIP similarity maps (the
  ``clip-points`` preset picks SAM's candidates with
  :class:`textseg.pipelines.ClipMaskSelector`).
- :class:`ClipTokenPrompter`: the SAM paper's text prompt through a trained
  :class:`TextPromptAdapter` (EXPERIMENTAL; train with :mod:`textseg.train.text_prompt`).
- :class:`Sam3Prompter`: SAM 3's concept segmentation; its prompts carry SAM 3's own masks
  (:class:`PromptMasks`), with :class:`Exemplar` boxes.
"""

from textseg.prompters.base import ClassPrompts, MultimaskAdvice, Prompter, PromptMasks
from textseg.prompters.box import BoxPrompter
from textseg.prompters.clip_points import (
    ClipPointPrompter,
    GridGeometry,
    InstancePoints,
    similarity_to_points,
)
from textseg.prompters.clip_tokens import (
    ClipTokenPrompter,
    ExperimentalWarning,
    TextPromptAdapter,
    text_adapter_for,
)
from textseg.prompters.grid import GridPrompter
from textseg.prompters.sam3 import Exemplar, Sam3Prompter

__all__ = [
    "BoxPrompter",
    "ClassPrompts",
    "ClipPointPrompter",
    "ClipTokenPrompter",
    "Exemplar",
    "ExperimentalWarning",
    "GridGeometry",
    "GridPrompter",
    "InstancePoints",
    "MultimaskAdvice",
    "PromptMasks",
    "Prompter",
    "Sam3Prompter",
    "TextPromptAdapter",
    "similarity_to_points",
    "text_adapter_for",
]
