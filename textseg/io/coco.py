"""COCO instance JSON: the conversions, import and the user's ground truth (the incremental,
atomic, resumable writer is :class:`textseg.io.coco_writer.CocoWriter`).

The two conversions, used by everything else here:

- :func:`detections_to_coco`: ``supervision.Detections`` of one image -> COCO annotations;
- :func:`coco_to_detections`: COCO annotations of one image -> ``supervision.Detections``.

Conventions:

- class ids: ``class_id`` indexes the vocabulary ``classes``; category ids are COCO's own
  (by default ``class_id + 1``: COCO reserves 0). On import, ``class_id`` is the position of the
  category among the file's categories sorted by id, so a file written here comes back with the
  same ``class_id``.
- ``bbox`` is COCO's ``[x, y, w, h]``: the extent of the segmentation when there is a mask
  (pixel edges, what COCO evaluation expects; a 1-pixel mask has ``w = h = 1``), else
  ``detections.xyxy`` as given (``w = x2 - x1``).
- On import, ``xyxy`` is the box of the mask (x2/y2 the last column/row, inclusive, like
  supervision's ``mask_to_xyxy`` and textseg's SAM core), or ``[x, y, x + w, y + h]`` from
  ``bbox`` when an annotation has no mask or an empty one. (So a detector's box that differs
  from its mask's box comes back as the mask's box; keep it in ``data`` if it matters.)
- ``segmentation`` is a compressed RLE (default; exact, compact) or polygons (exact too: outlines
  along pixel edges, holes cut in through zero-width bridges, see :mod:`textseg.io.polygons`;
  typically 5x bigger than RLE).
- ``confidence`` is written as ``score``; every other per-instance field of
  ``detections.data`` (``sam_iou``, ``clip_score``, ``prompt``...) is written under its own key
  and read back into ``data``; ``data["class_name"]`` comes from the category.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import supervision as sv

from textseg.fields import CLASS_NAME
from textseg.io._common import (
    check_detections,
    check_masks,
    class_indices,
    iter_masks,
    json_value,
)
from textseg.io.polygons import mask_to_polygons, polygons_to_rle
from textseg.io.rle import decode_masks, encode_mask, rle_area, rle_xyxy, to_rle
from textseg.vocab import normalize_name

__all__ = [
    "CocoData",
    "GroundTruth",
    "coco_to_detections",
    "detections_to_coco",
    "load_coco",
]

SegmentationFormat = Literal["rle", "polygon"]
PolygonTracing = Literal["edges", "centres"]

#: Annotation keys with a COCO meaning; other keys are per-instance ``data`` fields.
_COCO_KEYS = frozenset(
    {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation", "score"}
)
#: ``data`` keys that map to COCO keys or are implied by the category.
_DATA_MAPPED = frozenset({CLASS_NAME, "iscrowd"})


def _category_ids(classes: Sequence[str], category_ids: Sequence[int] | None) -> list[int]:
    if category_ids is None:
        return list(range(1, len(classes) + 1))
    if len(category_ids) != len(classes):
        raise ValueError(
            f"category_ids has {len(category_ids)} ids for {len(classes)} classes; give one "
            f"COCO category id per class"
        )
    return [int(c) for c in category_ids]


def _check_format(segmentation: str) -> None:
    if segmentation not in ("rle", "polygon"):
        raise ValueError(f"segmentation must be 'rle' or 'polygon', got {segmentation!r}")


def _mask_size(mask: Any, what: str) -> tuple[int, int]:
    """(H, W) of ``Detections.mask`` (dense or ``supervision.CompactMask``)."""
    shape = getattr(mask, "shape", None)
    if shape is None or len(shape) != 3:
        check_masks(mask, what=what)  # raises the precise error
    return int(shape[1]), int(shape[2])


def detections_to_coco(
    detections: sv.Detections,
    image_id: int,
    classes: Sequence[str],
    *,
    height: int | None = None,
    width: int | None = None,
    category_ids: Sequence[int] | None = None,
    segmentation: SegmentationFormat = "rle",
    first_id: int = 1,
    polygon_tolerance: float = 0.0,
    rles: Sequence[Mapping[str, Any]] | None = None,
    polygon_tracing: PolygonTracing = "edges",
) -> list[dict[str, Any]]:
    """Convert the detections of one image to COCO annotations.

    Args:
        detections: ``xyxy`` (N, 4) absolute pixels; ``mask`` (N, H, W) bool or None
            (then no ``segmentation`` is written); ``class_id`` indexing ``classes`` (or
            ``data["class_name"]``); optional ``confidence`` and extra ``data`` fields.
        image_id: The COCO image id.
        classes: The vocabulary; ``class_id`` k is ``classes[k]``.
        height: Image height; checked against the masks when given.
        width: Image width; checked against the masks when given.
        category_ids: COCO category id of each class (default ``1..len(classes)``).
        segmentation: ``"rle"`` or ``"polygon"`` (both exact, see the module docstring).
        first_id: Annotation id of the first detection; the others follow.
        polygon_tolerance: Simplification for polygons, in pixels (0 = exact).
        rles: The masks as COCO RLEs already (``Result.masks.rles``): written as they are,
            nothing is encoded again; ``detections.mask`` is then not read.
        polygon_tracing: ``"edges"`` (exact pixel-edge outlines) or ``"centres"`` (through
            pixel centres, as OpenCV-based tools fill them; see :mod:`textseg.io.polygons`).

    Crowd annotations (``data["iscrowd"]``) are always written as RLE: a crowd region is not
    a polygon, and tools that read COCO (supervision among them) expect RLE there. A
    per-instance value that is NaN or infinite was not measured and is left out of that
    annotation.

    Returns:
        ``N`` COCO annotation dicts, JSON-ready.

    Raises:
        TypeError: Not Detections, non-bool masks, or a ``data`` value that is not JSON.
        ValueError: Masks of another size, class id out of range or inconsistent with
            ``class_name``, an empty mask with ``segmentation="polygon"``, or a ``data`` key
            that is a COCO key.
    """
    detections = check_detections(detections, what="detections_to_coco")
    _check_format(segmentation)
    cat_ids = _category_ids(classes, category_ids)
    n = len(detections)
    what = f"image {image_id}"
    labels = class_indices(detections, classes, what=what)
    extras = {k: v for k, v in detections.data.items() if k not in _DATA_MAPPED}
    clash = sorted(set(extras) & (_COCO_KEYS | {"tracker_id"}))
    if clash:
        raise ValueError(
            f"{what}: Detections.data has keys {clash}, which are COCO annotation keys; rename them"
        )
    crowd = np.asarray(detections.data.get("iscrowd", np.zeros(n)), bool).reshape(-1)
    xyxy = np.asarray(detections.xyxy, dtype=np.float64)
    segments: list[Any] = [None] * n
    encoded: list[dict[str, Any] | None] = [None] * n
    if rles is not None:
        if len(rles) != n:
            raise ValueError(f"{what}: {len(rles)} RLEs for {n} detections; give one per detection")
        if height is None or width is None:
            height, width = (int(v) for v in rles[0]["size"]) if n else (height, width)
        encoded = [to_rle(r, height, width, what=f"{what}: rle {i}") for i, r in enumerate(rles)]
        masks: Any = None
    elif detections.mask is not None:
        if height is None or width is None:
            height, width = _mask_size(detections.mask, what)
        masks = iter_masks(detections.mask, n, height, width, what=what)
    else:
        masks = None
    if rles is not None or masks is not None:
        for i in range(n):
            mask = next(masks) if masks is not None else None
            if segmentation == "rle" or crowd[i]:
                if encoded[i] is None:
                    encoded[i] = encode_mask(mask)
                segments[i] = encoded[i]
                continue
            if mask is None:
                mask = decode_masks([encoded[i]], height, width)[0]
            polygons = mask_to_polygons(mask, tolerance=polygon_tolerance, trace=polygon_tracing)
            if not polygons:
                raise ValueError(
                    f"{what}: detection {i} has an empty mask, which has no polygon; drop "
                    f"empty masks first (detections[detections.area > 0]) or use "
                    f"segmentation='rle'"
                )
            segments[i] = polygons
            if encoded[i] is None:
                encoded[i] = polygons_to_rle(polygons, height, width)
    rles = encoded
    annotations = []
    for i in range(n):
        ann: dict[str, Any] = {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": cat_ids[int(labels[i])],
        }
        rle = rles[i]
        area = int(rle_area([rle])[0]) if rle is not None else 0
        if rle is not None and area > 0:
            x1, y1, x2, y2 = rle_xyxy([rle])[0].tolist()
            ann["bbox"] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
        else:
            x1, y1, x2, y2 = xyxy[i].tolist()
            ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            if rle is None:
                area = float((x2 - x1) * (y2 - y1))
        ann["area"] = area
        ann["iscrowd"] = int(crowd[i])
        if segments[i] is not None:
            ann["segmentation"] = segments[i]
        if detections.confidence is not None and np.isfinite(detections.confidence[i]):
            ann["score"] = float(detections.confidence[i])
        if detections.tracker_id is not None:
            ann["tracker_id"] = int(detections.tracker_id[i])
        for key, values in extras.items():
            value = json_value(values[i], what=f"{what}: data[{key!r}]")
            if _finite(value):  # not measured (NaN): absent, not a filler
                ann[key] = value
        annotations.append(ann)
    return annotations


def _finite(value: Any) -> bool:
    """False for a NaN or infinite number (or a list holding one): a value not measured."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _column(values: list[Any]) -> np.ndarray:
    """Per-instance values -> an array of length N (object dtype when ragged or mixed)."""
    try:
        array = np.asarray(values)
    except ValueError:
        array = None
    if array is None or array.dtype == object or array.shape[:1] != (len(values),):
        array = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            array[i] = value
    return array


