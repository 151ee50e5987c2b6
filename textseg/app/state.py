"""The annotation session: every interaction of the app, as a plain Python object.

:class:`AnnotationSession` holds a folder of images, the object being outlined now (the
*draft*: clicks, a box and SAM's candidate masks), the text pipeline's proposals waiting for
review, and the accepted masks, which are written to a COCO JSON file beside the images
(``DIR/textseg_annotations.json``, RLE masks) after every change, atomically (temp file +
``os.replace``): killing the process loses nothing, and opening the folder again restores them.

Assisted labelling (``prefill=True``): opening an image runs the text pipeline (or a trained
specialist) on it and its masks wait as proposals; the person accepts them, fixes them with
clicks, or adds what was missed. Every accepted annotation records who made it in
``"source"``: ``"proposal"`` (a proposal accepted unchanged), ``"corrected"`` (a proposal
whose mask or class was changed) or ``"manual"`` (drawn with clicks or a box), which
``textseg train --source-weight`` weights or filters by.

The Gradio layer (:mod:`textseg.app.server`) only turns browser events into these calls, so the
whole behaviour is testable without a browser.

Coordinates are absolute pixels of the original image, x to the right, y down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import supervision as sv

from textseg._image import IMAGE_SUFFIXES, list_images, to_rgb_uint8
from textseg.io._common import atomic_write
from textseg.io.coco import coco_to_detections, detections_to_coco, load_coco
from textseg.io.rle import decode_masks, to_rle
from textseg.masks import masks_to_boxes, pairwise_iou
from textseg.sam import SamCore
from textseg.sam.cache import ImageEmbedding
from textseg.sam.postprocess import remove_small_regions
from textseg.sam.prompts import Prompts

__all__ = [
    "ANNOTATION_FILE",
    "EXPORT_DIR",
    "AnnotationSession",
    "Click",
    "Draft",
    "UnreadableImage",
    "parse_classes",
]

#: Default name of the COCO file written beside the images.
ANNOTATION_FILE = "textseg_annotations.json"
#: Default export folder inside the image folder (skipped when listing images).
EXPORT_DIR = "textseg_export"
#: File suffixes listed as images (case-insensitive).

ExportFormat = Literal["coco", "yolo", "png"]
EXPORT_FORMATS: tuple[str, ...] = ("coco", "yolo", "png")

# Overlay colours (RGB).
_DRAFT_RGB = np.array([255, 0, 255], np.float32)
_POSITIVE_RGB = (0, 200, 0)
_NEGATIVE_RGB = (230, 20, 20)
_BOX_RGB = (255, 215, 0)


class UnreadableImage(ValueError):
    """An image of the folder that cannot be read (the session skips it when moving on)."""


@dataclass(frozen=True)
class Click:
    """One click: ``(x, y)`` pixels; ``positive`` True = foreground, False = background."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Draft:
    """The object being outlined now (immutable: every change makes a new Draft, which is what
    makes undo exact).

    Attributes:
        clicks: The foreground/background clicks, in order.
        box: ``(x0, y0, x1, y1)`` XYXY box prompt, or None.
        corner: First corner of a box being drawn with two clicks, or None.
        masks: ``(K, H, W)`` bool candidate masks (K = 3 for an ambiguous single click, else
            1; 0 before any prompt).
        scores: ``(K,)`` float32 SAM predicted IoU of each candidate.
        selected: Index of the chosen candidate (the best predicted IoU by default).
        class_name: Class proposed by the text pipeline (None for clicks).
        confidence: Detector/CLIP score of a text proposal (None for clicks).
        origin: ``"click"``, ``"box"`` or ``"text"``.
        edited: A text proposal changed by hand (clicks, a box or another candidate).
        latency_ms: Milliseconds SAM took to answer the last prompt (decode + upsample).
    """

    clicks: tuple[Click, ...] = ()
    box: tuple[float, float, float, float] | None = None
    corner: tuple[float, float] | None = None
    masks: np.ndarray | None = field(default=None, repr=False, compare=False)
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    selected: int = 0
    class_name: str | None = None
    confidence: float | None = None
    origin: str = "click"
    edited: bool = False
    latency_ms: float | None = None

    @property
    def empty(self) -> bool:
        """No prompt and no candidate mask."""
        return not self.clicks and self.box is None and self.corner is None and not self.n

    @property
    def n(self) -> int:
        """Number of candidate masks."""
        return 0 if self.masks is None else len(self.masks)

    @property
    def mask(self) -> np.ndarray | None:
        """The selected ``(H, W)`` bool candidate, or None."""
        return None if not self.n else self.masks[self.selected]  # type: ignore[index]


@dataclass(frozen=True)
class _Snapshot:
    draft: Draft
    proposals: tuple[Draft, ...]
    annotations: tuple[dict[str, Any], ...]


