"""The one way prompts become masks: SAM cuts them, a selector picks, classes are attached.

Every pipeline decodes a prompter's :class:`~textseg.prompters.ClassPrompts` with
:func:`decode_prompts`, so every preset follows the same rules:

- SAM cuts one mask per prompt, or three candidates where the prompter advises multimask
  output (a lone point is ambiguous);
- among the candidates, the selector picks (default: SAM's predicted IoU; ``clip-points``:
  :class:`~textseg.pipelines.selectors.ClipMaskSelector`);
- :func:`attach_prompts` carries each prompt's class, name, score and data over to its mask,
  with one confidence rule (see :mod:`textseg.fields`).

A prompter that cuts its masks itself (SAM 3) returns them with its prompts
(``ClassPrompts.masks``); they are brought to the image's size here and SAM is not run.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv

from textseg.fields import CLASS_NAME, PROMPT_INDEX, SAM_IOU, SELECTION_SCORE
from textseg.masks import masks_to_boxes
from textseg.vocab import UNKNOWN, ClassesInput

if TYPE_CHECKING:
    from textseg.pipelines.selectors import MaskSelector
    from textseg.prompters.base import ClassPrompts
    from textseg.sam.cache import ImageEmbedding
    from textseg.sam.core import SamCore

__all__ = ["attach_prompts", "decode_prompts"]


def attach_prompts(detections: sv.Detections, class_prompts: ClassPrompts) -> sv.Detections:
    """Carry each prompt's class, name, score and data over to the masks cut from it.

    Args:
        detections: What ``SamCore.predict`` returned for ``class_prompts.prompts``; its
            ``data["prompt_index"]`` says which prompt each mask came from.
        class_prompts: The prompts.

    Returns:
        New detections: ``class_id`` the prompt's class (-1: not named yet),
        ``data["class_name"]`` its name (:data:`~textseg.vocab.UNKNOWN` for -1), ``confidence``
        the prompt's score where the prompter scores its prompts, else SAM's predicted IoU,
        and ``data`` extended by the prompts' fields. SAM's own fields are kept.

    Raises:
        ValueError: ``detections`` has no ``prompt_index`` or it does not fit the prompts.
    """
    if PROMPT_INDEX not in detections.data:
        raise ValueError(
            "detections: expected data['prompt_index'] (the output of SamCore.predict), "
            f"got data keys {sorted(detections.data)}"
        )
    index = np.asarray(detections.data[PROMPT_INDEX], dtype=np.int64)
    if len(index) and (index.min() < 0 or index.max() >= len(class_prompts)):
        raise ValueError(
            f"detections: prompt_index {int(index.max())} is out of range for "
            f"{len(class_prompts)} prompts; pass the ClassPrompts the detections were cut from"
        )
    class_id = class_prompts.class_id[index]
    prompt_score = class_prompts.confidence[index]
    # Masks SAM did not cut (a prompter's own, SAM 3) have no predicted IoU; their prompts are
    # all scored.
    sam_iou = np.asarray(detections.data.get(SAM_IOU, np.full(len(index), np.nan)), np.float32)
    names = np.array([*class_prompts.class_names, UNKNOWN], dtype=object)
    data = dict(detections.data)
    for key, value in class_prompts.data.items():
        data[key] = value[index]
    data[CLASS_NAME] = names[np.where(class_id >= 0, class_id, len(class_prompts.class_names))]
    return sv.Detections(
        xyxy=detections.xyxy,
        mask=detections.mask,
        confidence=np.where(np.isfinite(prompt_score), prompt_score, sam_iou).astype(np.float32),
        class_id=class_id,
        tracker_id=detections.tracker_id,
        data=data,
    )


def decode_prompts(
    sam: SamCore,
    image: np.ndarray,
    class_prompts: ClassPrompts,
    *,
    classes: ClassesInput | None = None,
    selector: MaskSelector | None = None,
    embedding: ImageEmbedding | None = None,
    refine: int = 0,
    **predict_options: Any,
) -> sv.Detections:
    """Masks for a prompter's prompts on one image, one per prompt, classes attached.

    Args:
        sam: The SAM core.
        image: ``(H, W, 3)`` uint8 RGB, the image the prompts were made for.
        class_prompts: What a prompter returned for ``image``.
        classes: The vocabulary (default: ``class_prompts.class_names``); the selector's texts.
        selector: Picks among multimask candidates (default: SAM's predicted IoU).
        embedding: The image's embedding from ``sam`` if already computed.
        refine: Refinement rounds (the SAM paper's zero-shot instance protocol): each decodes
            every prompt again, single-mask, with the previous round's low-res logits of its
            mask as the mask input.
        **predict_options: Passed to ``SamCore.predict`` (``min_region_area``, ...;
            ``multimask_output`` overrides the prompter's advice).

    Returns:
        ``sv.Detections`` as :func:`attach_prompts` describes, in prompt order, plus
        ``data["selection_score"]`` when a selector chose; empty for no prompts. Masks the
        prompter cut itself (``class_prompts.masks``) are resized to the image instead
        (``sam`` is not used; no selector or refinement applies to them).
    """
    if class_prompts.masks is not None:
        if refine:
            raise ValueError(
                "refine: these prompts come with their own masks (SAM 3), which SAM does not "
                "decode; refinement rounds apply to prompters whose prompts SAM decodes"
            )
        masks = class_prompts.masks.to_dense(image.shape[:2])
        dets = sv.Detections(
            xyxy=masks_to_boxes(masks),
            mask=masks,
            data={PROMPT_INDEX: np.arange(len(masks), dtype=np.int64)},
        )
        return attach_prompts(dets, class_prompts)
    source = embedding if embedding is not None else image
    multimask = predict_options.pop("multimask_output", class_prompts.multimask)
    if refine:
        predict_options["return_logits"] = True
    if selector is not None and multimask is not False and len(class_prompts):
        candidates = sam.predict(
            source,
            class_prompts.prompts,
            multimask_output=multimask,
            return_all=True,
            **predict_options,
        )
        rows, score = selector.select(
            image,
            candidates,
            class_prompts,
            classes if classes is not None else list(class_prompts.class_names),
        )
        dets = candidates[np.asarray(rows, np.int64)]
        dets.data[SELECTION_SCORE] = np.asarray(score, np.float32)
    else:
        dets = sam.predict(
            source, class_prompts.prompts, multimask_output=multimask, **predict_options
        )
    for _ in range(refine):
        # One row per prompt, in prompt order: the previous mask of each prompt refines it.
        prompts = dataclasses.replace(
            class_prompts.prompts, mask_inputs=dets.data.pop("low_res_logits")
        )
        refined = sam.predict(source, prompts, multimask_output=False, **predict_options)
        for key in (SELECTION_SCORE,):
            if key in dets.data:
                refined.data[key] = dets.data[key]
        dets = refined
    dets.data.pop("low_res_logits", None)
    return attach_prompts(dets, class_prompts)
