"""Text -> SAM prompts: detector boxes, a point grid, dense-CLIP points, CLIP prompt tokens.

Every prompter has one method, ``prompts(image, classes) -> ClassPrompts`` (the
:class:`Prompter` protocol); :func:`predict_masks` cuts the masks with the SAM core and
attaches the classes.

- :class:`BoxPrompter`: a text detector's boxes (Grounding DINO, OWLv2) as box prompts.
- :class:`GridPrompter`: the automatic generator's point grid, unnamed ("segment everything,
  then name it").
- :class:`ClipPointPrompter`: training-free points from dense CLIP similarity maps, with
  :func:`choose_by_clip` picking SAM's candidate mask by CLIP score.
- :class:`ClipTokenPrompter`: the SAM paper's text prompt through a trained
  :class:`TextPromptAdapter` (EXPERIMENTAL; train with :mod:`.train_text_prompt`).
"""

from textseg.prompters.base import (
    ClassPrompts,
    MultimaskAdvice,
    Prompter,
    attach_prompts,
    predict_masks,
)
from textseg.prompters.box import BoxPrompter
from textseg.prompters.clip_points import (
    ClipPointPrompter,
    GridGeometry,
    InstancePoints,
    choose_by_clip,
    class_text_embeddings,
    masked_crop,
    similarity_to_points,
)
from textseg.prompters.clip_tokens import (
    ClipTokenPrompter,
    ExperimentalWarning,
    TextPromptAdapter,
    text_adapter_for,
)
from textseg.prompters.grid import GridPrompter

__all__ = [
    "BoxPrompter",
    "ClassPrompts",
    "ClipPointPrompter",
    "ClipTokenPrompter",
    "ExperimentalWarning",
    "GridGeometry",
    "GridPrompter",
    "InstancePoints",
    "MultimaskAdvice",
    "Prompter",
    "TextPromptAdapter",
    "attach_prompts",
    "choose_by_clip",
    "class_text_embeddings",
    "masked_crop",
    "predict_masks",
    "similarity_to_points",
    "text_adapter_for",
]
