"""The accepted annotations of a folder of images, kept in one COCO file: the app's store.

:class:`AnnotationStore` holds the COCO image records, categories and annotations (RLE masks)
of a folder and writes them to ``OUT/textseg_annotations.json`` after every change,
atomically (:func:`textseg.io._common.atomic_write`: temp file, fsync, ``os.replace``), so a
killed app loses nothing that was saved and the next session opens the file as it was.
Model-free: no SAM, no image is decoded except to learn the size of one without a record.

The app's writes, in order (each complete on disk before the next begins):

1. ``manifest``: ``OUT/.textseg.json`` when the app claims its output folder
   (:func:`claim_app_folder`, the output-folder contract of :mod:`textseg.io.folder`);
2. ``store``: the COCO file, after every accept, class change, delete or undo;
3. on export: ``export-coco`` (the COCO file of the export, RLE or polygons), ``export-files``
   (``results.json``, the counts and every derived format, by
   :func:`textseg.io.export.write_exports`, into a temp folder), ``export`` (the temp folder
   renamed over ``OUT/textseg_export``) and ``export-manifest`` (the manifest records the
   formats).

Each step calls :func:`written` with its name once it is on disk: a test sets
``TEXTSEG_TEST_KILL_AFTER=<name>[:<n>]`` to end the process there (``os._exit``, no clean-up)
and checks what the next session finds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg._image import to_rgb_uint8
from textseg.app.layout import ANNOTATION_FILE, EXPORT_DIR
from textseg.fields import CLASS_NAME, SAM_IOU
from textseg.io._common import atomic_write
from textseg.io.coco import coco_to_detections, detections_to_coco, load_coco
from textseg.io.export import FORMATS, write_exports
from textseg.io.folder import KILL_ENV, OutputFolder, claim_output, written
from textseg.io.rle import decode_masks, to_rle
from textseg.masks import masks_to_boxes

__all__ = [
    "ANNOTATION_FILE",
    "APP_COMMAND",
    "EXPORT_DIR",
    "EXPORT_FORMATS",
    "KILL_ENV",
    "AnnotationStore",
    "claim_app_folder",
    "written",
]

#: Default name of the COCO file the app keeps in its output folder.
#: The command name in the output folder's manifest.
APP_COMMAND = "app"
#: What the app can export: every format of the CLI (``results.json`` and the counts always).
EXPORT_FORMATS: tuple[str, ...] = FORMATS


def claim_app_folder(
    out: str | os.PathLike[str], annotation_file: str | os.PathLike[str] = ANNOTATION_FILE
) -> OutputFolder:
    """Claim ``out`` for the app (mode ``"resume"``: the app reopens its own store); another
    command's folder, or one another app holds, is refused with one line.

    Returns:
        The claimed folder; keep it open while the app runs (:meth:`OutputFolder.close`).
    """
    out = Path(out)
    owned = [EXPORT_DIR]
    store = Path(annotation_file)
    if not store.is_absolute() or store.parent == out:
        owned.insert(0, store.name if store.is_absolute() else store.as_posix())
    folder = claim_output(out, APP_COMMAND, owned=owned, mode="resume")
    written("manifest")
    return folder


class AnnotationStore:
    """The accepted annotations of an image folder, saved to one COCO file.

    Args:
        path: The COCO file (read when it exists, written on every change).
        folder: The image folder the COCO ``file_name`` s are relative to.
        images: The images in the folder now (relative names); records of other files in the
            file are kept as they are and written back unchanged, never lost.

    Annotations are held per image as tuples of COCO dicts: a change replaces the tuple (so
    an undo step can keep the old one) and :meth:`set` saves at once.

    Raises:
        ValueError: The file exists but is not COCO.
    """

    def __init__(
        self, path: str | os.PathLike[str], folder: str | os.PathLike[str], images: Sequence[str]
    ) -> None:
        self.path = Path(path)
        self.folder = Path(folder)
        self.images = list(images)
        self.classes: list[str] = []
        self._category_ids: dict[str, int] = {}
        self._records: dict[str, dict[str, Any]] = {}  # file name -> COCO image record
        self._annotations: dict[str, tuple[dict[str, Any], ...]] = {}
        self._extra_images: list[dict[str, Any]] = []  # records of files no longer in the folder
        self._extra_annotations: list[dict[str, Any]] = []
        self._next_image_id = 1
        self._next_ann_id = 1
        self._mask_cache: dict[int, np.ndarray] = {}
        self._load()

    # ------------------------------------------------------------------ classes
    def ensure_class(self, name: str) -> None:
        """Add a class name (a new category id) unless it is there."""
        if name not in self._category_ids:
            self._category_ids[name] = max(self._category_ids.values(), default=0) + 1
            self.classes.append(name)

    def class_of(self, annotation: dict[str, Any]) -> str:
        """The class name of an annotation."""
        by_id = {v: k for k, v in self._category_ids.items()}
        return by_id[int(annotation["category_id"])]

    # ------------------------------------------------------------------ annotations
    def annotations(self, file_name: str) -> tuple[dict[str, Any], ...]:
        """The accepted COCO annotations of an image (empty when it has none)."""
        return self._annotations.get(file_name, ())

    def set(self, file_name: str, annotations: tuple[dict[str, Any], ...]) -> None:
        """Replace an image's annotations and save; on a failed write nothing changes."""
        before = self._annotations.get(file_name)
        self._annotations[file_name] = annotations
        try:
            self.save()
        except BaseException:
            if before is None:
                self._annotations.pop(file_name, None)
            else:
                self._annotations[file_name] = before
            raise

    def _index(self, file_name: str, annotation_id: int) -> int:
        anns = self.annotations(file_name)
        for i, ann in enumerate(anns):
            if int(ann["id"]) == int(annotation_id):
                return i
        raise ValueError(
            f"annotation {annotation_id} is not on {file_name}; expected one of "
            f"{[int(a['id']) for a in anns]}"
        )

    def reclassed(
        self, file_name: str, annotation_id: int, class_name: str
    ) -> tuple[dict[str, Any], ...]:
        """An image's annotations with one of them in another class (added when new), not
        saved; an accepted proposal whose class changes becomes ``"corrected"``."""
        i = self._index(file_name, annotation_id)
        self.ensure_class(class_name)
        anns = list(self.annotations(file_name))
        category_id = self._category_ids[class_name]
        changed = category_id != int(anns[i]["category_id"])
        anns[i] = {**anns[i], "category_id": category_id}
        if changed and anns[i].get("source") == "proposal":
            anns[i]["source"] = "corrected"
        return tuple(anns)

    def without(self, file_name: str, annotation_id: int) -> tuple[dict[str, Any], ...]:
        """An image's annotations less one of them, not saved."""
        i = self._index(file_name, annotation_id)
        anns = self.annotations(file_name)
        return anns[:i] + anns[i + 1 :]

    def new_annotation(
        self,
        file_name: str,
        mask: np.ndarray,
        class_name: str,
        *,
        score: float,
        sam_iou: float,
        origin: str,
        source: str,
    ) -> dict[str, Any]:
        """A COCO annotation (RLE, the next free id) for an ``(H, W)`` bool mask of an image;
        not stored until :meth:`set`. A new class name is added."""
        self.ensure_class(class_name)
        h, w = mask.shape
        masks = mask[None]
        dets = sv.Detections(
            xyxy=masks_to_boxes(masks),
            mask=masks,
            class_id=np.array([self.classes.index(class_name)]),
            confidence=np.array([score], np.float32),
            data={
                CLASS_NAME: np.array([class_name]),
                SAM_IOU: np.array([sam_iou], np.float32),
                "origin": np.array([origin]),
                "source": np.array([source]),
            },
        )
        ann = detections_to_coco(
            dets,
            self._image_id(file_name, h, w),
            self.classes,
            height=h,
            width=w,
            category_ids=[self._category_ids[c] for c in self.classes],
            first_id=self._next_ann_id,
        )[0]
        self._next_ann_id += 1
        return ann

    def _image_id(self, file_name: str, h: int, w: int) -> int:
        record = self._records.get(file_name)
        if record is None:
            record = {"id": self._next_image_id, "file_name": file_name, "width": w, "height": h}
            self._next_image_id += 1
            self._records[file_name] = record
        return int(record["id"])

    def masks(self, file_name: str, h: int, w: int) -> np.ndarray:
        """``(N, H, W)`` bool masks of an image's annotations (decoded once, cached by id)."""
        anns = self.annotations(file_name)
        out = np.zeros((len(anns), h, w), bool)
        for i, ann in enumerate(anns):
            key = int(ann["id"])
            if key not in self._mask_cache:
                self._mask_cache[key] = _annotation_mask(ann, h, w)
            out[i] = self._mask_cache[key]
        return out

    def detections(self, file_name: str) -> sv.Detections:
        """An image's annotations as ``supervision.Detections`` (``mask`` (N, H, W) bool,
        ``xyxy``, ``class_id`` indexing :attr:`classes`, ``data["class_name"]``,
        ``confidence``, ``data["sam_iou"]``, ``data["origin"]``, ``data["source"]``)."""
        if file_name in self._records:
            record = self._records[file_name]
            h, w = int(record["height"]), int(record["width"])
        else:
            array = to_rgb_uint8(self.folder / file_name)
            h, w = int(array.shape[0]), int(array.shape[1])
        ids = [self._category_ids[c] for c in self.classes]
        dets = coco_to_detections(self.annotations(file_name), h, w, self.classes, category_ids=ids)
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

    # ------------------------------------------------------------------ persistence
    def dataset(self, *, present_only: bool = False) -> dict[str, Any]:
        """The COCO dict written to :attr:`path` (``present_only``: only the images in the
        folder now, as exports need)."""
        records = list(self._records.values())
        if not present_only:
            records += self._extra_images
        images = sorted(records, key=lambda r: int(r["id"]))
        annotations = [a for anns in self._annotations.values() for a in anns]
        annotations.sort(key=lambda a: int(a["id"]))
        if not present_only:
            annotations += self._extra_annotations
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
            "annotations": annotations,
            "categories": categories,
        }

    def save(self) -> Path:
        """Write the COCO file atomically (temp file beside it, fsync, ``os.replace``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.dataset(), separators=(",", ":")))
        written("store")
        return self.path

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = load_coco(self.path)  # validates the structure, with clear errors
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        for cat in data.categories:
            self._category_ids[str(cat["name"])] = int(cat["id"])
            self.classes.append(str(cat["name"]))
        present = set(self.images)
        by_id: dict[int, str] = {}
        for record in data.images:
            name = str(record["file_name"])
            if name in present:
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
    def export(self, formats: str | Sequence[str], out_dir: str | os.PathLike[str]) -> Path:
        """Export the accepted masks of the images in the folder, through the writer every
        command uses (:func:`textseg.io.export.write_exports`).

        The folder gets ``annotations.json`` (COCO, RLE; polygons with ``"coco-polygons"``),
        ``results.json``, ``counts.csv`` / ``counts.json`` and a folder per derived format
        (``yolo/``, ``masks/``, ``labelstudio/``, ``cvat/``). It is written beside the target
        and renamed over it: the target is replaced as a whole, never left half-written.

        Args:
            formats: One of :data:`EXPORT_FORMATS` or a list of them.
            out_dir: The export folder.

        Returns:
            The export folder.
        """
        wanted = [formats] if isinstance(formats, str) else list(formats)
        bad = [f for f in wanted if f not in EXPORT_FORMATS]
        if bad or not wanted:
            raise ValueError(
                f"export: expected formats among {EXPORT_FORMATS}, got {bad or wanted!r}"
            )
        target = Path(out_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        tmp.mkdir()
        try:
            dataset = self.dataset(present_only=True)
            if "coco-polygons" in wanted:
                dataset["annotations"] = [_as_polygons(a, dataset) for a in dataset["annotations"]]
            atomic_write(tmp / "annotations.json", json.dumps(dataset, allow_nan=False))
            written("export-coco")
            write_exports(tmp / "annotations.json", tmp, formats=wanted, images_root=self.folder)
            written("export-files")
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            written("export")
        finally:
            for stale in (tmp, old):
                if stale.exists():
                    shutil.rmtree(stale)
        return target


# ---------------------------------------------------------------------- helpers
def _annotation_mask(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO annotation (its bbox when it has no segmentation)."""
    segm = ann.get("segmentation")
    if segm is not None:
        return decode_masks([to_rle(segm, h, w, what=f"annotation {ann.get('id')}")], h, w)[0]
    mask = np.zeros((h, w), bool)
    x, y, bw, bh = (round(float(v)) for v in ann.get("bbox", (0, 0, 0, 0)))
    mask[max(y, 0) : y + bh, max(x, 0) : x + bw] = True
    return mask


def _as_polygons(ann: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """The annotation with its RLE mask as exact COCO polygons (crowd regions stay RLE)."""
    from textseg.io.polygons import mask_to_polygons

    if ann.get("segmentation") is None or ann.get("iscrowd"):
        return ann
    record = next(im for im in dataset["images"] if int(im["id"]) == int(ann["image_id"]))
    mask = _annotation_mask(ann, int(record["height"]), int(record["width"]))
    return {**ann, "segmentation": mask_to_polygons(mask)}