def coco_to_detections(
    annotations: Sequence[Mapping[str, Any]],
    height: int,
    width: int,
    classes: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
) -> sv.Detections:
    """Convert the COCO annotations of one image to Detections.

    Args:
        annotations: COCO annotation dicts of one image. ``segmentation`` may be polygons, an
            uncompressed RLE (``iscrowd=1`` in COCO) or a compressed RLE.
        height: Image height in pixels.
        width: Image width in pixels.
        classes: Category names; ``classes[k]`` is the category with id ``category_ids[k]``.
        category_ids: COCO category id of each class (default ``1..len(classes)``).

    Returns:
        Detections with ``xyxy`` (N, 4) float32, ``mask`` (N, H, W) bool (None when no
        annotation has a segmentation), ``class_id`` (N,) int, ``confidence`` (N,) float32 from
        ``score`` (None when absent), ``data["class_name"]``, ``data["iscrowd"]`` (N,) bool and
        every other annotation key as a ``data`` field (None where an annotation lacks it).

    Raises:
        ValueError: Unknown category, malformed or wrongly sized segmentation, an annotation
            with neither bbox nor segmentation, segmentation or score on only some annotations.
    """
    cat_ids = _category_ids(classes, category_ids)
    index = {c: k for k, c in enumerate(cat_ids)}
    n = len(annotations)
    labels = np.zeros(n, dtype=np.int64)
    rles: list[dict[str, Any] | None] = []
    for i, ann in enumerate(annotations):
        what = f"annotation {ann.get('id', i)}"
        if ann.get("category_id") not in index:
            raise ValueError(
                f"{what}: category_id {ann.get('category_id')!r} is not one of the categories "
                f"{cat_ids[:20]}"
            )
        labels[i] = index[ann["category_id"]]
        segm = ann.get("segmentation")
        rles.append(None if segm is None else to_rle(segm, height, width, what=what))
    with_mask = [r is not None for r in rles]
    if any(with_mask) and not all(with_mask):
        i = with_mask.index(False)
        raise ValueError(
            f"annotation {annotations[i].get('id', i)} has no segmentation while others of "
            f"its image have; give every annotation a segmentation, or none"
        )
    xyxy = np.zeros((n, 4), dtype=np.float32)
    if n and all(with_mask):
        xyxy = rle_xyxy(rles)  # type: ignore[arg-type]
        areas = rle_area(rles)  # type: ignore[arg-type]
    else:
        areas = np.zeros(n, dtype=np.int64)
    for i, ann in enumerate(annotations):
        if areas[i] > 0:
            continue
        if "bbox" not in ann:
            raise ValueError(
                f"annotation {ann.get('id', i)} has neither a bbox nor a non-empty segmentation"
            )
        x, y, w, h = (float(v) for v in ann["bbox"])
        xyxy[i] = [x, y, x + w, y + h]
    mask = decode_masks(rles, height, width) if any(with_mask) else None  # type: ignore[arg-type]
    scored = ["score" in a for a in annotations]
    if any(scored) and not all(scored):
        raise ValueError("some annotations have a score and others not; give all a score, or none")
    confidence = (
        np.asarray([a["score"] for a in annotations], dtype=np.float32)
        if n and all(scored)
        else None
    )
    tracked = n > 0 and all("tracker_id" in a for a in annotations)
    data: dict[str, Any] = {
        CLASS_NAME: np.array([classes[k] for k in labels], dtype=str),
        "iscrowd": np.asarray([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool),
    }
    extra_keys: list[str] = []
    for ann in annotations:
        extra_keys += [
            k for k in ann if k not in _COCO_KEYS and k != "tracker_id" and k not in extra_keys
        ]
    for key in extra_keys:
        data[key] = _column([a.get(key) for a in annotations])
    return sv.Detections(
        xyxy=xyxy.astype(np.float32),
        mask=mask,
        class_id=labels,
        confidence=confidence,
        tracker_id=np.asarray([a["tracker_id"] for a in annotations], dtype=np.int64)
        if tracked
        else None,
        data=data,
    )


def _read_coco(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"COCO file not found: {path}")
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a JSON file: {err}") from None
    if not isinstance(dataset, dict):
        raise ValueError(
            f"{path}: expected a COCO dict with images, annotations and categories, got a "
            f"{type(dataset).__name__} (a results list? load it with pycocotools loadRes)"
        )
    missing = [k for k in ("images", "annotations", "categories") if k not in dataset]
    if missing:
        raise ValueError(f"{path}: not a COCO instances file, missing keys {missing}")
    names = [c.get("name") for c in dataset["categories"]]
    ids = [c.get("id") for c in dataset["categories"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: category ids are not unique: {ids}")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: category names are not unique: {names}")
    return dataset


class _LazyDetections(Mapping[int, sv.Detections]):
    """image id -> Detections, decoded at each access so memory stays bounded."""

    def __init__(
        self,
        images: Sequence[Mapping[str, Any]],
        annotations: Sequence[Mapping[str, Any]],
        classes: list[str],
        category_ids: list[int],
        source: Path,
    ) -> None:
        self._images = {int(im["id"]): im for im in images}
        self._anns: dict[int, list[Mapping[str, Any]]] = {i: [] for i in self._images}
        for ann in annotations:
            image_id = ann.get("image_id")
            if image_id not in self._anns:
                raise ValueError(
                    f"{source}: annotation {ann.get('id')} refers to image {image_id!r}, which "
                    f"is not in images"
                )
            self._anns[image_id].append(ann)
        self._with_masks = any(a.get("segmentation") is not None for a in annotations)
        self._classes = classes
        self._category_ids = category_ids

    def __getitem__(self, image_id: int) -> sv.Detections:
        image = self._images[image_id]
        height, width = int(image["height"]), int(image["width"])
        detections = coco_to_detections(
            self._anns[image_id], height, width, self._classes, category_ids=self._category_ids
        )
        if len(detections) == 0 and self._with_masks:
            detections.mask = np.zeros((0, height, width), dtype=bool)
        return detections

    def __iter__(self) -> Iterator[int]:
        return iter(self._images)

    def __len__(self) -> int:
        return len(self._images)


class CocoData(NamedTuple):
    """What :func:`load_coco` returns; unpacks as ``images, categories, detections``."""

    #: COCO image records (``id``, ``file_name``, ``width``, ``height``...), in file order.
    images: list[dict[str, Any]]
    #: COCO category records sorted by id; ``class_id`` k is ``categories[k]``.
    categories: list[dict[str, Any]]
    #: image id -> Detections (see :func:`coco_to_detections`), decoded on each access.
    detections: Mapping[int, sv.Detections]

    @property
    def classes(self) -> list[str]:
        """Category names, ``classes[class_id]``."""
        return [c["name"] for c in self.categories]


def load_coco(path: str | os.PathLike[str]) -> CocoData:
    """Read a COCO instances JSON (ground truth or a file written by :class:`CocoWriter`).

    Masks are decoded when an image's detections are looked up, not at load, so a large file
    costs its JSON in memory, not ``N x H x W`` bytes per image.

    Args:
        path: The ``.json`` file.

    Returns:
        :class:`CocoData` ``(images, categories, detections)``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a COCO instances file, duplicate category ids or names, or an
            annotation of an unknown image (malformed annotations raise when looked up).
    """
    path = Path(path)
    dataset = _read_coco(path)
    categories = sorted(dataset["categories"], key=lambda c: c["id"])
    classes = [str(c["name"]) for c in categories]
    category_ids = [int(c["id"]) for c in categories]
    detections = _LazyDetections(
        dataset["images"], dataset["annotations"], classes, category_ids, path
    )
    return CocoData(list(dataset["images"]), categories, detections)


class GroundTruth:
    """The user's COCO file, whose category ids and image ids a run writes, so that its
    ``results.json`` scores against the file with pycocotools (``COCO(GT).loadRes``).

    Args:
        path: The COCO instances JSON.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        coco = load_coco(self.path)
        self.categories = {str(c["name"]): int(c["id"]) for c in coco.categories}
        self.images = {str(im["file_name"]): im for im in coco.images}
        by_base: dict[str, list[str]] = {}
        for name in self.images:
            by_base.setdefault(Path(name).name, []).append(name)
        self._by_base = by_base

    def classes(self, asked: Sequence[str]) -> tuple[list[str], list[int]]:
        """The classes to find (``asked``, else all of the file's) and their category ids.

        A name is the file's category name, exactly (``"person "``, ``"teddy bear."``), or as
        :class:`textseg.vocab.Vocabulary` normalises it (``"person"``) when that names one
        category only.

        Raises:
            ValueError: A class that is not one of the file's categories.
        """
        normalised: dict[str, list[int]] = {}
        for name, cat_id in self.categories.items():
            normalised.setdefault(normalize_name(name), []).append(cat_id)
        names = list(asked) or list(self.categories)
        ids: list[int] = []
        missing = []
        for name in names:
            if name in self.categories:
                ids.append(self.categories[name])
            elif len(normalised.get(normalize_name(name), [])) == 1:
                ids.append(normalised[normalize_name(name)][0])
            else:
                missing.append(name)
        if missing:
            raise ValueError(
                f"{self.path}: classes {missing} are not among its categories "
                f"{sorted(self.categories)[:20]}; use the file's category names"
            )
        return names, ids

    def image(self, relative: str) -> dict[str, Any] | None:
        """The image record whose file_name is ``relative`` (or ends with its base name, when
        that is unique), or None."""
        if relative in self.images:
            return self.images[relative]
        matches = [n for n in self._by_base.get(Path(relative).name, []) if relative.endswith(n)]
        if not matches:
            matches = self._by_base.get(Path(relative).name, [])
        return self.images[matches[0]] if len(matches) == 1 else None
