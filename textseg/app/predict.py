"""What answers the app's clicks and boxes: SAM's decoder on the image's cached embedding.

:class:`ClickPredictor` turns a :class:`~textseg.app.draft.Draft`'s clicks and box into SAM
prompts and returns the draft with its candidate masks, through the SAM core's own decoder
(``"torch"``) or SAM's decoder exported to ONNX (``"onnx"``); both give the same masks.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import replace
from typing import Any

import numpy as np

from textseg.app.draft import Draft
from textseg.fields import SAM_IOU
from textseg.sam import SamCore
from textseg.sam.cache import ImageEmbedding
from textseg.sam.postprocess import remove_small_regions
from textseg.sam.prompts import Prompts

__all__ = ["ClickPredictor", "resolve_segmenter"]

#: One exported ONNX decoder per SAM core (an export takes seconds; sessions share it).
_ONNX_DECODERS: weakref.WeakKeyDictionary[SamCore, Any] = weakref.WeakKeyDictionary()


class ClickPredictor:
    """SAM's candidate masks for a draft's prompts.

    Args:
        core: The SAM core (its encoder made the embeddings given to :meth:`predict`).
        decoder: ``"torch"``, ``"onnx"`` or ``"auto"`` (see ``AnnotationSession``).
        min_region_area: Remove islands and fill holes smaller than this many pixels (0: off).
    """

    def __init__(self, core: SamCore, decoder: str = "torch", min_region_area: int = 0) -> None:
        if min_region_area < 0:
            raise ValueError(f"min_region_area: expected >= 0 pixels, got {min_region_area}")
        self.core = core
        self.min_region_area = int(min_region_area)
        #: ``"torch"`` or ``"onnx"``: the decoder that answers.
        self.decoder, self._onnx = _click_decoder(decoder, core)

    def predict(self, embedding: ImageEmbedding, draft: Draft) -> Draft:
        """The draft with SAM's candidates for its clicks and box (three for a lone click,
        else one; the best predicted IoU selected), or with none when it has no prompt."""
        if not draft.clicks and draft.box is None:
            return replace(draft, masks=None, scores=None, selected=0, latency_ms=None)
        start = time.perf_counter()
        if self._onnx is not None:
            masks, scores = self._predict_onnx(embedding, draft)
        else:
            dets = self.core.predict(
                embedding,
                _prompts(draft),
                multimask_output="auto",
                return_all=True,
                min_region_area=self.min_region_area,
            )
            masks, scores = dets.mask, np.asarray(dets.data[SAM_IOU], np.float32)
        latency = (time.perf_counter() - start) * 1000.0
        text = draft.origin == "text"
        return replace(
            draft,
            masks=masks,
            scores=scores,
            selected=int(np.argmax(scores)),
            origin="text" if text else ("box" if draft.box else "click"),
            edited=text,
            latency_ms=latency,
        )

    def _predict_onnx(
        self, embedding: ImageEmbedding, draft: Draft
    ) -> tuple[np.ndarray, np.ndarray]:
        """The draft's candidates from the ONNX decoder: the same rule as the torch path
        (three masks for a lone click, else one) and the same upsampling (the core's)."""
        prompts = _prompts(draft)
        low, iou = self._onnx.decode(  # type: ignore[union-attr]
            embedding,
            points=prompts.points,
            point_labels=prompts.point_labels,
            boxes=prompts.boxes,
        )
        tokens = slice(1, None) if len(draft.clicks) == 1 and draft.box is None else slice(0, 1)
        logits = self.core.upsample(embedding, low[0, tokens])  # type: ignore[arg-type]
        masks = (logits > self.core.backend.mask_threshold).numpy()
        if self.min_region_area > 0:
            for i, mask in enumerate(masks):
                mask, _ = remove_small_regions(mask, self.min_region_area, "holes")
                masks[i], _ = remove_small_regions(mask, self.min_region_area, "islands")
        return masks, iou[0, tokens].numpy().astype(np.float32)


def _prompts(draft: Draft) -> Prompts:
    box = None if draft.box is None else np.asarray([draft.box], np.float32)
    if not draft.clicks:
        return Prompts(boxes=box)
    points = np.asarray([[(c.x, c.y) for c in draft.clicks]], np.float32)
    labels = np.asarray([[int(c.positive) for c in draft.clicks]], np.int32)
    return Prompts(points=points, point_labels=labels, boxes=box)


def _click_decoder(name: str, core: SamCore) -> tuple[str, Any | None]:
    """``("torch", None)`` or ``("onnx", OnnxSamDecoder)`` for the ``decoder`` argument."""
    if name not in ("auto", "torch", "onnx"):
        raise ValueError(f"decoder: expected 'auto', 'torch' or 'onnx', got {name!r}")
    if name == "torch":
        return "torch", None
    from segment_anything.modeling import Sam

    usable = isinstance(getattr(core.backend, "model", None), Sam) and core.device.type == "cpu"
    if name == "auto":
        import importlib.util

        have = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
        # An int8 or half-precision core keeps its own decoder: the ONNX graph is float32.
        if not (usable and have and core.precision.name == "float32"):
            return "torch", None
    elif not usable:
        raise ValueError(
            f"decoder: 'onnx' needs a segment_anything SAM on the CPU, this core runs "
            f"{type(getattr(core.backend, 'model', core.backend)).__name__} on {core.device}; "
            f"use decoder='torch'"
        )
    decoder = _ONNX_DECODERS.get(core)
    if decoder is None:
        from textseg.sam.onnx import OnnxSamDecoder

        decoder = _ONNX_DECODERS[core] = OnnxSamDecoder(core)
    return "onnx", decoder


def resolve_segmenter(
    segmenter: Any, device: str, pretrained: bool, sam: str | None
) -> tuple[Any | None, SamCore]:
    """``(TextSegmenter or None, SamCore)`` from a pipeline, a bare core or a preset name."""
    from textseg.pipelines import TextSegmenter

    if isinstance(segmenter, str):
        overrides = {"sam": sam} if sam else {}
        segmenter = TextSegmenter.from_preset(
            segmenter, device=device, pretrained=pretrained, **overrides
        )
    if isinstance(segmenter, SamCore):
        return None, segmenter
    if isinstance(segmenter, TextSegmenter):
        return segmenter, segmenter.sam
    raise TypeError(
        f"segmenter: expected a TextSegmenter, a SamCore or a preset name, got "
        f"{type(segmenter).__name__}"
    )
