"""``TextSegmenter``: images + class names -> labelled, counted instance masks.

One pipeline composes a prompter (text -> SAM prompts), the cached SAM core (prompts -> masks,
:func:`~textseg.pipelines.decode.decode_prompts`), an optional mask selector and an optional
labeler (masks -> verified names), then de-duplicates masks across classes and counts them.
Presets (:func:`~textseg.pipelines.presets.list_presets`) build the usual compositions by name.

Memory is bounded in both directions that grow: prompts are decoded, labelled and run-length
encoded block by block (the dense masks of one block at a time, whatever the number of
prompts), and each step works at the resolution it needs (CLIP crops are cut small).
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

from textseg._detections import copy_detections
from textseg._image import ImageInput, to_rgb_uint8
from textseg.fields import CLASS_NAME, SAM_IOU
from textseg.io.counts import count_classes
from textseg.io.rle import CompactMasks
from textseg.labelers.base import Labeler
from textseg.masks import mask_iou_matrix
from textseg.pipelines.decode import decode_prompts
from textseg.pipelines.presets import build_components
from textseg.pipelines.selectors import MaskSelector
from textseg.prompters.base import ClassPrompts, Prompter
from textseg.sam import AutomaticMaskGenerator, SamCore
from textseg.validators import non_negative_int
from textseg.vocab import UNKNOWN, Vocabulary

__all__ = ["Result", "TextSegmenter", "dedup_masks"]

#: Default bytes of dense masks (bool, three candidates each at worst) decoded, labelled and
#: run-length encoded at a time for one image's prompts; the peak is a small multiple of it.
BLOCK_BYTES = 32 << 20


@dataclass
class Result:
    """Segmentation of one image.

    Masks are kept run-length encoded (a few kB per instance instead of H*W bytes): the
    exporters write these RLEs as they are, and :attr:`detections` decodes them on demand.

    Attributes:
        source: The image path, or ``"image[i]"`` for in-memory images.
        image_size: ``(H, W)``.
        counts: ``{class name: number of instances}`` for every class asked for (0 included;
            ``"unknown"`` only when the labeler could not name some masks and they are kept).
        timings: Milliseconds per stage: ``encode``, ``prompt``, ``decode``, ``label``,
            ``dedup``, ``total``.
    """

    source: str
    image_size: tuple[int, int]
    counts: dict[str, int]
    timings: dict[str, float]
    _boxes: sv.Detections = field(repr=False)
    _masks: CompactMasks = field(repr=False)

    @property
    def detections(self) -> sv.Detections:
        """``supervision.Detections`` with the masks decoded (``mask`` (N, H, W) bool) and the
        fields of :data:`textseg.fields.FIELDS` (``confidence``, ``class_id``,
        ``data["class_name"]``, ``data["sam_iou"]``...)."""
        dets = self.boxes
        dets.mask = (
            self._masks.to_dense() if len(self._masks) else np.zeros((0, *self.image_size), bool)
        )
        return dets

    @property
    def boxes(self) -> sv.Detections:
        """The detections without masks (``mask`` None): boxes, scores, classes and fields."""
        return copy_detections(self._boxes, mask=False)

    @property
    def masks(self) -> CompactMasks:
        """The masks, run-length encoded (``to_dense()`` or index to decode)."""
        return self._masks

    def __len__(self) -> int:
        return len(self._boxes)


def dedup_masks(
    detections: sv.Detections,
    *,
    iou_threshold: float = 0.7,
    containment_threshold: float | None = 0.9,
    score_key: str | None = None,
    masks: CompactMasks | None = None,
) -> np.ndarray:
    """Indices of the masks kept by mask-level de-duplication across classes.

    Greedy, highest score first: a mask is dropped when a kept mask overlaps it with mask IoU
    above ``iou_threshold``, or covers more than ``containment_threshold`` of it while both have
    the same class (a part inside its whole of another class, e.g. "car door" in "car", is kept).
    Scores are ``detections.confidence``, or ``data[score_key]``; ties are broken by SAM's
    predicted IoU.

    Args:
        detections: With ``mask`` (N, H, W), unless ``masks`` gives them.
        masks: The N masks run-length encoded (large images: no dense copy is made).

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
    tie = np.asarray(detections.data.get(SAM_IOU, np.zeros(n)), float)
    order = np.lexsort((-tie, -scores))
    iou, contain = mask_iou_matrix(masks if masks is not None else np.asarray(detections.mask))
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
    """Named-object segmentation: a prompter, the cached SAM core, a selector and a labeler.

    Args:
        prompter: Turns ``(image, vocabulary)`` into SAM prompts with class ids
            (``textseg.prompters``: BoxPrompter, ClipPointPrompter, ClipTokenPrompter,
            GridPrompter); or None with ``automatic`` for "segment everything".
        sam: The SAM core.
        labeler: Names or verifies masks (``textseg.labelers.ClipLabeler``); needed to name
            masks of the automatic generator.
        selector: Picks among SAM's candidates for ambiguous prompts
            (``textseg.pipelines.ClipMaskSelector``); default SAM's predicted IoU.
        automatic: An :class:`AutomaticMaskGenerator` used instead of a prompter.
        masker: A model that returns classed masks itself, used instead of a prompter and SAM
            (``masker.segment(image, vocabulary) -> Detections`` with ``mask`` and ``class_id``
            indexing the vocabulary; e.g. a trained :class:`textseg.train.Specialist`).
            ``sam`` is then None; min_area, the labeler, de-duplication and counts apply as
            for SAM's masks.
        min_area: Drop masks with fewer pixels.
        dedup_iou: Mask IoU above which the lower-scoring of two masks is dropped (any class).
        dedup_containment: Fraction of a mask covered by a higher-scoring mask of the same class
            above which it is dropped (None: off).
        keep_unknown: Keep masks the labeler could not name (class "unknown", class_id -1).
        refine: Refinement rounds (the SAM paper's zero-shot instance protocol): each round
            decodes the same prompt again with the previous round's low-res mask logits as the
            mask input.
        block_bytes: Memory budget of dense masks per block of prompts: an image's prompts
            are decoded, labelled and run-length encoded a block at a time, so memory does not
            grow with their number (nor with pixels x instances).
    """

    def __init__(
        self,
        prompter: Prompter | None,
        sam: SamCore | None,
        labeler: Labeler | None = None,
        *,
        selector: MaskSelector | None = None,
        automatic: AutomaticMaskGenerator | None = None,
        masker: Any | None = None,
        min_area: int = 0,
        dedup_iou: float = 0.7,
        dedup_containment: float | None = 0.9,
        keep_unknown: bool = False,
        refine: int = 0,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        if masker is not None:
            if prompter is not None or automatic is not None or sam is not None:
                raise ValueError(
                    "TextSegmenter: masker= replaces the prompter and SAM; give "
                    "prompter=None, sam=None and no automatic="
                )
            if not callable(getattr(masker, "segment", None)):
                raise TypeError(
                    f"masker: expected an object with segment(image, classes) -> "
                    f"Detections, got {type(masker).__name__}"
                )
        elif prompter is None and automatic is None:
            raise ValueError("TextSegmenter: give a prompter, or automatic= for segment-everything")
        if prompter is not None and automatic is not None:
            raise ValueError("TextSegmenter: give a prompter or automatic=, not both")
        if automatic is not None and labeler is None:
            raise ValueError("TextSegmenter: automatic masks need a labeler to be named")
        if masker is None and not (
            callable(getattr(sam, "encode", None)) and callable(getattr(sam, "predict", None))
        ):
            raise TypeError(f"sam: expected a textseg.sam.SamCore, got {type(sam).__name__}")
        min_area = non_negative_int(min_area, "min_area")
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine: expected an integer >= 0 (rounds), got {refine!r}")
        if refine and getattr(prompter, "cuts_masks", False):
            raise ValueError(
                f"refine: the {type(prompter).__name__} cuts its masks itself (SAM 3), SAM does "
                f"not decode them; refinement rounds apply to box and point presets"
            )
        check_sam = getattr(prompter, "check_sam", None)
        if check_sam is not None:  # a prompter made for particular SAMs (token prompts)
            check_sam(sam)
        self.prompter = prompter
        self.sam = sam
        self.labeler = labeler
        self.selector = selector
        self.automatic = automatic
        self.masker = masker
        self.min_area = min_area
        self.dedup_iou = dedup_iou
        self.dedup_containment = dedup_containment
        self.keep_unknown = keep_unknown
        self.refine = refine
        if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) or block_bytes < 1:
            raise ValueError(f"block_bytes: expected a positive integer, got {block_bytes!r}")
        self.block_bytes = block_bytes

    @classmethod
    def from_preset(cls, name: str = "grounded-sam", **options: Any) -> TextSegmenter:
        """Build a preset by name (:func:`textseg.pipelines.list_presets`).

        Keyword arguments (``tiny``, ``device``, ``dtype``, ``sam``, ``sam_checkpoint``,
        ``detector``, ``clip``, ``box_threshold``, ``min_area``, ``refine``...) override the
        preset's defaults; see :func:`textseg.pipelines.presets.build_components`.
        """
        return cls(**build_components(name, **options))

    def __repr__(self) -> str:
        if self.masker is not None:
            return f"TextSegmenter(masker={self.masker!r})"
        parts = [repr(self.prompter or self.automatic), self.sam.name]
        if self.selector is not None:
            parts.append(repr(self.selector))
        if self.labeler is not None:
            parts.append(repr(self.labeler))
        return f"TextSegmenter({', '.join(parts)})"

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
        batch_size: int = 1,
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
            batch_size: Images encoded and prompted together (see :meth:`iter_segment`).

        Returns:
            One :class:`Result` for one image, a list for a list (same order).
        """
        single = not isinstance(images, (list, tuple))
        vocab = self._vocabulary(classes, negatives, synonyms, thresholds)
        items = [images] if single else list(images)
        results = list(
            self.iter_segment(
                items, vocab, box_threshold=box_threshold, min_area=min_area, batch_size=batch_size
            )
        )
        return results[0] if single else results

    def iter_segment(
        self,
        images: Iterable[ImageInput],
        classes: Sequence[str] | Vocabulary,
        *,
        box_threshold: float | None = None,
        min_area: int | None = None,
        batch_size: int = 1,
    ) -> Iterator[Result]:
        """Results one image at a time (for long runs: memory does not grow with the count).

        Args:
            batch_size: Images read, encoded by SAM (``SamCore.encode_many``) and prompted by
                the detector (``prompts_many``, where the prompter has it) together: on a GPU
                the batched forward passes are faster; on a CPU they are about as fast as one
                image at a time. Results still come one by one, in order.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if min_area is not None:
            min_area = non_negative_int(min_area, "min_area")
        vocab = Vocabulary.coerce(classes)
        batch: list[tuple[int, ImageInput]] = []
        for index, image in enumerate(images):
            batch.append((index, image))
            if len(batch) == batch_size:
                yield from self._segment_batch(batch, vocab, box_threshold, min_area)
                batch = []
        if batch:
            yield from self._segment_batch(batch, vocab, box_threshold, min_area)

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

    # ------------------------------------------------------------------ images
    def _segment_batch(
        self,
        batch: list[tuple[int, ImageInput]],
        vocab: Vocabulary,
        box_threshold: float | None,
        min_area: int | None,
    ) -> Iterator[Result]:
        """Read, encode and prompt a batch of images together, then finish each one."""
        start = time.perf_counter()
        sources = [str(im) if isinstance(im, (str, Path)) else f"image[{i}]" for i, im in batch]
        arrays = [to_rgb_uint8(im, name=src) for (_, im), src in zip(batch, sources)]
        n = len(arrays)
        shared = dict.fromkeys(("encode", "prompt"), 0.0)  # batch stages, split per image
        embeddings: list[Any] = [None] * n
        # A specialist (masker) or a prompter that cuts its masks itself (SAM 3) needs no
        # SAM embedding.
        if self.masker is None and not getattr(self.prompter, "cuts_masks", False):
            t = time.perf_counter()
            if n == 1:
                embeddings = [self.sam.encode(arrays[0])]
            else:
                embeddings = self.sam.encode_many(arrays, batch_size=n)
            shared["encode"] = _ms(t) / n
        prompts: list[ClassPrompts | None] = [None] * n
        if self.masker is None and self.automatic is None:
            t = time.perf_counter()
            prompts = self._prompts(arrays, vocab, box_threshold)
            shared["prompt"] = _ms(t) / n
        setup = (time.perf_counter() - start) * 1000.0 / n
        for k in range(n):
            yield self._segment_one(
                arrays[k], sources[k], embeddings[k], prompts[k], vocab, min_area, shared, setup
            )

    def _segment_one(
        self,
        array: np.ndarray,
        source: str,
        emb: Any,
        prompts: ClassPrompts | None,
        vocab: Vocabulary,
        min_area: int | None,
        shared: dict[str, float],
        setup_ms: float,
    ) -> Result:
        start = time.perf_counter()
        h, w = array.shape[:2]
        timings = {**shared, "decode": 0.0, "label": 0.0, "dedup": 0.0}
        blocks: list[tuple[sv.Detections, CompactMasks]] = []
        if self.masker is not None:  # classed masks straight from the model (a specialist)
            t = time.perf_counter()
            found = self.masker.segment(array, vocab)
            timings["decode"] = _ms(t)
            blocks.append(self._finish_block(array, found, vocab, min_area, timings))
        elif self.automatic is not None:
            t = time.perf_counter()
            found = self.automatic.generate(array)
            timings["decode"] = _ms(t)
            found.class_id = np.full(len(found), -1, np.int64)
            found.data[CLASS_NAME] = np.full(len(found), UNKNOWN, dtype=object)
            for rows in _blocks(len(found), h, w, self.block_bytes):
                blocks.append(self._finish_block(array, found[rows], vocab, min_area, timings))
        else:
            assert prompts is not None  # made by _segment_batch
            for rows in _blocks(len(prompts), h, w, self.block_bytes):
                t = time.perf_counter()
                dets = decode_prompts(
                    self.sam,
                    array,
                    prompts.select(rows),
                    classes=vocab,
                    selector=self.selector,
                    embedding=emb,
                    refine=self.refine,
                )
                timings["decode"] += _ms(t)
                blocks.append(self._finish_block(array, dets, vocab, min_area, timings))

        t = time.perf_counter()
        boxes, masks = _concatenate(blocks, h, w)
        if len(boxes) > 1 and (self.dedup_iou < 1.0 or self.dedup_containment is not None):
            keep = dedup_masks(
                boxes,
                iou_threshold=self.dedup_iou,
                containment_threshold=self.dedup_containment,
                masks=masks,
            )
            boxes, masks = boxes[keep], masks[keep]
        timings["dedup"] = _ms(t)
        timings["total"] = setup_ms + _ms(start)
        counts = count_classes(boxes, vocab.names)
        return Result(source, (h, w), counts, timings, boxes, masks)

    def _prompts(
        self, images: list[np.ndarray], vocab: Vocabulary, box_threshold: float | None
    ) -> list[ClassPrompts]:
        """One ``ClassPrompts`` per image: ``prompts_many`` in one call where the prompter has
        it (a detector batch), else image by image."""
        prompter = self.prompter
        assert prompter is not None  # checked in __init__
        if box_threshold is not None:
            if not hasattr(prompter, "box_threshold"):
                raise ValueError(
                    f"box_threshold: the {type(prompter).__name__} prompter has no box threshold"
                )
            # A per-call override on a shallow copy: the pipeline's prompter is not changed.
            prompter = copy.copy(prompter)
            prompter.box_threshold = box_threshold  # type: ignore[attr-defined]
        many = getattr(prompter, "prompts_many", None)
        if len(images) > 1 and callable(many):
            return list(many(images, vocab))
        return [prompter.prompts(image, vocab) for image in images]

    def _finish_block(
        self,
        image: np.ndarray,
        dets: sv.Detections,
        vocab: Vocabulary,
        min_area: int | None,
        timings: dict[str, float],
    ) -> tuple[sv.Detections, CompactMasks]:
        """Drop empty and small masks, label what is left, run-length encode the masks."""
        h, w = image.shape[:2]
        limit = self.min_area if min_area is None else min_area
        if len(dets):
            area = np.asarray(dets.mask).reshape(len(dets), -1).sum(axis=1)
            dets = _subset(dets, (area > 0) & (area >= limit))
        if self.labeler is not None and len(dets):
            t = time.perf_counter()
            dets = self.labeler.label(image, dets, vocab)
            timings["label"] += _ms(t)
        if not self.keep_unknown and len(dets):
            dets = _subset(dets, np.asarray(dets.class_id) >= 0)
        masks = CompactMasks.from_dense(dets.mask) if len(dets) else CompactMasks([], h, w)
        return copy_detections(dets, mask=False), masks


