"""A COCO-format evaluation set: annotations JSON + image folder, read one image at a time."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg._image import load_image
from textseg.io.coco import coco_to_detections

__all__ = ["EvalDataset", "Sample", "load_dataset"]


@dataclass
class Sample:
    """One image of an :class:`EvalDataset` with its ground truth.

    Attributes:
        image_id: The COCO image id.
        file_name: The image record's ``file_name``.
        image: ``(H, W, 3)`` uint8 RGB.
        gt: The non-crowd instances with a non-empty mask: ``mask`` (N, H, W) bool, ``xyxy``
            (N, 4) float32 box of the mask (x2, y2 = last column, row), ``class_id`` (N,) index
            into :attr:`EvalDataset.classes`, ``data["class_name"]``.
    """

    image_id: int
    file_name: str
    image: np.ndarray
    gt: sv.Detections

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.image.shape[0]), int(self.image.shape[1])


class EvalDataset:
    """A COCO instances file and its image folder, restricted to the first ``max_images``.

    Images are decoded one at a time while iterating, so memory does not grow with the set.
    Crowd annotations (``iscrowd=1``) are left out of :attr:`Sample.gt`; mask AP still treats
    them as COCO does (matches to them are ignored).

    Args:
        annotations: The COCO instances JSON (every annotation needs a ``segmentation``).
        images: The folder the records' ``file_name`` are relative to.
        max_images: Evaluate only the first N images, in file order (None: all).

    Raises:
        FileNotFoundError: The JSON file, the image folder or a selected image is missing.
        ValueError: Not a COCO instances file, an annotation without segmentation, duplicate
            category names, or ``max_images < 1``.
    """

    def __init__(
        self,
        annotations: str | os.PathLike[str],
        images: str | os.PathLike[str],
        *,
        max_images: int | None = None,
    ) -> None:
        self.annotations_path = Path(annotations)
        self.images_dir = Path(images)
        if not self.annotations_path.is_file():
            raise FileNotFoundError(f"annotations file not found: {self.annotations_path}")
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images_dir}")
        if max_images is not None and (isinstance(max_images, bool) or max_images < 1):
            raise ValueError(f"max_images: expected a positive integer or None, got {max_images!r}")
        self._dataset = _read(self.annotations_path)
        categories = sorted(self._dataset["categories"], key=lambda c: int(c["id"]))
        #: Category names sorted by category id; ``class_id`` indexes them.
        self.classes: list[str] = [str(c["name"]) for c in categories]
        #: The COCO id of each class.
        self.category_ids: list[int] = [int(c["id"]) for c in categories]
        records = list(self._dataset["images"])
        if max_images is not None:
            records = records[:max_images]
        self.images: list[dict[str, Any]] = records
        selected = {int(im["id"]) for im in records}
        self._anns: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in records}
        known = set(self.category_ids)
        for ann in self._dataset["annotations"]:
            image_id = int(ann["image_id"])
            if image_id in selected:
                if int(ann.get("category_id", -1)) not in known:
                    raise ValueError(
                        f"{self.annotations_path}: annotation {ann.get('id')} has category_id "
                        f"{ann.get('category_id')!r}, which is not among the categories"
                    )
                if ann.get("segmentation") is None:
                    raise ValueError(
                        f"{self.annotations_path}: annotation {ann.get('id')} has no "
                        f"segmentation; mask evaluation needs a mask (polygons or RLE) for "
                        f"every annotation"
                    )
                self._anns[image_id].append(ann)
        missing = [
            im["file_name"] for im in records if not (self.images_dir / im["file_name"]).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(records)} images not found in {self.images_dir}, e.g. "
                f"{missing[0]}; give the image folder with --images / images="
            )

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"EvalDataset({str(self.annotations_path)!r}, images={len(self)}, "
            f"classes={len(self.classes)})"
        )

    @property
    def name(self) -> str:
        """The dataset folder's name (or the JSON file's stem when it lies elsewhere)."""
        parent = self.annotations_path.parent
        return (
            parent.name
            if self.annotations_path.name == "annotations.json"
            else (self.annotations_path.stem)
        )

    def gt_counts(self) -> np.ndarray:
        """``(I, C)`` int64 non-crowd instances per selected image and class."""
        index = {c: k for k, c in enumerate(self.category_ids)}
        table = np.zeros((len(self.images), len(self.classes)), np.int64)
        for row, im in enumerate(self.images):
            for ann in self._anns[int(im["id"])]:
                if not ann.get("iscrowd", 0):
                    table[row, index[int(ann["category_id"])]] += 1
        return table

    def present_classes(self) -> list[int]:
        """Class ids with at least one non-crowd instance in the selected images, in order."""
        return [int(k) for k in np.flatnonzero(self.gt_counts().sum(axis=0))]

    def coco_gt(self) -> dict[str, Any]:
        """The COCO dict restricted to the selected images (for pycocotools)."""
        return {
            "info": self._dataset.get("info", {}),
            "licenses": self._dataset.get("licenses", []),
            "images": self.images,
            "annotations": [a for im in self.images for a in self._anns[int(im["id"])]],
            "categories": self._dataset["categories"],
        }

    def sample(self, index: int) -> Sample:
        """Read image ``index`` (in selection order) and its ground truth."""
        record = self.images[index]
        image_id = int(record["id"])
        path = self.images_dir / record["file_name"]
        image = load_image(path)
        h, w = int(record["height"]), int(record["width"])
        if image.shape[:2] != (h, w):
            raise ValueError(
                f"{path}: the image is {image.shape[1]}x{image.shape[0]} (after EXIF "
                f"orientation) but its record says {w}x{h}; the annotations do not fit this file"
            )
        anns = [a for a in self._anns[image_id] if not a.get("iscrowd", 0)]
        gt = coco_to_detections(anns, h, w, self.classes, category_ids=self.category_ids)
        if gt.mask is None:
            gt.mask = np.zeros((0, h, w), bool)
        gt = gt[gt.mask.reshape(len(gt), -1).any(axis=1)] if len(gt) else gt
        return Sample(image_id, str(record["file_name"]), image, gt)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self.sample(index)


def _read(path: Path) -> dict[str, Any]:
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a JSON file: {err}") from None
    if not isinstance(dataset, dict) or any(
        k not in dataset for k in ("images", "annotations", "categories")
    ):
        raise ValueError(
            f"{path}: expected a COCO instances dict with images, annotations and categories"
        )
    names = [str(c.get("name")) for c in dataset["categories"]]
    if len({n.casefold() for n in names}) != len(names):
        raise ValueError(f"{path}: category names are not unique (case-insensitive): {names}")
    return dataset


def load_dataset(
    path: str | os.PathLike[str],
    *,
    annotations: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    max_images: int | None = None,
) -> EvalDataset:
    """Open an evaluation set laid out as ``DATASET/annotations.json`` + ``DATASET/images/``.

    Args:
        path: The dataset folder, or a COCO JSON file (images then in ``images/`` beside it,
            unless ``images`` says otherwise).
        annotations: The COCO JSON, when it is not ``DATASET/annotations.json``.
        images: The image folder, when it is not ``DATASET/images``.
        max_images: Evaluate only the first N images.

    Raises:
        FileNotFoundError: The folder, the JSON or the image folder does not exist; the message
            says which option to give.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    root = path if path.is_dir() else path.parent
    if annotations is None:
        annotations = path if path.is_file() else root / "annotations.json"
        if not Path(annotations).is_file():
            raise FileNotFoundError(
                f"{root} has no annotations.json; give the COCO file with --annotations FILE"
            )
    if images is None:
        images = root / "images"
        if not images.is_dir():
            raise FileNotFoundError(
                f"{root} has no images/ folder; give the image folder with --images DIR"
            )
    return EvalDataset(annotations, images, max_images=max_images)
