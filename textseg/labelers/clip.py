"""CLIP labeler: names masks (or checks detector labels) by comparing masked crops with text.

For every detection a square crop around its mask is cut with some context, the pixels outside
the mask are painted the CLIP mean colour, and the crop is embedded with CLIP. Scoring plain box
crops instead would let the enclosing segment win: the crop of a wheel's box is mostly car, and
FastSAM / ultralytics' text prompt picks the car mask for "wheel" for that reason. With the
outside blanked, each mask is judged on its own pixels.

Each class is one text embedding: every prompt of the class (its name and its synonyms) is put
into every template ("a photo of a {}."), the normalised embeddings are averaged and
renormalised. Background texts and the vocabulary's negative prompts are embedded the same way
and compete in the softmax as "reject" entries, whose probabilities are summed into one
"reject" probability (so that several similar background texts do not split it). A detection
for which reject wins, whose best class probability is below ``min_score``, or whose margin over
the runner-up (reject included) is below ``min_margin`` is labelled ``"unknown"``
(``class_id`` -1): the labeler never forces a label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import supervision as sv
import torch

from textseg._detections import copy_detections
from textseg._image import ImageInput, to_rgb_uint8
from textseg.clip.crops import mask_box, masked_crop
from textseg.clip.text import DEFAULT_BACKGROUND, DEFAULT_TEMPLATES, TextEmbedder
from textseg.fields import CLASS_NAME, CLIP_MARGIN, CLIP_SCORE
from textseg.labelers.base import UNKNOWN
from textseg.vocab import ClassesInput, Vocabulary, normalize_name

__all__ = ["ClipLabeler"]

Mode = Literal["name", "verify"]


class ClipLabeler:
    """Labels masks with CLIP, never forcing a label.

    Two modes:

    - ``"name"``: assign class names to class-agnostic masks (e.g. from SAM's automatic
      generator): each detection gets CLIP's best class, or ``"unknown"``.
    - ``"verify"``: check a detector's labels. A detection keeps its class (read from
      ``data["class_name"]``, else ``class_id``) unless CLIP confidently disagrees: CLIP's best
      is another class or reject (background, negative prompts), with probability at least
      ``min_score`` and at least ``min_margin`` above the detector's class. Then the
      detection is relabelled (to CLIP's class, or ``"unknown"`` when a reject entry won), or
      dropped when ``drop_disagreeing`` is True. A detection whose class is ``"unknown"`` /
      ``-1`` is named as in ``"name"`` mode.

    Output (a new ``sv.Detections``, the input is not modified; other fields are kept):
    ``class_id`` (index into the vocabulary's names, -1 for unknown), ``data["class_name"]``,
    ``data["clip_score"]``: CLIP's probability of the output class (for an unknown detection,
    of CLIP's best vocabulary class), and ``data["clip_margin"]``: that probability minus the
    highest of the other classes' probabilities and the reject probability (negative when
    another class or reject scored higher). Probabilities are a softmax over the classes plus
    the reject entries at CLIP's own temperature (``logit_scale``); the reject entries'
    probabilities are summed into one reject probability. A detection with an empty mask cannot
    be judged: NaN score and margin, ``"unknown"`` in name mode, its class kept in verify mode.

    Args:
        encoder: A :class:`textseg.clip.ClipEncoder` (anything with ``encode_text``,
            ``encode_images``, ``logit_scale``, ``input_size`` and ``pixel_mean``) or a registry
            name for :func:`textseg.clip.load_clip`.
        mode: ``"name"`` or ``"verify"``.
        templates: Prompt templates, each with one ``{}`` for the class prompt.
        background: Reject texts (put through the templates too); may be empty. Texts equal to
            a class prompt (case-insensitive) are left out.
        min_score: Smallest winning probability for a label.
        min_margin: Smallest lead of the winner over the runner-up (name mode) or over the
            detector's class (verify mode).
        context: Margin around the mask's box on each side, as a fraction of the box's longer
            side; the crop is the square of side ``(1 + 2 * context) * longer side``.
        batch_size: Crops per CLIP forward pass.
        drop_disagreeing: Verify mode only: drop confidently disagreeing detections instead of
            relabelling them.
        device: Where to load ``encoder`` when it is a name (default CPU).
        dtype: Dtype to load ``encoder`` in when it is a name.

    Raises:
        ValueError: Bad mode, templates without exactly one ``{}``, thresholds outside [0, 1],
            negative context, ``batch_size < 1``, ``drop_disagreeing`` in name mode, or
            ``device``/``dtype`` given with an encoder object.
        TypeError: ``encoder`` is neither a name nor an encoder.
    """

    def __init__(
        self,
        encoder: Any = "clip-vit-b-16",
        *,
        mode: Mode = "name",
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        background: Sequence[str] = DEFAULT_BACKGROUND,
        min_score: float = 0.3,
        min_margin: float = 0.1,
        context: float = 0.1,
        batch_size: int = 32,
        drop_disagreeing: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if mode not in ("name", "verify"):
            raise ValueError(f"mode: expected 'name' or 'verify', got {mode!r}")
        if drop_disagreeing and mode != "verify":
            raise ValueError("drop_disagreeing=True needs mode='verify' (name mode drops nothing)")
        for what, value in (("min_score", min_score), ("min_margin", min_margin)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{what}: expected a probability in [0, 1], got {value}")
        if not (math.isfinite(context) and context >= 0):
            raise ValueError(f"context: expected a fraction >= 0 (e.g. 0.1), got {context}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.mode: Mode = mode
        self.min_score = float(min_score)
        self.min_margin = float(min_margin)
        self.context = float(context)
        self.batch_size = batch_size
        self.drop_disagreeing = drop_disagreeing
        self.encoder = _resolve_encoder(encoder, device, dtype)
        self._embedder = TextEmbedder(self.encoder, templates, background)

    @property
    def templates(self) -> tuple[str, ...]:
        """The prompt templates."""
        return self._embedder.templates

    @property
    def background(self) -> tuple[str, ...]:
        """The reject texts."""
        return self._embedder.background

    def __repr__(self) -> str:
        return (
            f"ClipLabeler({self.encoder!r}, mode={self.mode!r}, min_score={self.min_score}, "
            f"min_margin={self.min_margin}, context={self.context})"
        )

    # ------------------------------------------------------------------------------ text

    def text_embeddings(self, classes: ClassesInput) -> tuple[torch.Tensor, np.ndarray]:
        """The entries CLIP chooses between, one embedding each (cached per vocabulary).

        Args:
            classes: Class names or a :class:`textseg.vocab.Vocabulary`.

        Returns:
            ``(embeddings, entry_class)``: ``(E, D)`` float32 L2-normalised template-ensemble
            embeddings, first the vocabulary's classes in order, then the reject entries
            (negatives, background), and ``(E,)`` int64 class id per entry, -1 for rejects.
        """
        embeddings = self._embedder(classes)
        return embeddings.entries, embeddings.entry_class

    # ------------------------------------------------------------------------------ crops

    def fill_color(self) -> np.ndarray:
        """``(3,)`` uint8: the colour painted outside the mask (CLIP's pixel mean)."""
        mean = np.asarray(self.encoder.pixel_mean, dtype=np.float64)
        return np.clip(np.round(mean), 0, 255).astype(np.uint8)

    def crop(self, image: np.ndarray, box: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The square, masked crop CLIP sees for one detection.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            box: ``(4,)`` XYXY absolute pixels of the region (the mask's tight box, or the
                detection's box when there is no mask).
            mask: ``(H, W)`` bool, or None to keep every pixel of the crop.

        Returns:
            ``(S, S, 3)`` uint8 RGB with at most ``input_size`` pixels a side; pixels outside
            the mask or outside the image are the fill colour.
        """
        crop = masked_crop(
            image,
            mask,
            fill=self.fill_color(),
            context=self.context,
            box=box,
            max_size=int(self.encoder.input_size),
        )
        assert crop is not None  # a box is given
        return crop

    # ------------------------------------------------------------------------------ label

    def label(
        self, image: ImageInput, detections: sv.Detections, classes: ClassesInput
    ) -> sv.Detections:
        """Label ``detections`` of ``image`` with the vocabulary ``classes``.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (or a path / PIL image).
            detections: ``mask`` ``(N, H, W)`` bool at the image's resolution; without masks
                the ``xyxy`` boxes (XYXY absolute pixels) are used and the crop is not blanked.
            classes: Class names or a :class:`textseg.vocab.Vocabulary` (synonyms are averaged
                into their class's embedding; negatives act as reject entries).

        Returns:
            New detections as described in the class docstring.

        Raises:
            TypeError: ``detections`` is not ``sv.Detections``.
            ValueError: Empty vocabulary, a class named ``"unknown"``, masks whose size is not
                the image's, a box entirely outside the image, or (verify mode) detections
                whose classes are missing or not in the vocabulary.
        """
        vocab = Vocabulary.coerce(classes)
        if any(n.casefold() == UNKNOWN for n in vocab.names):
            raise ValueError(
                f"classes: {UNKNOWN!r} is reserved for detections no class fits; rename that "
                f"class (e.g. 'unknown object')"
            )
        array = to_rgb_uint8(image)
        regions = _regions(detections, array.shape[:2])
        detector_ids = self._detector_classes(detections, vocab)
        valid = np.array([r is not None for r in regions], dtype=bool)
        if len(detections) == 0:
            entry_class = np.arange(vocab.num_classes, dtype=np.int64)
            probs = np.zeros((0, vocab.num_classes))
            return self._decide(detections, probs, valid, entry_class, detector_ids, vocab)
        text, entry_class = self.text_embeddings(vocab)
        probs = np.full((len(detections), text.shape[0]), np.nan)
        todo = np.flatnonzero(valid)
        with torch.inference_mode():
            for start in range(0, todo.size, self.batch_size):
                rows = todo[start : start + self.batch_size]
                crops = [self.crop(array, *regions[i]) for i in rows]  # type: ignore[misc]
                emb = self.encoder.encode_images(crops, batch_size=len(crops)).float()
                logits = float(self.encoder.logit_scale) * emb @ text.to(emb.device).T
                probs[rows] = torch.softmax(logits, dim=-1).cpu().double().numpy()
        return self._decide(detections, probs, valid, entry_class, detector_ids, vocab)

    def _detector_classes(self, detections: sv.Detections, vocab: Vocabulary) -> np.ndarray | None:
        """Verify mode: ``(N,)`` int64 detector class per detection, -1 for unknown."""
        if self.mode != "verify":
            return None
        n = len(detections)
        names = detections.data.get(CLASS_NAME) if detections.data else None
        if names is not None:
            index = {name.casefold(): i for i, name in enumerate(vocab.names)}
            ids = np.empty(n, np.int64)
            for i, name in enumerate(np.asarray(names).tolist()):
                key = normalize_name(str(name)).casefold()
                if key == UNKNOWN:
                    ids[i] = -1
                elif key in index:
                    ids[i] = index[key]
                else:
                    raise ValueError(
                        f"detections.data['class_name'][{i}] is {name!r}, not one of the "
                        f"classes {vocab.names}; verify with the vocabulary the detector used"
                    )
            return ids
        if detections.class_id is None:
            raise ValueError(
                "mode='verify' needs the detector's classes in detections.data['class_name'] "
                "or detections.class_id; for class-agnostic masks use mode='name'"
            )
        ids = np.asarray(detections.class_id, dtype=np.int64).reshape(-1)
        bad = (ids < -1) | (ids >= vocab.num_classes)
        if bad.any():
            raise ValueError(
                f"detections.class_id[{int(np.argmax(bad))}] is {int(ids[bad][0])}, expected -1 "
                f"or an index below the {vocab.num_classes} classes"
            )
        return ids

    def _decide(
        self,
        detections: sv.Detections,
        probs: np.ndarray,
        valid: np.ndarray,
        entry_class: np.ndarray,
        detector_ids: np.ndarray | None,
        vocab: Vocabulary,
    ) -> sv.Detections:
        n = len(detections)
        num_classes = vocab.num_classes
        # One column per class, plus one "reject" column holding the summed probability of all
        # reject entries: several similar background texts must not split the rejection.
        columns = probs[:, entry_class >= 0]
        if (entry_class < 0).any():
            columns = np.concatenate([columns, probs[:, entry_class < 0].sum(1, keepdims=True)], 1)
        out_ids = np.full(n, -1, np.int64)
        keep = np.ones(n, bool)
        for i in range(n):
            detector = -1 if detector_ids is None else int(detector_ids[i])
            if not valid[i]:
                out_ids[i] = detector  # nothing to judge: unknown in name mode, kept in verify
                continue
            p = columns[i]
            best = int(np.argmax(p))
            clip_class = best if best < num_classes else -1
            if detector < 0:
                runner_up = float(np.max(np.delete(p, best))) if p.size > 1 else 0.0
                confident = p[best] >= self.min_score and p[best] - runner_up >= self.min_margin
                out_ids[i] = clip_class if confident else -1
            elif best == detector:
                out_ids[i] = detector
            elif p[best] >= self.min_score and p[best] - p[detector] >= self.min_margin:
                keep[i] = not self.drop_disagreeing
                out_ids[i] = clip_class
            else:
                out_ids[i] = detector  # CLIP disagrees, but not confidently
        # Score and margin of the output class; for unknown, of CLIP's best vocabulary class.
        rows = np.arange(n)
        ref = out_ids.copy()
        best_class = np.argmax(np.nan_to_num(columns[:, :num_classes], nan=-1.0), axis=1)
        ref[ref < 0] = best_class[ref < 0]
        score = columns[rows, ref]
        if columns.shape[1] > 1:
            others = columns.copy()
            others[rows, ref] = -np.inf
            margin = score - others.max(axis=1)
        else:  # one class and no reject entry: nothing to compete with
            margin = score.copy()
        result = copy_detections(detections, class_id=False)
        result.class_id = out_ids
        result.data[CLASS_NAME] = np.array([*vocab.names, UNKNOWN])[out_ids]  # -1: UNKNOWN
        result.data[CLIP_SCORE] = score.astype(np.float32)
        result.data[CLIP_MARGIN] = margin.astype(np.float32)
        return result if keep.all() else result[keep]


def _regions(
    detections: sv.Detections, image_hw: tuple[int, int]
) -> list[tuple[np.ndarray, np.ndarray | None] | None]:
    """Per detection: (box, mask) to crop, or None for an empty mask."""
    if not isinstance(detections, sv.Detections):
        raise TypeError(
            f"detections: expected supervision.Detections, got {type(detections).__name__}"
        )
    height, width = image_hw
    n = len(detections)
    masks = detections.mask
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[0] != n or masks.shape[1:] != (height, width):
            raise ValueError(
                f"detections.mask has shape {masks.shape}, expected ({n}, {height}, {width}): one "
                f"mask per detection at the image's resolution; were the detections made on "
                f"another image (or a resized one)?"
            )
        if masks.dtype != np.bool_:
            masks = masks != 0
        regions: list[tuple[np.ndarray, np.ndarray | None] | None] = []
        for mask in masks:
            box = mask_box(mask)
            regions.append(None if box is None else (box, mask))
        return regions
    boxes = np.asarray(detections.xyxy, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("detections.xyxy holds NaN or infinite values")
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    outside = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(
            f"detections.xyxy[{i}] = {boxes[i].round(1).tolist()} has no area inside the "
            f"{width}x{height} image; boxes must be XYXY absolute pixels of this image"
        )
    return [(box, None) for box in clipped]


def _resolve_encoder(
    encoder: Any, device: str | torch.device | None, dtype: str | torch.dtype | None
) -> Any:
    if isinstance(encoder, str):
        from textseg.clip import load_clip

        return load_clip(encoder, device=device or "cpu", dtype=dtype)
    if device is not None or dtype is not None:
        raise ValueError(
            "device and dtype apply when the labeler loads its encoder by name; move the encoder "
            "itself instead (load_clip(name, device=..., dtype=...))"
        )
    needed = ("encode_text", "encode_images", "logit_scale", "input_size", "pixel_mean")
    missing = [a for a in needed if not hasattr(encoder, a)]
    if missing:
        raise TypeError(
            f"encoder: expected a ClipEncoder or a registry name, got {type(encoder).__name__} "
            f"without {', '.join(missing)}"
        )
    return encoder
