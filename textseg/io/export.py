"""Everything a run writes besides its COCO file, derived from that file: one source of truth.

A labelling run (``textseg segment``, ``textseg label``, the app) writes one COCO instances
file (:class:`~textseg.io.coco_writer.CocoWriter`, RLE or polygons). :func:`write_exports` then
writes the other formats from it, so they always agree with it and a re-run regenerates them whole:

- ``results.json``: the COCO results list (``image_id``, ``category_id``, RLE ``segmentation``,
  ``bbox``, ``score``) that ``COCO(ground_truth).loadRes`` takes unchanged;
- ``counts.csv`` / ``counts.json``: instances per image and class;
- ``yolo/``: a YOLO-seg dataset ultralytics trains on as written (``data.yaml`` with ``train:``
  and ``val:``, relative paths, images copied or hard-linked, polygons traced for OpenCV);
- ``masks/``: ``instances/<stem>_NNNN.png`` per mask and ``index/<stem>.png`` class-index PNGs
  (pixel = class id + 1), in separate folders so globs do not mix them;
- ``labelstudio/``: ``tasks.json`` (brush-mask predictions) and ``config.xml`` for a Label
  Studio project;
- ``cvat/``: COCO in datumaro's layout (``annotations/instances_default.json`` and
  ``images/default/``), which CVAT and datumaro import.

Layouts without folders (YOLO, PNG, CVAT) name each image by :func:`flat_names`: the relative
path with ``/`` as ``__``, and the extension kept in the stem when two images would share one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from textseg.fields import CLASS_NAME
from textseg.io._common import atomic_write, place_file, prepare_output_dir
from textseg.io.coco import load_coco
from textseg.io.coco_writer import CocoWriter
from textseg.io.counts import count_classes, save_counts_csv, save_counts_json
from textseg.io.formats import DERIVED_FORMATS, FORMATS, OWNED

__all__ = [
    "DERIVED_FORMATS",
    "FORMATS",
    "flat_names",
    "split_of",
    "write_exports",
    "write_results",
]


def flat_names(file_names: Iterable[str]) -> dict[str, str]:
    """Unique file names without folders for layouts that have none.

    ``"sub/a.jpg"`` becomes ``"sub__a.jpg"``; when two images would get the same stem
    (``a.jpg`` and ``a.png``), each keeps its extension in the stem (``a_jpg.jpg``,
    ``a_png.png``), so label files and masks named after the stem never collide.
    """
    names = list(dict.fromkeys(file_names))
    flat = {n: n.replace("\\", "/").replace("/", "__") for n in names}
    stems: dict[str, list[str]] = {}
    for name, f in flat.items():
        stems.setdefault(Path(f).stem.casefold(), []).append(name)
    for group in stems.values():
        if len(group) > 1:
            for name in group:
                path = Path(flat[name])
                flat[name] = f"{path.stem}_{path.suffix.lstrip('.')}{path.suffix}"
    if len(set(flat.values())) != len(flat):
        raise ValueError(f"cannot give unique flat names to {names}")
    return flat


def split_of(file_names: Sequence[str], val_fraction: float) -> dict[str, str]:
    """``{file_name: "train" | "val"}``: ``round(n * val_fraction)`` images in val (at least one,
    and at least one left in train, when the fraction is positive and there are two images),
    chosen by a hash of the names, so a run over the same images splits them the same way."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction}")
    names = list(dict.fromkeys(file_names))
    n = len(names)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)

    def key(name: str) -> bytes:
        return hashlib.blake2b(name.encode(), digest_size=8).digest()

    val = set(sorted(names, key=key)[:n_val])
    return {name: "val" if name in val else "train" for name in names}


def write_results(coco_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """The COCO results list of a COCO file, for ``COCO(ground_truth).loadRes(out)``.

    Every annotation with a category becomes ``{image_id, category_id, segmentation (RLE),
    bbox, score}``; the ids are the COCO file's (the user's own with ``--coco GT.json``).
    """
    from textseg.io.rle import to_rle

    dataset = json.loads(Path(coco_path).read_text(encoding="utf-8"))
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in dataset["images"]}
    results = []
    for ann in dataset["annotations"]:
        h, w = sizes[int(ann["image_id"])]
        item: dict[str, Any] = {
            "image_id": int(ann["image_id"]),
            "category_id": int(ann["category_id"]),
            "bbox": [float(v) for v in ann["bbox"]],
            "score": float(ann.get("score", 1.0)),
        }
        if ann.get("segmentation") is not None:
            item["segmentation"] = to_rle(ann["segmentation"], h, w, what=f"annotation {ann['id']}")
        results.append(item)
    out = Path(out)
    atomic_write(out, json.dumps(results, separators=(",", ":"), allow_nan=False))
    return out


