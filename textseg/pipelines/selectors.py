"""Mask selectors: which of SAM's candidate masks stands for a prompt.

For an ambiguous prompt (a lone point) SAM cuts three candidate masks (whole, part, subpart).
By default the pipeline keeps the one SAM predicts best (its predicted IoU). A selector
replaces that choice: ``select(image, candidates, class_prompts, classes)`` gets every
candidate of every prompt and returns one row per prompt.

- :class:`ClipMaskSelector`: CLIP judges each candidate's masked region (pixels outside the
  mask blanked, :func:`textseg.clip.masked_crop`) against its prompt's class text, mixed with
  SAM's predicted IoU; the ``clip-points`` preset uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import supervision as sv
import torch

from textseg.clip.crops import masked_crop
from textseg.clip.text import DEFAULT_TEMPLATES, TextEmbedder
from textseg.fields import PROMPT_INDEX, SAM_IOU
from textseg.vocab import ClassesInput

if TYPE_CHECKING:
    from textseg.clip.encoders import ClipEncoder
    from textseg.prompters.base import ClassPrompts

__all__ = ["ClipMaskSelector", "MaskSelector"]


@runtime_checkable
class MaskSelector(Protocol):
    """Picks one of SAM's candidates per prompt.

    ``select(image, candidates, class_prompts, classes)``: ``image`` ``(H, W, 3)`` uint8 RGB;
    ``candidates`` what ``SamCore.predict(..., multimask_output=True, return_all=True)``
    returned for ``class_prompts.prompts`` (``mask`` ``(M, H, W)``, ``data["prompt_index"]``,
    ``data["sam_iou"]``); ``classes`` the vocabulary. Returns ``(N,)`` int64 row indices into
    ``candidates``, one per prompt in prompt order, and the ``(N,)`` float32 score of each
    choice (written to ``data["selection_score"]``).
    """

    def select(
        self,
        image: np.ndarray,
        candidates: sv.Detections,
        class_prompts: ClassPrompts,
        classes: ClassesInput,
    ) -> tuple[np.ndarray, np.ndarray]: ...


class ClipMaskSelector:
    """Chooses SAM's candidate by CLIP on the masked region, mixed with SAM's predicted IoU.

    Each candidate's masked crop is embedded with CLIP and compared with its prompt's class
    embedding (cosine ``s``). Within a prompt's candidates the cosines become probabilities at
    CLIP's own temperature, ``p = softmax(logit_scale * s)``, and the candidate with the
    highest ``clip_weight * p + (1 - clip_weight) * sam_iou`` is kept (``clip_weight`` 1: CLIP
    alone; 0: SAM's predicted IoU alone). Empty masks are never picked unless all candidates
    of a prompt are empty; prompts without a class (``class_id`` -1) are chosen by SAM's IoU.

    Args:
        clip: The CLIP encoder (:class:`textseg.clip.ClipEncoder`).
        templates: Text templates with one ``{}``.
        clip_weight: Weight of the CLIP probability in [0, 1].
        context: Context margin of the crops (see :func:`textseg.clip.masked_crop`).
        batch_size: Crops per CLIP forward pass.
    """

    def __init__(
        self,
        clip: ClipEncoder,
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        clip_weight: float = 0.5,
        context: float = 0.1,
        batch_size: int = 32,
    ) -> None:
        if not 0.0 <= float(clip_weight) <= 1.0:
            raise ValueError(f"clip_weight: expected a number in [0, 1], got {clip_weight}")
        if context < 0:
            raise ValueError(f"context: expected a fraction >= 0, got {context}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.clip = clip
        self.clip_weight = float(clip_weight)
        self.context = float(context)
        self.batch_size = batch_size
        self._text = TextEmbedder(clip, templates, background=())

    def __repr__(self) -> str:
        return (
            f"ClipMaskSelector({getattr(self.clip, 'name', '?')!r}, clip_weight={self.clip_weight})"
        )

    def _crop_embeddings(
        self, image: np.ndarray, masks: np.ndarray
    ) -> tuple[torch.Tensor, np.ndarray]:
        """``(M, D)`` CLIP embeddings of the masked crops (zero rows for empty masks) and the
        ``(M,)`` "mask is empty" flags."""
        crops = [
            masked_crop(
                image,
                m,
                fill=self.clip.pixel_mean,
                context=self.context,
                max_size=int(self.clip.input_size),
            )
            for m in masks
        ]
        empty = np.array([c is None for c in crops], bool)
        present = [c for c in crops if c is not None]
        if not present:
            return torch.zeros((len(masks), 0)), empty
        emb = self.clip.encode_images(present, batch_size=self.batch_size)
        emb = torch.as_tensor(emb).detach().float().cpu()
        out = torch.zeros((len(masks), emb.shape[1]))
        out[torch.from_numpy(np.flatnonzero(~empty))] = emb
        return out, empty

    def select(
        self,
        image: np.ndarray,
        candidates: sv.Detections,
        class_prompts: ClassPrompts,
        classes: ClassesInput,
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :class:`MaskSelector`.

        Raises:
            ValueError: Candidates without ``prompt_index``/``sam_iou`` or masks, or masks that
                are not the image's size.
        """
        for key in (PROMPT_INDEX, SAM_IOU):
            if key not in candidates.data:
                raise ValueError(
                    f"candidates: expected data[{key!r}] (SamCore.predict output with "
                    f"return_all=True), got keys {sorted(candidates.data)}"
                )
        if candidates.mask is None or candidates.mask.shape[1:] != image.shape[:2]:
            raise ValueError(
                "candidates: expected masks at the image's size (SamCore.predict output for "
                "this image)"
            )
        prompt_index = np.asarray(candidates.data[PROMPT_INDEX], np.int64)
        sam_iou = np.asarray(candidates.data[SAM_IOU], np.float64)
        n = len(class_prompts)
        class_id = class_prompts.class_id[prompt_index]
        named = class_id >= 0
        cosine = np.zeros(len(candidates))
        empty = ~np.asarray(candidates.mask).reshape(len(candidates), -1).any(axis=1)
        if named.any():
            text = self._text(classes).classes
            emb, crop_empty = self._crop_embeddings(image, np.asarray(candidates.mask)[named])
            if not crop_empty.all():
                cosine[named] = (emb * text[class_id[named]]).sum(dim=1).double().numpy()
        rows = np.zeros(n, np.int64)
        score = np.zeros(n, np.float32)
        scale = float(self.clip.logit_scale)
        for p in range(n):
            mine = np.flatnonzero(prompt_index == p)
            if len(mine) == 0:
                raise ValueError(f"candidates: no candidate for prompt {p}")
            valid = mine[~empty[mine]]
            if len(valid) == 0 or class_prompts.class_id[p] < 0:
                pool = valid if len(valid) else mine
                best = pool[np.argmax(sam_iou[pool])]
                rows[p], score[p] = best, sam_iou[best]
                continue
            logits = scale * cosine[valid]
            prob = np.exp(logits - logits.max())
            prob /= prob.sum()
            mixed = self.clip_weight * prob + (1.0 - self.clip_weight) * sam_iou[valid]
            best = int(np.argmax(mixed))
            rows[p], score[p] = valid[best], mixed[best]
        return rows, score
