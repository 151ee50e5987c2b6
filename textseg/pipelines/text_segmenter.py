"""``TextSegmenter``: images + class names -> labelled, counted instance masks.

One pipeline composes a prompter (text -> SAM prompts), the cached SAM core (prompts -> masks)
and an optional labeler (masks -> verified names), then de-duplicates masks across classes and
counts them. Presets (:func:`list_presets`) build the usual compositions by name.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg._image import ImageInput, to_rgb_uint8
from textseg.io.rle import CompactMasks
from textseg.sam import AutomaticMaskGenerator, SamCore
from textseg.sam.postprocess import mask_iou_matrix
from textseg.vocab import Vocabulary

__all__ = ["Result", "TextSegmenter", "count_classes", "dedup_masks"]

UNKNOWN = "unknown"


@dataclass
class Result:
    """Segmentation of one image.

    Masks are kept run-length encoded (a few kB per instance instead of H*W bytes) and decoded
    when :attr:`detections` is read, so thousands of results fit in memory.

    Attributes:
        source: The image path, or ``"image[i]"`` for in-memory images.
        image_size: ``(H, W)``.
        counts: ``{class name: number of instances}`` for every class asked for (0 included;
            ``"unknown"`` only when the labeler could not name some masks).
        timings: Milliseconds per stage: ``encode``, ``prompt``, ``decode``, ``label``,
            ``total``.
    """

    source: str
    image_size: tuple[int, int]
    counts: dict[str, int]
    timings: dict[str, float]
    _boxes: sv.Detections = field(repr=False)
    _masks: CompactMasks = field(repr=False)

    @property
    def detections(self) -> sv.Detections:
        """``supervision.Detections``: ``mask`` (N, H, W) bool, ``xyxy`` (N, 4) float32,
        ``confidence``, ``class_id`` (-1 = unknown), ``data["class_name"]``,
        ``data["sam_iou"]``, ``data["clip_score"]`` (NaN without a labeler) and the prompter's
        fields (e.g. ``data["prompt"]``)."""
        dets = _copy(self._boxes)
        dets.mask = (
            self._masks.to_dense() if len(self._masks) else np.zeros((0, *self.image_size), bool)
        )
        return dets

    @property
    def masks(self) -> CompactMasks:
        """The masks, run-length encoded (``to_dense()`` or index to decode)."""
        return self._masks

    def __len__(self) -> int:
        return len(self._boxes)


def _copy(dets: sv.Detections) -> sv.Detections:
    return sv.Detections(
        xyxy=dets.xyxy.copy(),
        mask=None,
        confidence=None if dets.confidence is None else dets.confidence.copy(),
        class_id=None if dets.class_id is None else dets.class_id.copy(),
        data={k: np.asarray(v).copy() for k, v in dets.data.items()},
    )


def count_classes(class_names: Iterable[str], classes: Sequence[str]) -> dict[str, int]:
    """``{class: count}`` over ``classes`` (zeros included), plus ``"unknown"`` if any."""
    counts = dict.fromkeys(classes, 0)
    for name in class_names:
        name = str(name)
        counts[name] = counts.get(name, 0) + 1
    return counts


def dedup_masks(
    detections: sv.Detections,
    *,
    iou_threshold: float = 0.7,
    containment_threshold: float | None = 0.9,
    score_key: str | None = None,
) -> np.ndarray:
    """Indices of the masks kept by mask-level de-duplication across classes.

    Greedy, highest score first: a mask is dropped when a kept mask overlaps it with mask IoU
    above ``iou_threshold``, or covers more than ``containment_threshold`` of it while both have
    the same class (a part inside its whole of another class, e.g. "car door" in "car", is kept).
    Scores are ``detections.confidence`` (calibrated: detector or CLIP probability), or
    ``data[score_key]``; ties are broken by SAM's predicted IoU.

    Args:
        detections: With ``mask`` (N, H, W).

    Returns:
        ``(K,)`` int64 indices, highest score first.
    """
    n = len(detections)
    if n == 0:
        return np.zeros(0, np.int64)
    scores = (
        np.asarray(detections.data[score_key], float)
        if score_key
        else np.asarray(
            detections.confidence if detections.confidence is not None else np.ones(n), float
        )
    )
    tie = np.asarray(detections.data.get("sam_iou", np.zeros(n)), float)
    order = np.lexsort((-tie, -scores))
    iou, contain = mask_iou_matrix(detections.mask)
    class_id = detections.class_id if detections.class_id is not None else np.zeros(n, int)
    suppress = iou > iou_threshold
    if containment_threshold is not None:
        suppress |= (contain > containment_threshold) & (class_id[:, None] == class_id[None, :])
    np.fill_diagonal(suppress, False)
    keep: list[int] = []
    removed = np.zeros(n, bool)
    for i in order:
        if removed[i]:
            continue
        keep.append(int(i))
        removed |= suppress[i]
    return np.asarray(keep, np.int64)


class TextSegmenter:
    """Named-object segmentation: a prompter, the cached SAM core and an optional labeler.

    Args:
        prompter: Turns ``(image, vocabulary)`` into SAM prompts with class ids
            (``textseg.prompters``: BoxPrompter, ClipPointPrompter, ClipTokenPrompter,
            GridPrompter); or None with ``automatic`` for "segment everything".
        sam: The SAM core.
        labeler: Names or verifies masks with CLIP (``textseg.labelers.ClipLabeler``); needed to
            name masks of the automatic generator.
        automatic: An :class:`AutomaticMaskGenerator` used instead of a prompter.
        min_area: Drop masks with fewer pixels.
        dedup_iou: Mask IoU above which the lower-scoring of two masks is dropped (any class).
        dedup_containment: Fraction of a mask covered by a higher-scoring mask of the same class
            above which it is dropped (None: off).
        keep_unknown: Keep masks the labeler could not name (class "unknown", class_id -1).
    """

    def __init__(
        self,
        prompter: Any | None,
        sam: SamCore,
        labeler: Any | None = None,
        *,
        automatic: AutomaticMaskGenerator | None = None,
        min_area: int = 0,
        dedup_iou: float = 0.7,
        dedup_containment: float | None = 0.9,
        keep_unknown: bool = False,
    ) -> None:
        if prompter is None and automatic is None:
            raise ValueError("TextSegmenter: give a prompter, or automatic= for segment-everything")
        if automatic is not None and labeler is None:
            raise ValueError("TextSegmenter: automatic masks need a labeler to be named")
        if min_area < 0:
            raise ValueError(f"min_area: expected >= 0, got {min_area}")
        self.prompter = prompter
        self.sam = sam
        self.labeler = labeler
        self.automatic = automatic
        self.min_area = int(min_area)
        self.dedup_iou = dedup_iou
        self.dedup_containment = dedup_containment
        self.keep_unknown = keep_unknown

    @classmethod
    def from_preset(cls, name: str = "grounded-sam", **kwargs: Any) -> TextSegmenter:
        """Build a preset by name (see :func:`textseg.pipelines.list_presets`).

        Keyword arguments (``device``, ``dtype``, ``sam``, ``detector``, ``clip``,
        ``box_threshold``, ``min_area``...) override the preset's defaults.
        """
        from textseg.pipelines.presets import build_preset

        return build_preset(name, **kwargs)

    # ------------------------------------------------------------------ public API
    def segment(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: Sequence[str] | Vocabulary,
        *,
        negatives: Sequence[str] = (),
        synonyms: Mapping[str, Sequence[str] | str] | None = None,
        thresholds: Mapping[str, float] | None = None,
        box_threshold: float | None = None,
        min_area: int | None = None,
    ) -> Result | list[Result]:
        """Find, cut out, name and count every instance of ``classes``.

        Args:
            images: One image (path, PIL image, ``(H, W, 3)`` uint8 RGB array) or a list.
            classes: Class names (``class_id`` indexes them), or a ``Vocabulary``.
            negatives: Prompts whose matches are suppressed ("toy dog" when counting dogs).
            synonyms: ``{class: [other prompts]}``; each reports as its class.
            thresholds: ``{class: minimum score}``.
            box_threshold: Default minimum detector/prompter score for this call.
            min_area: Overrides the pipeline's ``min_area``.

        Returns:
            One :class:`Result` for one image, a list for a list (same order).
        """
        single = not isinstance(images, (list, tuple))
        vocab = self._vocabulary(classes, negatives, synonyms, thresholds)
        items = [images] if single else list(images)
        results = list(
            self.iter_segment(items, vocab, box_threshold=box_threshold, min_area=min_area)
        )
        return results[0] if single else results

    def iter_segment(
        self,
        images: Iterable[ImageInput],
        classes: Sequence[str] | Vocabulary,
        *,
        box_threshold: float | None = None,
        min_area: int | None = None,
    ) -> Iterator[Result]:
        """Results one image at a time (for long runs: memory does not grow with the count)."""
        vocab = Vocabulary.coerce(classes)
        for index, image in enumerate(images):
            yield self._segment_one(image, index, vocab, box_threshold, min_area)

    @staticmethod
    def _vocabulary(
        classes: Sequence[str] | Vocabulary,
        negatives: Sequence[str],
        synonyms: Mapping[str, Sequence[str] | str] | None,
        thresholds: Mapping[str, float] | None,
    ) -> Vocabulary:
        if isinstance(classes, Vocabulary):
            if negatives or synonyms or thresholds:
                raise ValueError(
                    "classes: a Vocabulary already carries negatives, synonyms and thresholds; "
                    "pass them to Vocabulary(...) instead"
                )
            return classes
        return Vocabulary(classes, synonyms=synonyms, negatives=negatives, thresholds=thresholds)

    # ------------------------------------------------------------------ one image
    def _segment_one(
        self,
        image: ImageInput,
        index: int,
        vocab: Vocabulary,
        box_threshold: float | None,
        min_area: int | None,
    ) -> Result:
        source = str(image) if isinstance(image, (str, Path)) else f"image[{index}]"
        start = time.perf_counter()
        array = to_rgb_uint8(image, name=source)
        h, w = array.shape[:2]
        timings = dict.fromkeys(("encode", "prompt", "decode", "label"), 0.0)

        t = time.perf_counter()
        emb = self.sam.encode(array)
        timings["encode"] = _ms(t)

        if self.automatic is not None:
            t = time.perf_counter()
            dets = self.automatic.generate(array)
            timings["decode"] = _ms(t)
            dets.class_id = np.full(len(dets), -1, np.int64)
            dets.data["class_name"] = np.full(len(dets), UNKNOWN, dtype=object)
        else:
            t = time.perf_counter()
            cp = self._prompts(array, vocab, box_threshold)
            timings["prompt"] = _ms(t)
            t = time.perf_counter()
            dets = self._decode(emb, cp, vocab)
            timings["decode"] = _ms(t)

        if self.labeler is not None and len(dets):
            t = time.perf_counter()
            dets = self.labeler.label(array, dets, vocab)
            timings["label"] = _ms(t)
        dets = self._finish(dets, min_area)
        timings["total"] = _ms(start)
        names = [n for n in dets.data["class_name"]]
        counts = count_classes(names, vocab.names)
        masks = CompactMasks.from_dense(dets.mask) if len(dets) else CompactMasks([], h, w)
        boxes = _copy(dets)
        return Result(source, (h, w), counts, timings, boxes, masks)

    def _prompts(self, image: np.ndarray, vocab: Vocabulary, box_threshold: float | None) -> Any:
        prompter = self.prompter
        if box_threshold is not None:
            if not hasattr(prompter, "box_threshold"):
                raise ValueError(
                    f"box_threshold: the {type(prompter).__name__} prompter has no box threshold"
                )
            # A per-call override on a shallow copy: the pipeline's prompter is not changed.
            prompter = copy.copy(prompter)
            prompter.box_threshold = box_threshold
        return prompter.prompts(image, vocab)

    def _decode(self, emb: Any, cp: Any, vocab: Vocabulary) -> sv.Detections:
        h, w = emb.original_size
        n = len(cp.class_id)
        if n == 0:
            return _empty(h, w)
        dets = self.sam.predict(emb, cp.prompts, multimask_output=cp.multimask)
        idx = dets.data["prompt_index"]
        class_id = np.asarray(cp.class_id, np.int64)[idx]
        dets.class_id = class_id
        dets.confidence = np.asarray(cp.confidence, np.float32)[idx]
        names = np.array([*vocab.names, UNKNOWN], dtype=object)
        dets.data["class_name"] = names[np.where(class_id >= 0, class_id, len(vocab.names))]
        for key, value in cp.data.items():
            if key not in dets.data and len(value) == n:
                dets.data[key] = np.asarray(value)[idx]
        return dets

    def _finish(self, dets: sv.Detections, min_area: int | None) -> sv.Detections:
        n = len(dets)
        h, w = dets.mask.shape[1:] if dets.mask is not None else (0, 0)
        if "clip_score" not in dets.data:
            dets.data["clip_score"] = np.full(n, np.nan, np.float32)
        if n == 0:
            return dets
        keep = np.ones(n, bool)
        area = dets.mask.reshape(n, -1).sum(axis=1)
        keep &= area > 0
        limit = self.min_area if min_area is None else min_area
        if limit:
            keep &= area >= limit
        if not self.keep_unknown:
            keep &= dets.class_id >= 0
        dets = dets[keep]
        if len(dets) > 1:
            dets = dets[
                dedup_masks(
                    dets, iou_threshold=self.dedup_iou, containment_threshold=self.dedup_containment
                )
            ]
        if len(dets) == 0:
            return _empty(h, w, dets)
        return dets


def _empty(h: int, w: int, like: sv.Detections | None = None) -> sv.Detections:
    data: dict[str, np.ndarray] = {
        "class_name": np.zeros(0, dtype=object),
        "sam_iou": np.zeros(0, np.float32),
        "clip_score": np.zeros(0, np.float32),
    }
    if like is not None:
        data.update({k: np.asarray(v)[:0] for k, v in like.data.items()})
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        mask=np.zeros((0, h, w), bool),
        confidence=np.zeros(0, np.float32),
        class_id=np.zeros(0, np.int64),
        data=data,
    )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