def write_exports(
    coco_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = (),
    images_root: str | os.PathLike[str] | None = None,
    image_paths: Mapping[str, str | os.PathLike[str]] | None = None,
    val_fraction: float = 0.0,
    link_images: bool = False,
    yolo_trace: Literal["edges", "centres"] = "centres",
    labelstudio_root: str | os.PathLike[str] | None = None,
    image_url_prefix: str | None = None,
) -> list[Path]:
    """Write ``results.json``, the counts and the ``formats`` derived from a COCO file.

    Each derived format's folder is replaced as a whole, so a re-run never leaves stale files.

    Args:
        coco_path: The COCO instances file (masks as RLE or polygons).
        out_dir: Where to write (usually the COCO file's folder).
        formats: Any of :data:`DERIVED_FORMATS` (``coco``/``coco-polygons`` are ignored here).
        images_root: The folder the COCO ``file_name`` s are relative to; needed to copy or
            link images into ``yolo/`` and ``cvat/``.
        image_paths: ``{file_name: path}`` of images that are not at ``images_root /
            file_name`` (e.g. a ground truth's file names); the others are looked up there.
        val_fraction: Fraction of images in the YOLO ``val`` split (:func:`split_of`); 0: no
            validation images (``val:`` then names the training images).
        link_images: Hard-link images instead of copying them.
        yolo_trace: Polygon tracing for YOLO (see :mod:`textseg.io.yolo`).
        labelstudio_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``: ``data.image`` is
            ``/data/local-files/?d=`` + each image's path relative to it (default: the parent
            of ``images_root``, so the path starts with the images' folder name).
        image_url_prefix: Instead, ``data.image`` is this prefix + the file name (images
            served over HTTP, e.g. ``http://host/images/``).

    Returns:
        The files and folders written.

    Raises:
        ValueError: An unknown format.
        FileNotFoundError: An image to copy is missing.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"formats: unknown {unknown}; expected some of {list(FORMATS)}")
    out = prepare_output_dir(out_dir, what="write_exports")
    coco = load_coco(coco_path)
    classes = coco.classes
    names = [str(im["file_name"]) for im in coco.images]
    flat = flat_names(names)
    root = _ImageSource(images_root, image_paths)
    urls: dict[str, str] = {}
    if "labelstudio" in formats:  # checked before anything is written
        from textseg.io.labelstudio import image_urls

        urls = image_urls(
            names,
            images_root=images_root,
            document_root=labelstudio_root,
            url_prefix=image_url_prefix,
        )
    written = [write_results(coco_path, out / "results.json")]
    counts = {
        str(im["file_name"]): count_classes(coco.detections[int(im["id"])], classes)
        for im in coco.images
    }
    save_counts_csv(out / "counts.csv", counts, names=classes)
    save_counts_json(out / "counts.json", counts, names=classes)
    written += [out / "counts.csv", out / "counts.json"]
    for fmt in formats:
        if fmt not in DERIVED_FORMATS:
            continue
        target = out / OWNED[fmt][0]
        tmp = out / f".{target.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            if fmt == "yolo":
                _yolo(coco, tmp, flat, root, val_fraction, link_images, yolo_trace)
            elif fmt == "png":
                _png(coco, tmp, flat)
            elif fmt == "labelstudio":
                _labelstudio(coco, tmp, urls)
            else:
                _cvat(coco, coco_path, tmp, flat, root, link_images)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        written.append(target)
    return written


class _ImageSource:
    """Where each COCO ``file_name`` 's image is: ``paths[file_name]``, else under ``root``."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        paths: Mapping[str, str | os.PathLike[str]] | None,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.paths = {k: Path(v) for k, v in (paths or {}).items()}

    def __call__(self, file_name: str) -> Path | None:
        if file_name in self.paths:
            path = self.paths[file_name]
        elif self.root is not None:
            path = self.root / file_name
        else:
            return None
        if not path.is_file():
            raise FileNotFoundError(f"image {file_name!r} not found at {path}")
        return path


