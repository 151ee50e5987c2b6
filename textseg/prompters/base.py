"""The text -> SAM prompts interface and the result every prompter returns.

A :class:`Prompter` turns one image and a class list into :class:`ClassPrompts`: N SAM prompts
(:class:`~textseg.sam.Prompts`, in the original image's pixels) and, per prompt, the class it
stands for, a score and extra fields. The SAM core then cuts one mask per prompt (or three, see
:attr:`ClassPrompts.multimask`); :func:`textseg.pipelines.decode_prompts` runs that step and
carries the class information over to the masks. A prompter that cuts its masks itself (SAM 3,
:class:`~textseg.prompters.sam3.Sam3Prompter`) returns them in :attr:`ClassPrompts.masks`
(:class:`PromptMasks`, low resolution), and SAM does not decode them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from textseg._image import ImageInput
from textseg.sam.prompts import Prompts
from textseg.vocab import ClassesInput

if TYPE_CHECKING:
    pass

__all__ = ["ClassPrompts", "MultimaskAdvice", "PromptMasks", "Prompter"]

#: How many masks the SAM core should cut per prompt: True (three candidates), False (one) or
#: ``"auto"`` (three for a lone point, else one; SAM's own advice).
MultimaskAdvice = bool | Literal["auto"]


def _empty_prompts() -> Prompts:
    return Prompts(boxes=np.zeros((0, 4), np.float32))


@dataclass(frozen=True)
class PromptMasks:
    """Masks a prompter cut itself, one per prompt, at the model's low resolution.

    Attributes:
        probs: ``(N, h, w)`` float32 mask probabilities in [0, 1] covering the whole image
            (the model's output grid stretched over the image, no padding), e.g. SAM 3's
            ``sigmoid(pred_masks)`` at 288x288.
        threshold: Probability above which a pixel is in the mask (SAM 3: 0.5).
    """

    probs: np.ndarray
    threshold: float = 0.5

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=np.float32)
        if probs.ndim != 3:
            raise ValueError(
                f"PromptMasks.probs: expected (N, h, w) probabilities, got {probs.shape}"
            )
        if probs.size and not (np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1):
            raise ValueError("PromptMasks.probs: expected finite probabilities in [0, 1]")
        object.__setattr__(self, "probs", probs)

    def __len__(self) -> int:
        return len(self.probs)

    def select(self, index: np.ndarray | slice) -> PromptMasks:
        """The masks at ``index`` (index array or slice)."""
        return PromptMasks(self.probs[index], self.threshold)

    def to_dense(self, size: tuple[int, int]) -> np.ndarray:
        """``(N, H, W)`` bool masks of an ``H x W`` image: the probabilities resized bilinearly
        (``align_corners=False``), then thresholded; what transformers' SAM 3 post-processing
        does. Resized a few masks at a time, so scratch memory stays bounded."""
        import torch
        import torch.nn.functional as F

        h, w = size
        out = np.zeros((len(self.probs), h, w), dtype=bool)
        step = max(1, (16 << 20) // max(1, h * w))
        for start in range(0, len(self.probs), step):
            block = torch.from_numpy(self.probs[start : start + step])[None]
            block = F.interpolate(block, size=(h, w), mode="bilinear", align_corners=False)[0]
            out[start : start + step] = (block > self.threshold).numpy()
        return out


@dataclass(frozen=True)
class ClassPrompts:
    """N SAM prompts for one image, each standing for one instance of a class.

    Attributes:
        prompts: The N prompts, coordinates in absolute pixels of the original image.
        class_id: ``(N,)`` int64 index into the vocabulary's class names; ``-1`` for a prompt
            not yet named (e.g. the points of :class:`~textseg.prompters.GridPrompter`, which
            a labeler names later).
        confidence: ``(N,)`` float32 score of each prompt (detector score, CLIP probability);
            NaN where the prompter does not score its prompts (grid points).
        data: Extra ``(N, ...)`` arrays, e.g. ``"class_name"`` (str), ``"prompt"`` (the text
            that matched), ``"box"`` ``(N, 4)`` XYXY, ``"point"`` ``(N, 2)`` XY.
        multimask: Advice for the SAM core's ``multimask_output``.
        class_names: The vocabulary's class names (what ``class_id`` indexes); empty when the
            prompter was given no classes.
        masks: The prompts' masks when the prompter cut them itself (SAM 3); None when SAM is
            to cut them (every other prompter).
    """

    prompts: Prompts = field(default_factory=_empty_prompts)
    class_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    data: dict[str, np.ndarray] = field(default_factory=dict)
    multimask: MultimaskAdvice = "auto"
    class_names: tuple[str, ...] = ()
    masks: PromptMasks | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompts, Prompts):
            raise TypeError(
                f"ClassPrompts.prompts: expected textseg.sam.Prompts, got "
                f"{type(self.prompts).__name__}"
            )
        n = len(self.prompts)
        class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        for name, value in (("class_id", class_id), ("confidence", confidence)):
            if len(value) != n:
                raise ValueError(
                    f"ClassPrompts.{name}: expected one value per prompt ({n}), got {len(value)}"
                )
        bad = (class_id < -1) | (class_id >= len(self.class_names))
        if bad.any():
            raise ValueError(
                f"ClassPrompts.class_id: expected -1 or 0 <= id < {len(self.class_names)} "
                f"(the number of class names), got {int(class_id[bad][0])}"
            )
        data: dict[str, np.ndarray] = {}
        for key, value in dict(self.data).items():
            array = np.asarray(value)
            if array.ndim == 0 or len(array) != n:
                raise ValueError(
                    f"ClassPrompts.data[{key!r}]: expected one row per prompt ({n}), got shape "
                    f"{array.shape}"
                )
            data[key] = array
        if self.multimask not in (True, False, "auto"):
            raise ValueError(
                f"ClassPrompts.multimask: expected True, False or 'auto', got {self.multimask!r}"
            )
        if self.masks is not None and (
            not isinstance(self.masks, PromptMasks) or len(self.masks) != n
        ):
            raise ValueError(
                f"ClassPrompts.masks: expected PromptMasks with one mask per prompt ({n}), got "
                f"{type(self.masks).__name__} of length {len(self.masks)}"
            )
        object.__setattr__(self, "class_id", class_id)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "class_names", tuple(self.class_names))

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def empty(
        cls,
        *,
        data_keys: Mapping[str, tuple[tuple[int, ...], Any]] | None = None,
        multimask: MultimaskAdvice = "auto",
        class_names: tuple[str, ...] = (),
    ) -> ClassPrompts:
        """No prompts (nothing found); not an error.

        Args:
            data_keys: ``{key: (trailing shape, dtype)}`` of the empty ``data`` arrays, so an
                empty result has the same fields as a non-empty one.
            multimask: The advice a non-empty result would give.
            class_names: The vocabulary's class names.
        """
        keys = data_keys or {}
        data = {key: np.zeros((0, *shape), dtype=dtype) for key, (shape, dtype) in keys.items()}
        return cls(data=data, multimask=multimask, class_names=tuple(class_names))

    def select(self, index: np.ndarray | slice) -> ClassPrompts:
        """The prompts at ``index`` (index array, boolean mask or slice), fields alike."""
        if isinstance(index, np.ndarray) and index.dtype == bool:
            index = np.flatnonzero(index)
        return ClassPrompts(
            prompts=self.prompts.select(index),
            class_id=self.class_id[index],
            confidence=self.confidence[index],
            data={k: v[index] for k, v in self.data.items()},
            multimask=self.multimask,
            class_names=self.class_names,
            masks=None if self.masks is None else self.masks.select(index),
        )


@runtime_checkable
class Prompter(Protocol):
    """Text -> SAM prompts.

    ``prompts(image, classes)`` takes one image (a path, PIL image or ``(H, W, 3)`` uint8 RGB
    array) and the class names (a list of str or a :class:`~textseg.vocab.Vocabulary`) and
    returns :class:`ClassPrompts` in the original image's pixels. Finding nothing is an empty
    result, not an error.
    """

    def prompts(self, image: ImageInput, classes: ClassesInput) -> ClassPrompts: ...
