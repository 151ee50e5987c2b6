"""COCO instance JSON written image by image: incremental, atomic and resumable
(:class:`CocoWriter`); the conversions it uses are :mod:`textseg.io.coco`'s."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg.io._common import atomic_write, json_value, prepare_output_dir
from textseg.io.coco import (
    SegmentationFormat,
    _category_ids,
    _check_format,
    _read_coco,
    detections_to_coco,
)

__all__ = ["CocoWriter"]


class CocoWriter:
    """Write a COCO instances JSON image by image, atomically, and resume it later.

    The file on disk is always a complete, valid COCO file: every :meth:`flush` writes a temp
    file beside it and renames it over the old one (``os.replace``), so a crash or Ctrl-C
    leaves the previous version. Opening an existing file resumes it: images already there are
    kept with their ids, ``file_name in writer`` tells a labelling loop what to skip, new images
    and annotations get the next free ids, and categories keep their ids (new class names are
    appended). Masks are held as RLE (or polygons) between flushes, not dense.

    Example::

        with CocoWriter("labels.json", classes=["cat", "dog"]) as writer:
            for path in image_paths:
                if path.name in writer:
                    continue  # done in an earlier run
                detections = pipeline(path)
                writer.add(path.name, width, height, detections)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        *,
        segmentation: SegmentationFormat = "rle",
        flush_every: int = 100,
        polygon_tolerance: float = 0.0,
        resume: bool = True,
        category_ids: Sequence[int] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Open (resume) or create a COCO file.

        Args:
            path: The ``.json`` file; its folder is created if needed.
            classes: The vocabulary (``class_id`` k is ``classes[k]``). Categories get ids
                1, 2, ... in this order in a new file; when resuming, names already in the file
                keep their ids and new names get the next ids. None: take the file's categories
                (sorted by id) when resuming.
            segmentation: ``"rle"`` (compact) or ``"polygon"`` (both exact, see the module
                docstring).
            flush_every: Write the file after this many :meth:`add` calls (and on
                :meth:`close` / leaving the ``with`` block). 1 is safest; every flush rewrites
                the whole file, so large jobs want more.
            polygon_tolerance: Polygon simplification in pixels (0 = exact).
            resume: When the file exists, append to it (True) or raise FileExistsError.
            category_ids: COCO category id of each class in a new file (default 1, 2, ...),
                e.g. the ids of the user's ground truth so that results score against it.
            info: The ``info`` record of a new file.

        Raises:
            FileExistsError: The file exists and ``resume`` is False.
            ValueError: No classes for a new file, duplicate class names, a bad option, or an
                existing file that is not COCO.
            NotADirectoryError / PermissionError: The output folder cannot be written.
        """
        _check_format(segmentation)
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise ValueError(f"flush_every must be an int >= 1, got {flush_every!r}")
        self.path = Path(path)
        self.segmentation: SegmentationFormat = segmentation
        self.flush_every = flush_every
        self.polygon_tolerance = float(polygon_tolerance)
        prepare_output_dir(self.path.parent, what="CocoWriter")
        if self.path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.path} exists; pass resume=True to append to it, or delete it"
                )
            self._dataset = _read_coco(self.path)
        else:
            if classes is None:
                raise ValueError(
                    f"{self.path} does not exist yet: pass classes=[...] (the vocabulary) to "
                    f"create it"
                )
            self._dataset = {
                "info": dict(info) if info is not None else {"description": "written by textseg"},
                "licenses": [],
                "images": [],
                "annotations": [],
                "categories": [],
            }
        categories = self._dataset["categories"]
        by_name = {str(c["name"]): int(c["id"]) for c in categories}
        if classes is None:
            classes = [str(c["name"]) for c in sorted(categories, key=lambda c: c["id"])]
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be unique, got {classes}")
        wanted = dict(zip(classes, _category_ids(classes, category_ids)))
        if category_ids is not None:
            clash = {
                n: (by_name[n], wanted[n])
                for n in classes
                if by_name.get(n, wanted[n]) != wanted[n]
            }
            if clash:
                raise ValueError(
                    f"{self.path} has other category ids for {sorted(clash)} (file, asked): "
                    f"{clash}; write to a new file"
                )
        next_id = max([*by_name.values(), *(wanted.values() if category_ids else [])], default=0)
        next_id += 1
        new_classes = [name for name in classes if name not in by_name]
        for name in new_classes:
            cat_id = wanted[name] if category_ids is not None else next_id
            categories.append({"id": cat_id, "name": name, "supercategory": ""})
            by_name[name] = cat_id
            next_id = max(next_id, cat_id + 1)
        self.classes: list[str] = classes
        self.category_ids: list[int] = [by_name[c] for c in classes]
        self._by_file = {str(im["file_name"]): int(im["id"]) for im in self._dataset["images"]}
        self._image_ids = set(self._by_file.values())
        self._next_image_id = max(self._image_ids, default=0) + 1
        self._next_ann_id = max((int(a["id"]) for a in self._dataset["annotations"]), default=0) + 1
        self._pending = 0
        self._closed = False
        if new_classes or not self.path.exists():
            # The file exists from the start (resume works at once) and new categories are
            # written even if no image follows.
            self.flush(force=True)

    def __contains__(self, file_name: object) -> bool:
        """Whether an image with this ``file_name`` is in the file (written or pending)."""
        return str(file_name) in self._by_file

    def __len__(self) -> int:
        """Number of images."""
        return len(self._dataset["images"])

    def image_id(self, file_name: str) -> int:
        """The COCO id of an image already added."""
        if file_name not in self._by_file:
            raise KeyError(f"{file_name!r} is not in {self.path}")
        return self._by_file[file_name]

    def remove(self, file_name: str) -> None:
        """Drop an image and its annotations (to write it again, e.g. a re-run).

        Raises:
            KeyError: No such image.
        """
        image_id = self.image_id(file_name)
        self._dataset["images"] = [i for i in self._dataset["images"] if int(i["id"]) != image_id]
        self._dataset["annotations"] = [
            a for a in self._dataset["annotations"] if int(a["image_id"]) != image_id
        ]
        del self._by_file[file_name]
        self._image_ids.discard(image_id)
        self._pending += 1

    def add(
        self,
        file_name: str,
        width: int,
        height: int,
        detections: sv.Detections | Any,
        *,
        image_id: int | None = None,
        **image_fields: Any,
    ) -> int:
        """Add one image and its detections.

        Args:
            file_name: The image's file name (relative to the image folder), unique.
            width: Image width in pixels.
            height: Image height in pixels.
            detections: ``sv.Detections`` (see :func:`detections_to_coco`; masks
                (N, height, width)), or a :class:`textseg.pipelines.Result`, whose RLE masks
                are written as they are (nothing is decoded or encoded again).
            image_id: The COCO image id (default: the next free id).
            **image_fields: Extra image record fields (``coco_url``, ``date_captured``...).

        Returns:
            The image id.

        Raises:
            ValueError: A file name or image id already present, bad size, or bad detections
                (nothing is added then).
        """
        if self._closed:
            raise ValueError(
                f"CocoWriter for {self.path} is closed; open a new CocoWriter on the same path "
                f"to append (it resumes)"
            )
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"file_name must be a non-empty str, got {file_name!r}")
        if file_name in self._by_file:
            raise ValueError(
                f"{file_name!r} is already in {self.path} (image id {self._by_file[file_name]}); "
                f"skip images already written with `if file_name in writer: continue`"
            )
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int (pixels), got {value!r}")
        if image_id is None:
            image_id = self._next_image_id
        elif int(image_id) in self._image_ids:
            raise ValueError(f"image id {image_id} is already used in {self.path}")
        image_id = int(image_id)
        rles = None
        if not isinstance(detections, sv.Detections) and hasattr(detections, "masks"):
            rles, detections = detections.masks.rles, detections.boxes  # a pipeline Result
        annotations = detections_to_coco(
            detections,
            image_id,
            self.classes,
            rles=rles,
            height=int(height),
            width=int(width),
            category_ids=self.category_ids,
            segmentation=self.segmentation,
            first_id=self._next_ann_id,
            polygon_tolerance=self.polygon_tolerance,
        )
        record = {
            "id": image_id,
            "file_name": file_name,
            "width": int(width),
            "height": int(height),
        }
        record.update(
            {k: json_value(v, what=f"image field {k!r}") for k, v in image_fields.items()}
        )
        self._dataset["images"].append(record)
        self._dataset["annotations"].extend(annotations)
        self._by_file[file_name] = image_id
        self._image_ids.add(image_id)
        self._next_image_id = max(self._next_image_id, image_id + 1)
        self._next_ann_id += len(annotations)
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()
        return image_id

    def flush(self, *, force: bool = False) -> None:
        """Write the file now (atomically), if anything was added since the last write."""
        if not self._pending and not force:
            return
        atomic_write(self.path, json.dumps(self._dataset, separators=(",", ":"), allow_nan=False))
        self._pending = 0

    def close(self) -> None:
        """Flush and stop accepting images."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> CocoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Flush even on error: each add() is all-or-nothing, so what is held is consistent.
        self.close()

    def __repr__(self) -> str:
        return (
            f"CocoWriter({str(self.path)!r}, images={len(self)}, "
            f"annotations={len(self._dataset['annotations'])}, pending={self._pending})"
        )