def _yolo(
    coco: Any,
    out: Path,
    flat: Mapping[str, str],
    root: _ImageSource,
    val_fraction: float,
    link: bool,
    trace: Literal["edges", "centres"],
) -> None:
    from textseg.io.yolo import YoloWriter

    splits = split_of([str(im["file_name"]) for im in coco.images], val_fraction)
    with YoloWriter(out, coco.classes, trace=trace, link_images=link) as writer:
        for im in coco.images:
            name = str(im["file_name"])
            dets = coco.detections[int(im["id"])]
            dets = dets[~np.asarray(dets.data.get("iscrowd", np.zeros(len(dets))), bool)]
            writer.add(
                flat[name],
                int(im["width"]),
                int(im["height"]),
                dets,
                image=root(name),
                split=splits[name],
            )


def _png(coco: Any, out: Path, flat: Mapping[str, str]) -> None:
    from textseg.io.png import save_index_png, save_instance_masks

    for im in coco.images:
        dets = coco.detections[int(im["id"])]
        if dets.mask is None:
            dets.mask = np.zeros((len(dets), int(im["height"]), int(im["width"])), bool)
        stem = Path(flat[str(im["file_name"])]).stem
        save_instance_masks(out / "instances", dets, stem=stem, classes=coco.classes)
        save_index_png(out / "index" / f"{stem}.png", dets, by="class", classes=coco.classes)


def _labelstudio(coco: Any, out: Path, urls: Mapping[str, str]) -> None:
    from textseg.io.labelstudio import labeling_config, task

    tasks = []
    for im in coco.images:
        dets = coco.detections[int(im["id"])]
        h, w = int(im["height"]), int(im["width"])
        masks = list(dets.mask) if dets.mask is not None else []
        scores = (
            [float(s) for s in dets.confidence]
            if dets.confidence is not None
            else [None] * len(masks)
        )
        names = [str(n) for n in dets.data.get(CLASS_NAME, [])]
        tasks.append(task(urls[str(im["file_name"])], w, h, masks, names, scores))
    atomic_write(out / "tasks.json", json.dumps(tasks, allow_nan=False))
    atomic_write(out / "config.xml", labeling_config(coco.classes))


def _cvat(
    coco: Any,
    coco_path: str | os.PathLike[str],
    out: Path,
    flat: Mapping[str, str],
    root: _ImageSource,
    link: bool,
) -> None:
    """COCO in datumaro's layout, plus ``coco-1.0.zip``: the same files in one archive, what
    CVAT's "Import dataset / upload annotations" in the "COCO 1.0" format takes.

    Categories are renumbered 1..N (in the COCO file's order, matched by name): datumaro (and so
    CVAT) drops annotations of a category id 0 ("annotation has no label"), which a user's
    ground truth may use.
    """
    subset = "default"
    annotations = out / "annotations" / f"instances_{subset}.json"
    images = prepare_output_dir(out / "images" / subset, what="cvat export")
    prepare_output_dir(annotations.parent, what="cvat export")
    source = json.loads(Path(coco_path).read_text(encoding="utf-8"))
    placed: list[Path] = []
    with CocoWriter(
        annotations,
        coco.classes,
        segmentation="polygon",
        flush_every=1 << 30,
        resume=False,
        info=source.get("info"),
    ) as writer:
        for im in coco.images:
            name = str(im["file_name"])
            dets = coco.detections[int(im["id"])]
            writer.add(
                flat[name], int(im["width"]), int(im["height"]), dets, image_id=int(im["id"])
            )
            path = root(name)
            if path is not None:
                place_file(path, images / flat[name], link=link)
                placed.append(images / flat[name])
    _zip(out / CVAT_ZIP, out, [annotations, *placed])


#: The archive in ``cvat/`` that CVAT's "COCO 1.0" import takes.
CVAT_ZIP = "coco-1.0.zip"


def _zip(target: Path, base: Path, files: Sequence[Path]) -> None:
    """``files`` (stored by their path relative to ``base``) in a zip. Written inside the
    export's temp folder, which replaces the old one whole: no atomic write needed here. Images
    are stored, not deflated (JPEG/PNG do not shrink)."""
    import zipfile

    with zipfile.ZipFile(target, "w") as archive:
        for path in files:
            deflate = path.suffix == ".json"
            archive.write(
                path,
                path.relative_to(base).as_posix(),
                compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED,
            )
