"""Training-free text -> point prompts from dense CLIP similarity maps (MaskCLIP-style).

For each class:

1. CLIP's dense patch features (:meth:`textseg.clip.ClipEncoder.dense_features`, the MaskCLIP
   value path) are compared with the class's text embedding (an ensemble of templates over the
   class name and its synonyms), giving an ``(h, w)`` cosine-similarity map on the patch grid.
2. The per-cell maximum of the similarities to *background* texts (stuff words such as
   "background", "sky", "wall", and the vocabulary's negative prompts) is subtracted, so that
   what all texts share (a constant offset, the patch's overall "CLIP-ness") vanishes and a
   positive value means "more like this class than like any background".
3. :func:`similarity_to_points` smooths the map, cuts it into connected regions above a
   threshold relative to the map's range, and puts positive points at each region's peak(s)
   and negative points in nearby low regions.
4. Grid coordinates are mapped back to original image pixels through the encoder's
   resize/crop geometry (:class:`GridGeometry`).

SAM then cuts three candidate masks per prompt (``multimask=True``); in the ``clip-points``
preset :class:`~textseg.pipelines.selectors.ClipMaskSelector` keeps the one whose masked pixels
(everything outside the mask blanked) CLIP finds most like the class, mixed with SAM's
predicted IoU, rather than the largest or the one SAM likes best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from textseg._image import ImageInput, to_rgb_uint8
from textseg.clip.text import DEFAULT_BACKGROUND, DEFAULT_TEMPLATES, TextEmbedder
from textseg.fields import CLASS_NAME, POINT_MARGIN
from textseg.prompters.base import ClassPrompts
from textseg.sam.prompts import Prompts
from textseg.vocab import ClassesInput, Vocabulary

if TYPE_CHECKING:
    from textseg.clip.encoders import ClipEncoder, DenseFeatures

__all__ = [
    "ClipPointPrompter",
    "GridGeometry",
    "InstancePoints",
    "similarity_to_points",
]

_DATA_KEYS = {
    CLASS_NAME: ((), str),
    "prompt": ((), str),
    "point": ((2,), np.float32),
    POINT_MARGIN: ((), np.float32),
}


# ----------------------------------------------------------------------------- map -> points


class InstancePoints(NamedTuple):
    """Point prompt for one instance found in a similarity map.

    Attributes:
        points: ``(P, 2)`` float32 XY in map coordinates: cell ``(row r, col c)`` covers
            ``[c, c + 1) x [r, r + 1)``, so a point at its centre is ``(c + 0.5, r + 0.5)``.
            Positive points first, then negative ones.
        labels: ``(P,)`` int32, 1 = foreground, 0 = background.
        score: The region's peak value of the (background-subtracted, smoothed) map.
    """

    points: np.ndarray
    labels: np.ndarray
    score: float


def _check_map(value: object, name: str) -> np.ndarray:
    array = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: expected a non-empty (h, w) map, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name}: expected numbers, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name}: expected a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value}")
    return float(value)


def _check_count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _check_sigma(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"sigma: expected a number >= 0, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"sigma: expected a number >= 0 (cells), got {value!r}")
    return float(value)


def _check_min_score(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"min_score: expected a number (-inf for none), got {type(value).__name__}")
    if math.isnan(value):
        raise ValueError("min_score: expected a number (-inf for none), got nan")
    return float(value)


def _spread(candidates: np.ndarray, count: int, min_distance: float) -> list[int]:
    """Greedily take up to ``count`` of ``candidates`` ((K, 2) rows, in preference order)
    at least ``min_distance`` apart."""
    chosen: list[int] = []
    for i, point in enumerate(candidates):
        if len(chosen) == count:
            break
        if all(np.hypot(*(point - candidates[j])) >= min_distance for j in chosen):
            chosen.append(i)
    return chosen


def similarity_to_points(
    sim_map: np.ndarray | torch.Tensor,
    *,
    background: np.ndarray | torch.Tensor | float | None = None,
    sigma: float = 0.0,
    threshold: float = 0.5,
    low_threshold: float = 0.2,
    min_score: float = 0.0,
    min_area: int = 1,
    max_instances: int | None = None,
    num_positive: int = 1,
    num_negative: int = 1,
    min_distance: float | None = None,
) -> list[InstancePoints]:
    """Turn one class's similarity map into per-instance point prompts.

    Steps, on the ``(h, w)`` map ``m``:

    1. ``m = sim_map - background`` (if given), then a Gaussian blur of ``sigma`` cells
       (reflecting borders; 0 = none).
    2. With ``lo, hi`` the map's minimum and maximum, cells with
       ``m >= lo + threshold * (hi - lo)`` and ``m > min_score`` form the foreground; its
       8-connected regions of at least ``min_area`` cells are the instances, strongest peak
       first, at most ``max_instances``.
    3. Positive points: the region's peak, then its next highest cells at least
       ``min_distance`` from the points already taken (``num_positive`` in all; fewer if
       the region cannot hold that many so far apart).
    4. Negative points: cells with ``m <= lo + low_threshold * (hi - lo)`` (the low region),
       nearest to the instance's peak first, at least ``min_distance`` apart
       (``num_negative`` in all; fewer if the low region is smaller).

    Args:
        sim_map: ``(h, w)`` similarity of each cell to the class.
        background: ``(h, w)`` similarity to the background, or one number, subtracted first.
        sigma: Gaussian smoothing in cells.
        threshold: Foreground level as a fraction of the map's range, in [0, 1].
        low_threshold: Level of the low region (negative points) as a fraction of the range.
        min_score: A region's cells must exceed this absolute value (after subtracting
            ``background``: 0 means "more like the class than the background"). Use ``-inf``
            to rely on the relative threshold alone.
        min_area: Smallest region kept, in cells.
        max_instances: Most instances returned, or None for all.
        num_positive: Positive points per instance (>= 1).
        num_negative: Negative points per instance (>= 0).
        min_distance: Spacing of the points of one instance in cells; None: half the square
            root of the region's area per positive point (``sqrt(area / num_positive) / 2``),
            at least 1, so that the positive points fit well inside the region.

    Returns:
        One :class:`InstancePoints` per instance, highest score first; empty when no cell
        passes (e.g. a flat map, or the class nowhere beats the background).

    Raises:
        ValueError, TypeError: A map that is not ``(h, w)`` finite numbers, mismatched
            ``background``, or out-of-range settings.
    """
    m = _check_map(sim_map, "sim_map")
    if background is not None:
        if isinstance(background, (int, float, np.floating)) and not isinstance(background, bool):
            m = m - np.float32(background)
        else:
            bg = _check_map(background, "background")
            if bg.shape != m.shape:
                raise ValueError(
                    f"background: expected the shape of sim_map {m.shape}, got {bg.shape}"
                )
            m = m - bg
    threshold = _check_fraction(threshold, "threshold")
    low_threshold = _check_fraction(low_threshold, "low_threshold")
    num_positive = _check_count(num_positive, "num_positive", 1)
    num_negative = _check_count(num_negative, "num_negative", 0)
    min_area = _check_count(min_area, "min_area", 1)
    if max_instances is not None:
        max_instances = _check_count(max_instances, "max_instances", 1)
    sigma = _check_sigma(sigma)
    min_score = _check_min_score(min_score)
    if min_distance is not None and not min_distance > 0:
        raise ValueError(f"min_distance: expected a positive number or None, got {min_distance}")

    if sigma > 0:
        m = cv2.GaussianBlur(m, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)
    lo, hi = float(m.min()), float(m.max())
    if not hi > lo:  # a flat map has no peaks
        return []
    level = lo + threshold * (hi - lo)
    foreground = (m >= level) & (m > min_score)
    if not foreground.any():
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        foreground.astype(np.uint8), connectivity=8
    )
    low_rows, low_cols = np.nonzero(m <= lo + low_threshold * (hi - lo))
    low_xy = np.stack([low_cols, low_rows], axis=1).astype(np.float32) + 0.5

    regions = []
    for label in range(1, count):
        area = int(stats[label, cv2.CC_STAT_AREA])
        if area < min_area:
            continue
        rows, cols = np.nonzero(labels == label)
        values = m[rows, cols]
        regions.append((float(values.max()), area, rows, cols, values))
    regions.sort(key=lambda r: -r[0])
    if max_instances is not None:
        regions = regions[:max_instances]

    out: list[InstancePoints] = []
    for score, area, rows, cols, values in regions:
        # Half the side of each positive point's share of the region: sqrt(area) / 2 alone
        # (0.89 of a disc's radius) left room for a second point only on the region's rim,
        # so asking for more points mostly returned one.
        spacing = (
            min_distance
            if min_distance is not None
            else max(1.0, math.sqrt(area / num_positive) / 2)
        )
        order = np.argsort(-values, kind="stable")
        cells = np.stack([cols[order], rows[order]], axis=1).astype(np.float32) + 0.5
        positives = cells[_spread(cells, num_positive, spacing)]
        negatives = np.zeros((0, 2), np.float32)
        if num_negative and len(low_xy):
            distance = np.hypot(*(low_xy - positives[0]).T)
            near = low_xy[np.argsort(distance, kind="stable")]
            negatives = near[_spread(near, num_negative, spacing)]
        points = np.concatenate([positives, negatives]).astype(np.float32)
        point_labels = np.concatenate(
            [np.ones(len(positives), np.int32), np.zeros(len(negatives), np.int32)]
        )
        out.append(InstancePoints(points, point_labels, score))
    return out


# ------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class GridGeometry:
    """How a CLIP patch grid lies over the original image (the encoder's resize and crop).

    The ``(H, W)`` image was resized to ``resized_size`` (each axis with its own scale), then
    the window ``crop_box`` = ``(top, left, height, width)`` of the resized image was cut into
    ``patch_size`` patches. Grid coordinates are continuous, in cells: cell ``(r, c)`` covers
    ``[c, c + 1) x [r, r + 1)``. Build one from dense features with :meth:`from_dense`.
    """

    image_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    patch_size: int

    @classmethod
    def from_dense(cls, dense: DenseFeatures) -> GridGeometry:
        """The geometry of :class:`textseg.clip.DenseFeatures`."""
        return cls(
            image_size=tuple(dense.image_size),  # type: ignore[arg-type]
            resized_size=tuple(dense.resized_size),  # type: ignore[arg-type]
            crop_box=tuple(dense.crop_box),  # type: ignore[arg-type]
            patch_size=int(dense.patch_size),
        )

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Grid ``(..., 2)`` XY in cells -> original-image ``(..., 2)`` float32 XY pixels.

        A point on the grid maps to the continuous pixel coordinate (pixel ``(r, c)`` covers
        ``[c, c + 1) x [r, r + 1)``), clipped to ``[0, W] x [0, H]``.
        """
        xy = np.asarray(xy, dtype=np.float64)
        height, width = self.image_size
        top, left = self.crop_box[0], self.crop_box[1]
        sx = self.resized_size[1] / width
        sy = self.resized_size[0] / height
        x = (xy[..., 0] * self.patch_size + left) / sx
        y = (xy[..., 1] * self.patch_size + top) / sy
        out = np.stack([np.clip(x, 0, width), np.clip(y, 0, height)], axis=-1)
        return out.astype(np.float32)


# ------------------------------------------------------------------------- masked crops


class ClipPointPrompter:
    """Text -> point prompts from dense CLIP similarity maps, with no training.

    See the module docstring for the method. Each instance found becomes one prompt with
    ``num_positive`` foreground and up to ``num_negative`` background points; ``confidence``
    is CLIP's two-way probability of the class against the background at the region's peak,
    ``sigmoid(logit_scale * margin)``, where ``margin`` (``data["point_margin"]``) is the peak of
    the background-subtracted cosine map. A :class:`~textseg.vocab.Vocabulary`'s per-class
    ``thresholds`` are minimum confidences: a class's prompts below its threshold are dropped
    (classes without a threshold keep all that pass ``min_score``).

    Args:
        clip: A :class:`textseg.clip.ClipEncoder` (open_clip or transformers backend) or a
            registry name for :func:`textseg.clip.load_clip`.
        templates: Text templates with one ``{}``; class embeddings average over them (and
            over the class's synonyms).
        background: Background texts (templated alike); their per-cell maximum, together with
            the vocabulary's negative prompts, is subtracted from each class map.
        size: Shortest side of the dense CLIP input in pixels; None: twice the encoder's
            input size (448 for 224 models), for a finer grid.
        attention: Dense attention of the last CLIP block, ``"value"`` (MaskCLIP) or
            ``"value-value"``.
        upsample: Each map is bilinearly upsampled by this factor before the points are
            found, so points fall between patch centres.
        sigma: Gaussian smoothing of the map, in patch cells.
        threshold: Foreground level relative to the map's range (see
            :func:`similarity_to_points`).
        min_score: Minimum background-subtracted cosine of a region (0: the class must beat
            the background).
        max_instances: Most instances per class.
        num_positive: Foreground points per instance.
        num_negative: Background points per instance.
        min_area: Smallest region, in patch cells (fractions allowed).
        device: Where to run a CLIP model built from a name.
    """

    def __init__(
        self,
        clip: ClipEncoder | str,
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        background: Sequence[str] = DEFAULT_BACKGROUND,
        size: int | None = None,
        attention: str = "value",
        upsample: int = 4,
        sigma: float = 0.5,
        threshold: float = 0.5,
        min_score: float = 0.0,
        max_instances: int = 5,
        num_positive: int = 1,
        num_negative: int = 1,
        min_area: float = 0.5,
        device: str | torch.device | None = "cpu",
    ) -> None:
        if isinstance(clip, str):
            from textseg.clip.encoders import load_clip

            clip = load_clip(clip, device=device)
        if not callable(getattr(clip, "dense_features", None)):
            raise TypeError(
                f"clip: expected a textseg.clip.ClipEncoder or a registry name, got "
                f"{type(clip).__name__}"
            )
        self.clip = clip
        self._text = TextEmbedder(clip, templates, background)
        if attention not in ("value", "value-value"):
            raise ValueError(f"attention: expected 'value' or 'value-value', got {attention!r}")
        self.attention = attention
        self.size = None if size is None else _check_count(size, "size", 1)
        self.upsample = _check_count(upsample, "upsample", 1)
        self.sigma = _check_sigma(sigma)
        self.threshold = _check_fraction(threshold, "threshold")
        self.min_score = _check_min_score(min_score)
        self.max_instances = _check_count(max_instances, "max_instances", 1)
        self.num_positive = _check_count(num_positive, "num_positive", 1)
        self.num_negative = _check_count(num_negative, "num_negative", 0)
        if not min_area > 0:
            raise ValueError(f"min_area: expected a positive number of cells, got {min_area}")
        self.min_area = float(min_area)

    def __repr__(self) -> str:
        return f"ClipPointPrompter({getattr(self.clip, 'name', type(self.clip).__name__)!r})"

    # ---------------------------------------------------------------- text embeddings

    @property
    def templates(self) -> tuple[str, ...]:
        """The text templates."""
        return self._text.templates

    @property
    def background(self) -> tuple[str, ...]:
        """The background texts."""
        return self._text.background

    def class_embeddings(self, classes: ClassesInput) -> torch.Tensor:
        """``(C, D)`` L2-normalised text embedding per class (templates over the class name
        and its synonyms, :class:`textseg.clip.TextEmbedder`).

        Raises:
            TypeError, ValueError: Bad class list (:class:`~textseg.vocab.Vocabulary`), or a
                templated name too long for CLIP's text encoder.
        """
        return self._text(classes).classes

    # ---------------------------------------------------------------------- prompts

    def similarity_maps(
        self, image: ImageInput, classes: ClassesInput
    ) -> tuple[torch.Tensor, GridGeometry]:
        """Background-subtracted similarity maps on the CLIP patch grid.

        Returns:
            ``(C, h, w)`` float32 cosine margins (class minus the best background text per
            cell) and the grid's geometry.
        """
        vocab = Vocabulary.coerce(classes)
        text = self._text(vocab)
        class_emb = text.classes
        bg_emb = text.rejects if len(text.rejects) else None
        size = self.size if self.size is not None else 2 * int(self.clip.input_size)
        dense = self.clip.dense_features(image, size=size, attention=self.attention)
        sims = dense.similarity(class_emb).float().cpu()
        if bg_emb is not None:
            sims = sims - dense.similarity(bg_emb).float().cpu().amax(dim=0, keepdim=True)
        return sims, GridGeometry.from_dense(dense)

    def prompts(self, image: ImageInput, classes: ClassesInput) -> ClassPrompts:
        """Point prompts for every instance of every class CLIP finds in one image.

        Args:
            image: Path, PIL image or ``(H, W, 3)`` uint8 RGB array, any size.
            classes: Class names or a :class:`~textseg.vocab.Vocabulary` (synonyms join their
                class's embedding, negatives join the background, thresholds are minimum
                confidences per class).

        Returns:
            :class:`ClassPrompts`: ``points`` ``(N, P, 2)`` XY original pixels (padded with
            label -1), ``class_id``, ``confidence`` (CLIP probability, see the class doc),
            ``data`` ``class_name``, ``prompt``, ``point`` (the main positive point) and
            ``point_margin``; ``multimask=True`` (a selector such as
            :class:`~textseg.pipelines.selectors.ClipMaskSelector` picks among SAM's
            candidates).
        """
        vocab = Vocabulary.coerce(classes)
        array = to_rgb_uint8(image)
        names = tuple(vocab.names)
        sims, geometry = self.similarity_maps(array, vocab)
        factor = self.upsample
        if factor > 1:
            h, w = sims.shape[-2:]
            sims = F.interpolate(
                sims[None], size=(h * factor, w * factor), mode="bilinear", align_corners=False
            )[0]
        maps = sims.numpy()
        point_lists, label_lists, class_ids, scores = [], [], [], []
        for class_id, sim in enumerate(maps):
            found = similarity_to_points(
                sim,
                sigma=self.sigma * factor,
                threshold=self.threshold,
                min_score=self.min_score,
                min_area=max(1, round(self.min_area * factor * factor)),
                max_instances=self.max_instances,
                num_positive=self.num_positive,
                num_negative=self.num_negative,
                min_distance=None,
            )
            for inst in found:
                point_lists.append(geometry.to_pixels(inst.points / factor))
                label_lists.append(inst.labels)
                class_ids.append(class_id)
                scores.append(inst.score)
        if not point_lists:
            return ClassPrompts.empty(data_keys=_DATA_KEYS, multimask=True, class_names=names)
        margin = np.asarray(scores, np.float32)
        confidence = 1.0 / (1.0 + np.exp(-float(self.clip.logit_scale) * margin))
        class_arr = np.asarray(class_ids, np.int64)
        # The vocabulary's per-class thresholds apply to the confidence; classes without one
        # keep every prompt that passed min_score.
        keep = np.flatnonzero(confidence >= vocab.thresholds_array(0.0)[class_arr])
        if len(keep) == 0:
            return ClassPrompts.empty(data_keys=_DATA_KEYS, multimask=True, class_names=names)
        point_lists = [point_lists[i] for i in keep]
        label_lists = [label_lists[i] for i in keep]
        margin, confidence, class_arr = margin[keep], confidence[keep], class_arr[keep]
        return ClassPrompts(
            prompts=Prompts.from_point_lists(point_lists, label_lists),
            class_id=class_arr,
            confidence=confidence.astype(np.float32),
            data={
                CLASS_NAME: np.array([names[c] for c in class_arr], dtype=str),
                "prompt": np.array([names[c] for c in class_arr], dtype=str),
                "point": np.stack([p[0] for p in point_lists]).astype(np.float32),
                POINT_MARGIN: margin,
            },
            multimask=True,
            class_names=names,
        )