def _subset(dets: sv.Detections, keep: np.ndarray) -> sv.Detections:
    """``dets[keep]``, without copying the masks when everything is kept."""
    return dets if keep.all() else dets[keep]


def _blocks(n: int, h: int, w: int, budget: int) -> list[np.ndarray]:
    """Row blocks whose dense masks (three candidates each, at worst) fit ``budget`` bytes."""
    size = max(1, budget // max(1, 3 * h * w))
    return [np.arange(s, min(n, s + size)) for s in range(0, n, size)] or [np.arange(0)]


def _concatenate(
    blocks: list[tuple[sv.Detections, CompactMasks]], h: int, w: int
) -> tuple[sv.Detections, CompactMasks]:
    parts = [b for b in blocks if len(b[0])]
    if not parts:
        return _empty(blocks[0][0] if blocks else None), CompactMasks([], h, w)
    boxes = sv.Detections.merge([b for b, _ in parts])
    return boxes, CompactMasks.concatenate([m for _, m in parts])


def _empty(like: sv.Detections | None) -> sv.Detections:
    data: dict[str, np.ndarray] = {CLASS_NAME: np.zeros(0, dtype=object)}
    if like is not None:
        data.update({k: np.asarray(v)[:0] for k, v in like.data.items()})
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        confidence=np.zeros(0, np.float32),
        class_id=np.zeros(0, np.int64),
        data=data,
    )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