def parse_classes(text: str | Sequence[str] | None) -> list[str]:
    """Class names from ``"dog, frisbee"`` (commas, semicolons or periods separate) or a list;
    blanks dropped, duplicates removed, order kept."""
    if text is None:
        return []
    items = re.split(r"[,;.\n]", text) if isinstance(text, str) else [str(t) for t in text]
    out: list[str] = []
    for item in items:
        name = " ".join(item.split())
        if name and name not in out:
            out.append(name)
    return out


def _flat_name(file_name: str) -> str:
    """A file name without folders, for exports whose layout is flat (YOLO, PNG)."""
    return file_name.replace("/", "__")


class AnnotationSession:
    """Click-to-cutout annotation of a folder of images, with SAM and the text pipeline.

    Each image is encoded once by the segmenter's :class:`~textseg.sam.SamCore` (cached); every
    click then only runs SAM's prompt encoder and mask decoder on the cached embedding.

    Args:
        folder: The image folder (listed recursively, see :func:`list_images`).
        classes: Class names offered for the masks; more can be added at any time (a class
            name typed in :meth:`accept` / :meth:`set_class` is added). Classes already in the
            annotation file come first.
        segmenter: A ``TextSegmenter``, a preset name (default ``"grounded-sam"``, which needs
            its weights; ``"tiny-test"`` builds tiny random models offline; see
            ``textseg.pipelines.list_presets()``), or a bare ``SamCore`` (clicks and boxes
            only, no :meth:`find_all`).
        annotation_file: The COCO file, relative to ``folder`` unless absolute.
        device: Device for a preset built here.
        pretrained: Load weights for a preset built here (False: random weights, for trials).
        sam: SAM registry name overriding the preset's, for a preset built here.
        history: Undo steps kept for the current image.
        min_region_area: Remove islands and fill holes smaller than this many pixels in the
            masks of clicks and boxes (SAM's own clean-up; 0: off, the fastest).
        decoder: What answers clicks and boxes: ``"torch"`` (default: the SAM core's decoder,
            any backend; it reuses the image's precomputed decoder projections, and answered
            clicks faster than the ONNX graph in ``benchmarks/bench_app_latency.py``),
            ``"onnx"`` (SAM's decoder exported to ONNX and run by onnxruntime;
            segment_anything models, ``pip install 'textseg[onnx]'``), or ``"auto"``: ONNX
            where the model and onnxruntime allow it, else torch; which one runs is
            :attr:`decoder`. Both give the same masks (tested).
        prefill: Assisted labelling: every image opened runs the proposer for
            :attr:`classes`, and its masks wait as proposals (those overlapping an accepted
            annotation are left out).
        proposer: What makes the proposals of :meth:`find_all` and ``prefill``: anything with
            ``segment(image, classes)`` returning a result with ``detections``, e.g. a
            ``TextSegmenter`` built with a trained specialist
            (``TextSegmenter.from_preset(name, specialist=DIR)``). Default: the segmenter.

    Images that cannot be read are skipped when moving through the folder (listed in
    :attr:`unreadable` with the reason); opening one by name raises ``ValueError``.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: No readable image in the folder, or an annotation file that is not COCO.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        classes: Sequence[str] | str = (),
        segmenter: Any = "grounded-sam",
        annotation_file: str | os.PathLike[str] = ANNOTATION_FILE,
        device: str = "cpu",
        pretrained: bool = True,
        sam: str | None = None,
        history: int = 50,
        min_region_area: int = 0,
        decoder: str = "torch",
        prefill: bool = False,
        proposer: Any = None,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"image folder not found: {self.folder}; give an existing folder of images"
            )
        self.path = self.folder / annotation_file
        self.images = list_images(self.folder, exclude=(EXPORT_DIR, self.path.name))
        if not self.images:
            raise ValueError(
                f"no images in {self.folder}: expected files ending in "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        if history < 1:
            raise ValueError(f"history: expected a positive number of undo steps, got {history}")
        self.segmenter, self.sam = _resolve_segmenter(segmenter, device, pretrained, sam)
        if self.sam is None:
            raise ValueError(
                "segmenter: the app needs a SAM core for clicks and boxes, this segmenter has "
                "none (a specialist replaces SAM); pass the specialist as proposer= instead"
            )
        #: What makes the proposals (``find_all``, ``prefill``); None: clicks and boxes only.
        self.proposer = proposer if proposer is not None else self.segmenter
        self.history = int(history)
        if min_region_area < 0:
            raise ValueError(f"min_region_area: expected >= 0 pixels, got {min_region_area}")
        self.min_region_area = int(min_region_area)
        #: ``"torch"`` or ``"onnx"``: the decoder that answers clicks and boxes.
        self.decoder, self._onnx = _click_decoder(decoder, self.sam)
        self.classes: list[str] = []
        self._category_ids: dict[str, int] = {}
        self._records: dict[str, dict[str, Any]] = {}  # file name -> COCO image record
        self._annotations: dict[str, tuple[dict[str, Any], ...]] = {}
        self._extra_images: list[dict[str, Any]] = []  # records of files no longer in the folder
        self._next_image_id = 1
        self._next_ann_id = 1
        self._load()
        for name in parse_classes(classes):
            self._ensure_class(name)
        self.index = -1
        self.image: np.ndarray = np.zeros((0, 0, 3), np.uint8)
        self.embedding: ImageEmbedding | None = None
        self.draft = Draft()
        self.proposals: tuple[Draft, ...] = ()
        self.highlight: int | None = None
        self._undo: list[_Snapshot] = []
        self._mask_cache: dict[int, np.ndarray] = {}
        self._base: tuple[tuple[Any, ...], np.ndarray] | None = None
        self.encode_ms = 0.0
        self.prefill = bool(prefill)
        if self.prefill and self.proposer is None:
            raise ValueError(
                "prefill: proposals need a text pipeline or a specialist, this session has "
                "only a SAM core; give a preset"
            )
        #: ``{file name: reason}`` of images that could not be read.
        self.unreadable: dict[str, str] = {}
        self._open_readable(0, 1)
        if self.index < 0:
            reasons = "; ".join(list(self.unreadable.values())[:3])
            raise ValueError(f"no readable image in {self.folder}: {reasons}")

    # ------------------------------------------------------------------ images
    @property
    def file_name(self) -> str:
        """The current image, relative to the folder."""
        return self.images[self.index]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the current image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def open(self, image: int | str) -> None:
        """Show an image (index into :attr:`images` or its file name) and encode it (cached).

        The draft, the proposals and the undo history belong to an image and are dropped.
        """
        if isinstance(image, str):
            if image not in self.images:
                raise ValueError(
                    f"image {image!r} is not in {self.folder}; expected one of "
                    f"{self.images[:5]}{'...' if len(self.images) > 5 else ''}"
                )
            index = self.images.index(image)
        elif isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            if not 0 <= image < len(self.images):
                raise ValueError(f"image index: expected 0..{len(self.images) - 1}, got {image}")
            index = int(image)
        else:
            raise TypeError(f"image: expected an index or a file name, got {type(image).__name__}")
        try:
            array = to_rgb_uint8(self.folder / self.images[index], name=self.images[index])
        except (ValueError, OSError) as err:
            self.unreadable[self.images[index]] = str(err)
            raise UnreadableImage(f"cannot open {self.images[index]}: {err}") from None
        start = time.perf_counter()
        embedding = self.sam.encode(array)
        self.encode_ms = (time.perf_counter() - start) * 1000.0
        self.index, self.image, self.embedding = index, array, embedding
        self.draft = Draft()
        self.proposals = ()
        self.highlight = None
        self._undo = []
        self._mask_cache = {}
        self._base = None
        if self.prefill and self.classes:
            found = self._propose(self.classes)
            self.draft, self.proposals = (found[0], found[1:]) if found else (Draft(), ())

    def _open_readable(self, start: int, step: int) -> bool:
        """Open the first readable image from ``start`` in direction ``step``; False (the
        current image stays) when there is none."""
        i = start
        while 0 <= i < len(self.images):
            if self.images[i] not in self.unreadable:
                try:
                    self.open(i)
                    return True
                except UnreadableImage:
                    pass
            i += step
        return False

    def next(self) -> None:
        """Open the next readable image (stays on the last)."""
        self._open_readable(self.index + 1, 1)

    def prev(self) -> None:
        """Open the previous readable image (stays on the first)."""
        self._open_readable(self.index - 1, -1)

    # ------------------------------------------------------------------ prompting
    def _check_point(self, x: float, y: float) -> tuple[float, float]:
        h, w = self.image_size
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= w and 0 <= y <= h):
            raise ValueError(f"click: expected a point inside the {w}x{h} image, got ({x}, {y})")
        return float(x), float(y)

    def add_click(self, x: float, y: float, *, positive: bool = True) -> Draft:
        """Add a foreground (``positive``) or background click and re-run SAM.

        A single click is ambiguous, so it gets three candidate masks (whole, part, subpart)
        with their predicted IoU, the best selected; with more clicks or a box, one mask.
        A click while text proposals are being reviewed refines the current proposal.

        Returns:
            The new draft.
        """
        x, y = self._check_point(x, y)
        draft = self.draft
        self._push()
        clicks = (*draft.clicks, Click(x, y, bool(positive)))
        self.draft = self._predict(replace(draft, clicks=clicks, corner=None))
        return self.draft

    def add_box(self, x0: float, y0: float, x1: float, y1: float) -> Draft:
        """Set the draft's box prompt (corners in any order; replaces an earlier box)."""
        x0, y0 = self._check_point(x0, y0)
        x1, y1 = self._check_point(x1, y1)
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise ValueError(
                f"box: expected two different corners, got a degenerate box {list(box)}; "
                f"click two opposite corners"
            )
        self._push()
        self.draft = self._predict(replace(self.draft, box=box, corner=None))
        return self.draft

    def add_box_corner(self, x: float, y: float) -> Draft:
        """Box mode with clicks: the first click sets a corner, the second the opposite
        corner and runs SAM (for UIs that cannot drag a rectangle)."""
        x, y = self._check_point(x, y)
        corner = self.draft.corner
        if corner is None:
            self._push()
            self.draft = replace(self.draft, corner=(x, y))
            return self.draft
        if abs(corner[0] - x) < 1 or abs(corner[1] - y) < 1:
            raise ValueError(
                f"box: the second corner ({x:.0f}, {y:.0f}) is on the same row or column as the "
                f"first ({corner[0]:.0f}, {corner[1]:.0f}); click the opposite corner"
            )
        return self.add_box(corner[0], corner[1], x, y)

    def _prompts(self, draft: Draft) -> Prompts:
        box = None if draft.box is None else np.asarray([draft.box], np.float32)
        if not draft.clicks:
            return Prompts(boxes=box)
        points = np.asarray([[(c.x, c.y) for c in draft.clicks]], np.float32)
        labels = np.asarray([[int(c.positive) for c in draft.clicks]], np.int32)
        return Prompts(points=points, point_labels=labels, boxes=box)

    def _predict(self, draft: Draft) -> Draft:
        if not draft.clicks and draft.box is None:
            return replace(draft, masks=None, scores=None, selected=0, latency_ms=None)
        start = time.perf_counter()
        if self._onnx is not None:
            masks, scores = self._predict_onnx(draft)
        else:
            dets = self.sam.predict(
                self.embedding,
                self._prompts(draft),
                multimask_output="auto",
                return_all=True,
                min_region_area=self.min_region_area,
            )
            masks, scores = dets.mask, np.asarray(dets.data["sam_iou"], np.float32)
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

    def _predict_onnx(self, draft: Draft) -> tuple[np.ndarray, np.ndarray]:
        """The draft's candidates from the ONNX decoder: the same rule as the torch path
        (three masks for a lone click, else one) and the same upsampling (the core's)."""
        prompts = self._prompts(draft)
        low, iou = self._onnx.decode(  # type: ignore[union-attr]
            self.embedding,
            points=prompts.points,
            point_labels=prompts.point_labels,
            boxes=prompts.boxes,
        )
        tokens = slice(1, None) if len(draft.clicks) == 1 and draft.box is None else slice(0, 1)
        logits = self.sam.upsample(self.embedding, low[0, tokens])  # type: ignore[arg-type]
        masks = (logits > self.sam.backend.mask_threshold).numpy()
        if self.min_region_area > 0:
            for i, mask in enumerate(masks):
                mask, _ = remove_small_regions(mask, self.min_region_area, "holes")
                masks[i], _ = remove_small_regions(mask, self.min_region_area, "islands")
        return masks, iou[0, tokens].numpy().astype(np.float32)

    def overlay_runs(self) -> np.ndarray:
        """The draft's selected mask as run boundaries, for the browser to paint over the
        image without a re-rendered picture: ``[start_0, end_0, start_1, end_1, ...]`` uint32
        indices into the row-major ``H * W`` pixels, each ``[start, end)`` a run of mask
        pixels (a few hundred numbers for a smooth mask; empty when there is no mask)."""
        mask = self.draft.mask
        if mask is None:
            return np.zeros(0, np.uint32)
        flat = np.concatenate(([False], mask.ravel(), [False]))
        return np.flatnonzero(flat[1:] != flat[:-1]).astype(np.uint32)

    def select_candidate(self, k: int) -> Draft:
        """Choose candidate ``k`` (0-based) of the draft."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k < self.draft.n:
            raise ValueError(
                f"candidate: expected 0..{self.draft.n - 1}, got {k!r}"
                if self.draft.n
                else "candidate: there is no candidate mask; click on the image first"
            )
        if int(k) != self.draft.selected:
            self._push()
            self.draft = replace(
                self.draft, selected=int(k), edited=self.draft.edited or self.draft.origin == "text"
            )
        return self.draft

    # ------------------------------------------------------------------ undo / reject
    def _push(self) -> None:
        snap = _Snapshot(self.draft, self.proposals, self._annotations.get(self.file_name, ()))
        self._undo.append(snap)
        del self._undo[: -self.history]

    def undo(self) -> bool:
        """Undo the last action on this image (click, box corner, candidate choice, reject,
        accept, class change or delete); the annotation file is rewritten when masks change.

        Returns:
            False when there was nothing to undo.
        """
        if not self._undo:
            return False
        snap = self._undo.pop()
        if snap.annotations is not self._annotations.get(self.file_name, ()):
            self._commit(snap.annotations)
        self.draft, self.proposals = snap.draft, snap.proposals
        return True

    def reject(self) -> Draft:
        """Drop the draft; the next text proposal (if any) becomes the draft."""
        if self.draft.empty and not self.proposals:
            return self.draft
        self._push()
        self._next_proposal()
        return self.draft

    def _next_proposal(self) -> None:
        if self.proposals:
            self.draft, self.proposals = self.proposals[0], self.proposals[1:]
        else:
            self.draft = Draft()

    # ------------------------------------------------------------------ accepting
    def accept(self, class_name: str | None = None) -> dict[str, Any]:
        """Accept the draft's selected mask as an annotation and save the file.

        Args:
            class_name: Its class; default: the class of a text proposal. A new name is added
                to :attr:`classes`.

        Returns:
            The COCO annotation written (``id``, ``category_id``, ``segmentation`` RLE,
            ``bbox``, ``area``, ``score``, ``sam_iou``, ``origin``, ``source``: ``"proposal"``
            for a text proposal accepted unchanged, ``"corrected"`` when its mask or class was
            changed, ``"manual"`` for clicks and boxes).

        Raises:
            ValueError: No mask to accept, an empty mask, or no class.
        """
        draft = self.draft
        if draft.mask is None:
            raise ValueError("accept: there is no mask yet; click on the object first")
        if not draft.mask.any():
            raise ValueError(
                "accept: the selected mask is empty; pick another candidate, add clicks or undo"
            )
        name = parse_classes([class_name or draft.class_name or ""])
        if not name:
            raise ValueError(
                "accept: no class; choose a class from the list or type a new class name"
            )
        ann = self._make_annotation(draft, name[0])
        self._push()
        self._commit((*self._annotations.get(self.file_name, ()), ann))
        self._next_proposal()
        return ann

    def accept_all(self, class_name: str | None = None) -> list[dict[str, Any]]:
        """Accept the draft and every waiting proposal (each with its own class, or
        ``class_name`` for those without one); one undo step undoes them all."""
        drafts = [d for d in (self.draft, *self.proposals) if d.mask is not None and d.mask.any()]
        if not drafts:
            raise ValueError("accept all: there is nothing to accept; run find all or click first")
        anns = []
        for draft in drafts:
            name = parse_classes([draft.class_name or class_name or ""])
            if not name:
                raise ValueError(
                    "accept all: a mask has no class; choose a class from the list first"
                )
            anns.append(self._make_annotation(draft, name[0]))
        self._push()
        self._commit((*self._annotations.get(self.file_name, ()), *anns))
        self.draft, self.proposals = Draft(), ()
        return anns

    def _make_annotation(self, draft: Draft, class_name: str) -> dict[str, Any]:
        self._ensure_class(class_name)
        h, w = self.image_size
        mask = draft.mask[None]  # type: ignore[index]
        sam_iou = float(draft.scores[draft.selected])  # type: ignore[index]
        score = sam_iou if draft.confidence is None else float(draft.confidence)
        dets = sv.Detections(
            xyxy=masks_to_boxes(mask),
            mask=mask,
            class_id=np.array([self.classes.index(class_name)]),
            confidence=np.array([score], np.float32),
            data={
                "class_name": np.array([class_name]),
                "sam_iou": np.array([sam_iou], np.float32),
                "origin": np.array([draft.origin]),
                "source": np.array([_source(draft, class_name)]),
            },
        )
        ann = detections_to_coco(
            dets,
            self._image_id(),
            self.classes,
            height=h,
            width=w,
            category_ids=[self._category_ids[c] for c in self.classes],
            first_id=self._next_ann_id,
        )[0]
        self._next_ann_id += 1
        return ann

    def _image_id(self) -> int:
        record = self._records.get(self.file_name)
        if record is None:
            h, w = self.image_size
            record = {
                "id": self._next_image_id,
                "file_name": self.file_name,
                "width": w,
                "height": h,
            }
            self._next_image_id += 1
            self._records[self.file_name] = record
        return int(record["id"])

    def _ensure_class(self, name: str) -> None:
        if name not in self._category_ids:
            self._category_ids[name] = max(self._category_ids.values(), default=0) + 1
            self.classes.append(name)

    def _find(self, annotation_id: int) -> int:
        anns = self._annotations.get(self.file_name, ())
        for i, ann in enumerate(anns):
            if int(ann["id"]) == int(annotation_id):
                return i
        raise ValueError(
            f"annotation {annotation_id} is not on {self.file_name}; expected one of "
            f"{[int(a['id']) for a in anns]}"
        )

    def set_class(self, annotation_id: int, class_name: str) -> dict[str, Any]:
        """Change the class of an accepted annotation of the current image (saved at once).

        A new name is added to :attr:`classes`.
        """
        name = parse_classes([class_name or ""])
        if not name:
            raise ValueError("set class: expected a class name, got an empty one")
        i = self._find(annotation_id)
        self._ensure_class(name[0])
        anns = list(self._annotations[self.file_name])
        changed = self._category_ids[name[0]] != int(anns[i]["category_id"])
        anns[i] = {**anns[i], "category_id": self._category_ids[name[0]]}
        if changed and anns[i].get("source") == "proposal":
            anns[i]["source"] = "corrected"
        self._push()
        self._commit(tuple(anns))
        return anns[i]

    def delete(self, annotation_id: int) -> None:
        """Remove an accepted annotation of the current image (saved at once; undoable)."""
        i = self._find(annotation_id)
        anns = list(self._annotations[self.file_name])
        del anns[i]
        self._push()
        self._commit(tuple(anns))
        if self.highlight == int(annotation_id):
            self.highlight = None

    # ------------------------------------------------------------------ text pipeline
    def find_all(self, classes: str | Sequence[str]) -> int:
        """Run the text pipeline on the current image; its masks become proposals to review
        (accept / reject one by one, or :meth:`accept_all`). Masks that overlap an accepted
        annotation with IoU > 0.8 are skipped.

        Args:
            classes: ``"dog, frisbee"`` or a list of class names.

        Returns:
            The number of proposals.
        """
        names = parse_classes(classes)
        if not names:
            raise ValueError("find all: expected class names like 'dog, frisbee', got none")
        if self.proposer is None:
            raise ValueError(
                "find all: this session has only a SAM core, no text pipeline; start it with a "
                "preset (e.g. --preset grounded-sam)"
            )
        found = self._propose(names)
        self._push()
        self.draft, self.proposals = (found[0], found[1:]) if found else (Draft(), ())
        return len(found)

    def _propose(self, names: Sequence[str]) -> tuple[Draft, ...]:
        """The pipeline's masks for ``names`` on the current image, best score first, less
        those an accepted annotation already covers."""
        start = time.perf_counter()
        result = self.proposer.segment(self.image, list(names))
        latency = (time.perf_counter() - start) * 1000.0
        dets = result.detections
        if len(dets):
            dets = dets[_novel(dets.mask, self._masks())]
        # SAM 3 and specialist masks come without SAM's predicted IoU: their score stands in.
        ious = dets.data.get("sam_iou", dets.confidence)
        order = np.argsort(-np.asarray(dets.confidence, np.float64), kind="stable")
        return tuple(
            Draft(
                masks=dets.mask[i : i + 1],
                scores=np.asarray(ious[i : i + 1], np.float32),
                class_name=str(dets.data["class_name"][i]),
                confidence=float(dets.confidence[i]),
                origin="text",
                latency_ms=latency,
            )
            for i in order
        )

    # ------------------------------------------------------------------ reading
    def annotations(self, file_name: str | None = None) -> list[dict[str, Any]]:
        """The accepted COCO annotations of an image (default: the current one)."""
        return list(self._annotations.get(file_name or self.file_name, ()))

    def class_of(self, annotation: dict[str, Any]) -> str:
        """The class name of an annotation."""
        by_id = {v: k for k, v in self._category_ids.items()}
        return by_id[int(annotation["category_id"])]

    def detections(self, file_name: str | None = None) -> sv.Detections:
        """The accepted annotations of an image as ``supervision.Detections`` (``mask``
        (N, H, W) bool, ``xyxy``, ``class_id`` indexing :attr:`classes`,
        ``data["class_name"]``, ``confidence``, ``data["sam_iou"]``, ``data["origin"]``,
        ``data["source"]``)."""
        name = file_name or self.file_name
        if name == self.file_name:
            h, w = self.image_size
        elif name in self._records:
            h, w = int(self._records[name]["height"]), int(self._records[name]["width"])
        else:
            return _no_detections(*_image_hw(self.folder / name))
        anns = self.annotations(name)
        dets = coco_to_detections(
            anns, h, w, self.classes, category_ids=[self._category_ids[c] for c in self.classes]
        )
        if dets.mask is None:
            dets.mask = np.zeros((len(dets), h, w), bool)
        return dets

    def counts(self) -> dict[str, dict[str, int]]:
        """``{file name: {class: accepted masks}}`` for every image with a record."""
        out = {}
        for name in sorted(self._annotations):
            row = dict.fromkeys(self.classes, 0)
            for ann in self._annotations[name]:
                row[self.class_of(ann)] += 1
            out[name] = row
        return out

    def totals(self) -> dict[str, int]:
        """``{class: accepted masks}`` over the folder (zeros included)."""
        total = dict.fromkeys(self.classes, 0)
        for row in self.counts().values():
            for name, n in row.items():
                total[name] += n
        return total

    def _masks(self) -> np.ndarray:
        """``(N, H, W)`` masks of the current image's annotations (cached by id)."""
        h, w = self.image_size
        anns = self._annotations.get(self.file_name, ())
        out = np.zeros((len(anns), h, w), bool)
        for i, ann in enumerate(anns):
            key = int(ann["id"])
            if key not in self._mask_cache:
                self._mask_cache[key] = _annotation_mask(ann, h, w)
            out[i] = self._mask_cache[key]
        return out

    # ------------------------------------------------------------------ persistence
    def dataset(self) -> dict[str, Any]:
        """The COCO dict written to :attr:`path`."""
        images = sorted([*self._records.values(), *self._extra_images], key=lambda r: int(r["id"]))
        annotations = [a for anns in self._annotations.values() for a in anns]
        annotations.sort(key=lambda a: int(a["id"]))
        categories = [
            {"id": self._category_ids[c], "name": c, "supercategory": ""} for c in self.classes
        ]
        categories.sort(key=lambda c: c["id"])
        return {
            "info": {
                "description": "written by textseg app",
                "image_root": str(self.folder.resolve()),
            },
            "licenses": [],
            "images": images,
            "annotations": [*annotations, *self._extra_annotations],
            "categories": categories,
        }

    def save(self) -> Path:
        """Write the annotation file atomically (temp file beside it + ``os.replace``)."""
        atomic_write(self.path, json.dumps(self.dataset(), separators=(",", ":")))
        return self.path

    def _commit(self, annotations: tuple[dict[str, Any], ...]) -> None:
        """Set the current image's annotations and save; on a failed write nothing changes."""
        name = self.file_name
        before = self._annotations.get(name)
        self._annotations[name] = annotations
        try:
            self.save()
        except BaseException:
            if before is None:
                self._annotations.pop(name, None)
            else:
                self._annotations[name] = before
            raise
        self._base = None

    def _load(self) -> None:
        self._extra_annotations: list[dict[str, Any]] = []
        if not self.path.exists():
            return
        data = load_coco(self.path)  # validates the structure, with clear errors
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        for cat in data.categories:
            self._category_ids[str(cat["name"])] = int(cat["id"])
            self.classes.append(str(cat["name"]))
        by_id: dict[int, str] = {}
        for record in data.images:
            name = str(record["file_name"])
            if name in self.images:
                self._records[name] = dict(record)
                by_id[int(record["id"])] = name
            else:
                self._extra_images.append(dict(record))
        grouped: dict[str, list[dict[str, Any]]] = {n: [] for n in self._records}
        for ann in raw["annotations"]:
            name = by_id.get(int(ann["image_id"]))
            if name is None:
                self._extra_annotations.append(ann)  # kept as it was: never lose data
            else:
                grouped[name].append(ann)
        self._annotations = {n: tuple(a) for n, a in grouped.items()}
        ids = [int(r["id"]) for r in data.images]
        self._next_image_id = max(ids, default=0) + 1
        self._next_ann_id = max((int(a["id"]) for a in raw["annotations"]), default=0) + 1

    # ------------------------------------------------------------------ export
    def export(
        self, fmt: ExportFormat = "coco", out_dir: str | os.PathLike[str] | None = None
    ) -> Path:
        """Export the accepted masks of every annotated image.

        Args:
            fmt: ``"coco"`` (``annotations.json``, RLE), ``"yolo"`` (YOLO-seg dataset with the
                images copied) or ``"png"`` (``instances/<stem>_NNNN.png`` per mask and
                ``index/<stem>.png`` class-index PNGs). Per-image class counts
                (``counts.csv``, ``counts.json``) are written in every case.
            out_dir: Target folder, replaced as a whole (default
                ``<folder>/textseg_export/<fmt>``).

        Returns:
            The export folder.
        """
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"export: expected a format in {EXPORT_FORMATS}, got {fmt!r}")
        target = Path(out_dir) if out_dir is not None else self.folder / EXPORT_DIR / fmt
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            self._export_into(fmt, tmp)
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            if old.exists():
                shutil.rmtree(old)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return target

    def _export_into(self, fmt: str, out: Path) -> None:
        from textseg.io.counts import save_counts_csv, save_counts_json

        names = sorted(self._records)
        if fmt == "coco":
            atomic_write(out / "annotations.json", json.dumps(self.dataset()))
        elif fmt == "yolo":
            from textseg.io.yolo import YoloWriter

            with YoloWriter(out, self.classes) as writer:
                for name in names:
                    r = self._records[name]
                    writer.add(
                        _flat_name(name),
                        int(r["width"]),
                        int(r["height"]),
                        self.detections(name),
                        image=self.folder / name,
                    )
        else:
            from textseg.io.png import save_index_png, save_instance_masks

            for name in names:
                stem = Path(_flat_name(name)).stem
                dets = self.detections(name)
                save_instance_masks(out / "instances", dets, stem=stem, classes=self.classes)
                save_index_png(
                    out / "index" / f"{stem}.png", dets, by="class", classes=self.classes
                )
        counts = self.counts()
        save_counts_csv(out / "counts.csv", counts, names=self.classes)
        save_counts_json(out / "counts.json", counts, names=self.classes)

    # ------------------------------------------------------------------ rendering
    def render(self, *, opacity: float = 0.45) -> np.ndarray:
        """The current image with the accepted masks (by class colour, labelled), the draft's
        selected mask (magenta, outlined), the clicks (green foreground, red background) and
        the box.

        Returns:
            ``(H, W, 3)`` uint8 RGB, the size of the image (so click coordinates on it are
            image pixels).
        """
        out = self._base_layer(opacity).copy()
        h, w = self.image_size
        thick = max(2, round(max(h, w) / 320))
        draft = self.draft
        mask = draft.mask
        if mask is not None and mask.any():
            _paint(out, mask, _DRAFT_RGB, opacity, (255, 255, 255), thick)
        if draft.box is not None:
            x0, y0, x1, y1 = (round(v) for v in draft.box)
            cv2.rectangle(out, (x0, y0), (x1, y1), _BOX_RGB, thick)
        if draft.corner is not None:
            cx, cy = (round(v) for v in draft.corner)
            size = 4 * thick
            cv2.drawMarker(out, (cx, cy), _BOX_RGB, cv2.MARKER_CROSS, size * 2, thick)
        radius = max(4, round(max(h, w) / 120))
        for click in draft.clicks:
            center = (round(click.x), round(click.y))
            color = _POSITIVE_RGB if click.positive else _NEGATIVE_RGB
            cv2.circle(out, center, radius + 2, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, center, radius, color, -1, cv2.LINE_AA)
        return out

    def _base_layer(self, opacity: float) -> np.ndarray:
        """The image with the accepted masks, cached until they or the highlight change."""
        anns = self._annotations.get(self.file_name, ())
        key = (
            self.file_name,
            tuple((int(a["id"]), int(a["category_id"])) for a in anns),
            self.highlight,
            opacity,
        )
        if self._base is not None and self._base[0] == key:
            return self._base[1]
        out = self.image.copy()
        masks = self._masks()
        h, w = self.image_size
        thick = max(1, round(max(h, w) / 480))
        for ann, mask in zip(anns, masks):
            name = self.class_of(ann)
            color = sv.ColorPalette.DEFAULT.by_idx(self.classes.index(name)).as_rgb()
            lit = self.highlight == int(ann["id"])
            edge = (255, 255, 0) if lit else color
            _paint(out, mask, np.array(color, np.float32), opacity, edge, thick * (3 if lit else 1))
        for ann, mask in zip(anns, masks):
            if not mask.any():
                continue
            x, y = int(ann["bbox"][0]), int(ann["bbox"][1])
            text = f"#{ann['id']} {self.class_of(ann)}"
            scale = max(0.4, max(h, w) / 1600)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            y = max(y, th + base)
            cv2.rectangle(out, (x, y - th - base), (x + tw, y), (0, 0, 0), -1)
            cv2.putText(
                out,
                text,
                (x, y - base),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
        self._base = (key, out)
        return out


# ---------------------------------------------------------------------- helpers
def _paint(
    out: np.ndarray,
    mask: np.ndarray,
    fill: np.ndarray,
    opacity: float,
    edge: tuple[int, int, int],
    thickness: int,
) -> None:
    """Blend ``fill`` into ``out`` (H, W, 3) uint8 under ``mask`` (H, W) bool, in place, and
    draw its edge ``thickness`` pixels wide. The edge is the mask minus its erosion: cost
    O(H*W) whatever the outline, where contour tracing slows down on ragged masks."""
    region = out[mask].astype(np.float32)
    out[mask] = (region * (1 - opacity) + fill * opacity).astype(np.uint8)
    m = mask.astype(np.uint8)
    kernel = np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8)
    border = (m - cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0
    out[border] = edge


#: One exported ONNX decoder per SAM core (an export takes seconds; sessions share it).
_ONNX_DECODERS: weakref.WeakKeyDictionary[SamCore, Any] = weakref.WeakKeyDictionary()


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


def _resolve_segmenter(
    segmenter: Any, device: str, pretrained: bool, sam: str | None
) -> tuple[Any | None, SamCore]:
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


def _source(draft: Draft, class_name: str) -> str:
    """Who made an annotation (the ``"source"`` field, :data:`textseg.train.data.SOURCES`)."""
    if draft.origin != "text":
        return "manual"
    return "corrected" if draft.edited or class_name != draft.class_name else "proposal"


def _annotation_mask(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO annotation (its bbox when it has no segmentation)."""
    segm = ann.get("segmentation")
    if segm is not None:
        return decode_masks([to_rle(segm, h, w, what=f"annotation {ann.get('id')}")], h, w)[0]
    mask = np.zeros((h, w), bool)
    x, y, bw, bh = (round(float(v)) for v in ann.get("bbox", (0, 0, 0, 0)))
    mask[max(y, 0) : y + bh, max(x, 0) : x + bw] = True
    return mask


def _novel(candidates: np.ndarray, existing: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """``(N,)`` bool: candidates whose IoU with every existing mask is at most ``threshold``."""
    if not len(existing) or not len(candidates):
        return np.ones(len(candidates), bool)
    iou, _ = pairwise_iou(candidates, existing)
    return (iou <= threshold).all(axis=1)


def _image_hw(path: Path) -> tuple[int, int]:
    array = to_rgb_uint8(path)
    return int(array.shape[0]), int(array.shape[1])


def _no_detections(h: int, w: int) -> sv.Detections:
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        mask=np.zeros((0, h, w), bool),
        class_id=np.zeros(0, np.int64),
        data={"class_name": np.zeros(0, dtype=str)},
    )
