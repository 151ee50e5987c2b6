"""YOLO-seg datasets (the ultralytics layout): export and import.

Layout::

    root/data.yaml                  train: images/train, val: images/val, names: {0: cat}, nc
    root/images/<split>/<name>.jpg  (copied, hard-linked or saved by YoloWriter.add)
    root/labels/<split>/<name>.txt  one line per instance

data.yaml has no ``path:``: ultralytics and supervision then resolve the split folders from
the yaml's own folder, so a copied or moved dataset stays whole. It always has ``train:`` and
``val:`` (ultralytics refuses a dataset without ``val:``; with no validation images, ``val:``
names the training images).

A label line is ``class x1 y1 x2 y2 ...``: the class index into ``names`` and ONE polygon in
coordinates normalised by the image width and height (0..1). An instance with several parts
or holes becomes one polygon through zero-width bridges (:func:`~textseg.io.polygons.join_polygons`,
the ultralytics convention); detections without masks are written as boxes
``class cx cy w h``. An image with no detections gets an empty label file (a background image).

YOLO polygons are read the way ultralytics reads them: scaled to pixels, truncated to integers
and filled with ``cv2.fillPoly``, which paints the outline too. So the default tracing
(``trace="centres"``) goes through the centres of the mask's boundary pixels, which that fill
turns back into the mask (mean IoU 1.000 on coco-dev's instances, small ones included);
``trace="edges"`` writes the exact pixel-edge outline instead (what pycocotools fills exactly,
but ultralytics about a pixel fatter: IoU 0.64-0.99 on the same instances, worst for the
smallest). :func:`yolo_to_detections` fills polygons as ultralytics does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
import supervision as sv
import yaml
from PIL import Image

from textseg._image import IMAGE_SUFFIXES, ImageInput, to_rgb_uint8
from textseg.fields import CLASS_NAME
from textseg.io._common import (
    atomic_write,
    check_detections,
    class_indices,
    iter_masks,
    place_file,
    prepare_output_dir,
)
from textseg.io.polygons import join_polygons, mask_to_polygons, polygons_to_mask
from textseg.masks import masks_to_boxes

__all__ = [
    "YoloData",
    "YoloWriter",
    "detections_to_yolo",
    "load_yolo",
    "read_data_yaml",
    "yolo_to_detections",
]


def _number(value: float, precision: int) -> str:
    text = f"{value:.{precision}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def detections_to_yolo(
    detections: sv.Detections,
    width: int,
    height: int,
    classes: Sequence[str],
    *,
    precision: int = 6,
    trace: Literal["edges", "centres"] = "centres",
) -> list[str]:
    """Convert the detections of one image to YOLO-seg label lines.

    Args:
        detections: ``mask`` (N, H, W) bool (polygon lines) or None (box lines from ``xyxy``
            (N, 4) absolute pixels); ``class_id`` indexing ``classes`` (or
            ``data["class_name"]``).
        width: Image width in pixels.
        height: Image height in pixels.
        classes: The names (``names`` of data.yaml); the line's class is ``class_id``.
        precision: Decimals of the normalised coordinates.
        trace: ``"edges"`` or ``"centres"`` (see the module docstring).

    Returns:
        ``N`` lines without newline.

    Raises:
        TypeError / ValueError: Bad detections (mask size, class id out of range), or an
            empty mask (it has no polygon; drop it first).
    """
    detections = check_detections(detections, what="detections_to_yolo")
    labels = class_indices(detections, classes, what="detections_to_yolo")
    n = len(detections)
    scale = np.array([width, height], dtype=np.float64)
    lines = []
    if detections.mask is None:
        xyxy = np.asarray(detections.xyxy, dtype=np.float64).reshape(-1, 2, 2) / scale
        for k, (p1, p2) in zip(labels, xyxy):
            values = [*((p1 + p2) / 2), *(p2 - p1)]
            lines.append(" ".join([str(int(k)), *(_number(v, precision) for v in values)]))
        return lines
    masks = iter_masks(detections.mask, n, height, width, what="detections_to_yolo")
    for i, (k, mask) in enumerate(zip(labels, masks)):
        polygons = mask_to_polygons(mask, trace=trace)
        if not polygons:
            raise ValueError(
                f"detections_to_yolo: detection {i} has an empty mask, which has no polygon; "
                f"drop empty masks first (detections[detections.area > 0])"
            )
        points = np.clip(np.asarray(join_polygons(polygons)).reshape(-1, 2) / scale, 0.0, 1.0)
        lines.append(" ".join([str(int(k)), *(_number(v, precision) for v in points.ravel())]))
    return lines


def yolo_to_detections(
    lines: str | Sequence[str], width: int, height: int, classes: Sequence[str]
) -> sv.Detections:
    """Parse YOLO label lines (segments or boxes) of one image.

    Args:
        lines: The label file's text, or its lines.
        width: Image width in pixels.
        height: Image height in pixels.
        classes: The names of data.yaml.

    Returns:
        Detections with ``class_id``, ``data["class_name"]``, ``xyxy`` (N, 4) float32 and,
        when any line is a polygon, ``mask`` (N, H, W) bool (box lines in such a file get
        their rectangle as mask); ``xyxy`` is the mask's box (x2/y2 inclusive) for polygons
        and ``[cx - w/2, cy - h/2, cx + w/2, cy + h/2]`` in pixels for boxes.

    Raises:
        ValueError: A malformed line (says which), a class index out of range, or coordinates
            outside [0, 1].
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    scale = np.array([width, height], dtype=np.float64)
    labels, shapes = [], []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        what = f"label line {number}"
        try:
            k = int(tokens[0])
            values = np.array([float(t) for t in tokens[1:]], dtype=np.float64)
        except ValueError:
            raise ValueError(
                f"{what}: expected 'class x1 y1 x2 y2 ...' numbers, got {line.strip()!r:.80}"
            ) from None
        if not 0 <= k < len(classes):
            raise ValueError(
                f"{what}: class index {k} is out of range for {len(classes)} names; the "
                f"labels and data.yaml do not match"
            )
        if values.size != 4 and (values.size < 6 or values.size % 2):
            raise ValueError(
                f"{what}: {values.size} coordinates; expected 4 (box cx cy w h) or an even "
                f"number >= 6 (polygon)"
            )
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise ValueError(
                f"{what}: coordinates must be normalised to [0, 1] by the image size, got "
                f"values in [{values.min():g}, {values.max():g}]"
            )
        labels.append(k)
        shapes.append(values)
    n = len(labels)
    any_polygon = any(v.size >= 6 for v in shapes)
    xyxy = np.zeros((n, 4), dtype=np.float32)
    mask = np.zeros((n, height, width), dtype=bool) if any_polygon else None
    for i, values in enumerate(shapes):
        if values.size == 4:
            (cx, cy), (w, h) = values[:2] * scale, values[2:] * scale
            xyxy[i] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            if mask is not None:
                x1, y1, x2, y2 = xyxy[i].tolist()
                mask[i] = polygons_to_mask([[x1, y1, x2, y1, x2, y2, x1, y2]], height, width)
        else:
            mask[i] = _fill(values.reshape(-1, 2) * scale, height, width)  # type: ignore[index]
            xyxy[i] = masks_to_boxes(mask[i][None])[0]  # type: ignore[index]
    return sv.Detections(
        xyxy=xyxy,
        mask=mask,
        class_id=np.asarray(labels, dtype=np.int64),
        data={CLASS_NAME: np.array([classes[k] for k in labels], dtype=str)},
    )


def _fill(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool: a pixel-coordinate polygon filled as ultralytics fills label polygons
    (``np.int32`` truncation, then ``cv2.fillPoly``, outline included)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [points.astype(np.int32).reshape(-1, 1, 2)], color=1)
    return canvas.astype(bool)


def read_data_yaml(root: str | os.PathLike[str]) -> list[str]:
    """The class names of ``root/data.yaml`` (``names`` as a list or an index dict).

    Raises:
        FileNotFoundError: No data.yaml.
        ValueError: No usable ``names``.
    """
    path = Path(root) / "data.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no data.yaml in {Path(root)}; is it a YOLO dataset root?")
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    names = config.get("names") if isinstance(config, dict) else None
    if isinstance(names, dict):
        keys = sorted(int(k) for k in names)
        if keys != list(range(len(keys))):
            raise ValueError(f"{path}: names must be indexed 0..{len(keys) - 1}, got {keys}")
        return [str(names[k]) for k in keys]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ValueError(f"{path}: expected 'names' as a list or a {{index: name}} dict")


def _write_data_yaml(root: Path, classes: Sequence[str], splits: Mapping[str, str]) -> None:
    """data.yaml with relative split folders and no ``path:`` (resolved from its folder)."""
    config: dict[str, object] = dict(splits)
    config.setdefault("train", "images/train")
    if "val" not in config:
        # ultralytics needs val; without validation images, the training images serve.
        has_val = (root / "images" / "val").is_dir() and any((root / "images" / "val").iterdir())
        config["val"] = "images/val" if has_val else config["train"]
    config["names"] = dict(enumerate(classes))
    config["nc"] = len(classes)
    atomic_write(root / "data.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


class YoloWriter:
    """Write a YOLO-seg dataset image by image; reopening the same root resumes it.

    Each label file is written atomically, so the labels of an image are there or not; an image
    whose label file exists is done (``file_name in writer``). data.yaml is written when the
    writer is created and again on :meth:`close` (``val:`` names the validation images once
    there are any).

    Example::

        with YoloWriter("dataset", classes=["cat", "dog"]) as writer:
            for path in image_paths:
                if path.name not in writer:
                    writer.add(path.name, width, height, pipeline(path), image=path)
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        *,
        split: str = "train",
        precision: int = 6,
        trace: Literal["edges", "centres"] = "centres",
        link_images: bool = False,
    ) -> None:
        """Create or resume a dataset.

        Args:
            root: Dataset folder (created if needed).
            classes: The names, ``class_id`` k is ``classes[k]``. When data.yaml exists its
                names must be these, or a prefix of them (new names are appended). None: take
                them from data.yaml.
            split: The default split folder of :meth:`add` (``train``, ``val``, ``test``...).
            precision: Decimals of the normalised coordinates.
            trace: Polygon tracing, ``"edges"`` or ``"centres"`` (see the module docstring).
            link_images: Hard-link the image files given to :meth:`add` instead of copying
                them (a copy is made where a link is impossible, e.g. across file systems).

        Raises:
            ValueError: No classes for a new dataset, names that contradict data.yaml, a bad
                split, precision or tracing.
            NotADirectoryError / PermissionError: The root cannot be written.
        """
        _check_split(split)
        if isinstance(precision, bool) or not isinstance(precision, int) or precision < 3:
            raise ValueError(f"precision must be an int >= 3 (decimals), got {precision!r}")
        if trace not in ("edges", "centres"):
            raise ValueError(f"trace must be 'edges' or 'centres', got {trace!r}")
        self.root = prepare_output_dir(root, what="YoloWriter")
        self.split = split
        self.precision = precision
        self.trace: Literal["edges", "centres"] = trace
        self.link_images = bool(link_images)
        self._splits: dict[str, str] = {}
        existing: list[str] | None = None
        if (self.root / "data.yaml").is_file():
            existing = read_data_yaml(self.root)
            config = yaml.safe_load((self.root / "data.yaml").read_text(encoding="utf-8"))
            self._splits = {
                k: v
                for k, v in config.items()
                if k not in ("path", "names", "nc") and isinstance(v, str)
            }
            if self._splits.get("val") == self._splits.get("train"):
                del self._splits["val"]  # a stand-in, decided again on close
        if classes is None:
            if existing is None:
                raise ValueError(
                    f"{self.root} has no data.yaml yet: pass classes=[...] (the vocabulary)"
                )
            classes = existing
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be unique, got {classes}")
        if existing is not None and classes[: len(existing)] != existing:
            raise ValueError(
                f"classes {classes} do not match the names {existing} of "
                f"{self.root / 'data.yaml'}; YOLO class indices are positions, so the existing "
                f"names must come first in the same order"
            )
        self.classes: list[str] = classes
        self._use_split(split)
        _write_data_yaml(self.root, classes, self._splits)

    def _use_split(self, split: str) -> None:
        _check_split(split)
        self._splits.setdefault(split, f"images/{split}")
        prepare_output_dir(self.root / "labels" / split, what="YoloWriter")
        prepare_output_dir(self.root / "images" / split, what="YoloWriter")

    @property
    def labels_dir(self) -> Path:
        """The label folder of the default split."""
        return self.root / "labels" / self.split

    @property
    def images_dir(self) -> Path:
        """The image folder of the default split."""
        return self.root / "images" / self.split

    def label_path(self, file_name: str, split: str | None = None) -> Path:
        """Where the labels of image ``file_name`` go."""
        return self.root / "labels" / (split or self.split) / (Path(file_name).stem + ".txt")

    def __contains__(self, file_name: object) -> bool:
        """Whether image ``file_name`` already has its label file (in any split)."""
        return any(self.label_path(str(file_name), s).is_file() for s in self._splits)

    def add(
        self,
        file_name: str,
        width: int,
        height: int,
        detections: sv.Detections,
        *,
        image: ImageInput | None = None,
        split: str | None = None,
    ) -> Path:
        """Write the labels of one image (and the image, when given).

        Args:
            file_name: The image's file name; the label file is ``<stem>.txt``.
            width: Image width in pixels.
            height: Image height in pixels.
            detections: See :func:`detections_to_yolo`.
            image: Optional: a path (copied or hard-linked) or pixels (saved) to put in
                ``images/<split>/``.
            split: The split (default: the writer's).

        Returns:
            The label file.

        Raises:
            ValueError: Labels for this image (stem) already exist, or bad detections.
        """
        if not isinstance(file_name, str) or not file_name or Path(file_name).name != file_name:
            raise ValueError(f"file_name must be a plain file name like 'a.jpg', got {file_name!r}")
        split = split or self.split
        if split not in self._splits:
            self._use_split(split)
        label = self.label_path(file_name, split)
        if file_name in self:
            raise ValueError(
                f"labels for {file_name!r} already exist ({label}); skip images already written "
                f"with `if file_name in writer: continue`"
            )
        lines = detections_to_yolo(
            detections, width, height, self.classes, precision=self.precision, trace=self.trace
        )
        if image is not None:
            target = self.root / "images" / split / file_name
            if isinstance(image, (str, os.PathLike)):
                place_file(Path(image), target, link=self.link_images)
            else:
                pixels = to_rgb_uint8(image)
                if pixels.shape[:2] != (height, width):
                    raise ValueError(
                        f"image is {pixels.shape[1]}x{pixels.shape[0]}, but width x height is "
                        f"{width}x{height}"
                    )
                Image.fromarray(pixels).save(target)
        atomic_write(label, "".join(line + "\n" for line in lines))
        return label

    def close(self) -> None:
        """Write data.yaml with the splits that hold images (``val:`` included)."""
        _write_data_yaml(self.root, self.classes, self._splits)

    def __enter__(self) -> YoloWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_split(split: str) -> None:
    if not split or not split.replace("-", "_").isidentifier():
        raise ValueError(f"split must be a simple folder name like 'train', got {split!r}")


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as textseg loads the image (EXIF orientation applied), from the header."""
    with Image.open(path) as im:
        width, height = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


class _LazyYolo(Mapping[str, sv.Detections]):
    def __init__(
        self,
        labels: Mapping[str, Path | None],
        sizes: Mapping[str, tuple[int, int]],
        classes: list[str],
    ) -> None:
        self._labels = labels
        self._sizes = sizes
        self._classes = classes

    def __getitem__(self, file_name: str) -> sv.Detections:
        width, height = self._sizes[file_name]
        label = self._labels[file_name]
        text = label.read_text(encoding="utf-8") if label is not None else ""
        try:
            return yolo_to_detections(text, width, height, self._classes)
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)


class YoloData(NamedTuple):
    """What :func:`load_yolo` returns; unpacks as ``classes, sizes, detections``."""

    #: The names of data.yaml; ``class_id`` k is ``classes[k]``.
    classes: list[str]
    #: image file name -> (width, height).
    sizes: dict[str, tuple[int, int]]
    #: image file name -> Detections (see :func:`yolo_to_detections`), parsed on each access.
    detections: Mapping[str, sv.Detections]


def load_yolo(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> YoloData:
    """Read one split of a YOLO-seg dataset.

    Label files carry no image size, so it comes from ``sizes`` or else from the headers of
    the images in ``images/<split>/`` (pixels are not decoded). Images without a label file
    have no detections.

    Args:
        root: The dataset folder (with data.yaml).
        split: The split folder.
        sizes: Optional ``{file_name: (width, height)}``; its file names are the images of the
            split (matched to label files by stem), instead of the images folder.

    Returns:
        :class:`YoloData` ``(classes, sizes, detections)``.

    Raises:
        FileNotFoundError: No data.yaml.
        ValueError: A label file whose image is unknown (no size), or two images with one stem.
    """
    root = Path(root)
    classes = read_data_yaml(root)
    labels_dir, images_dir = root / "labels" / split, root / "images" / split
    if sizes is None:
        images = (
            sorted(
                p
                for p in images_dir.glob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if images_dir.is_dir()
            else []
        )
        known = {p.name: _image_size(p) for p in images}
    else:
        known = {str(k): (int(v[0]), int(v[1])) for k, v in sizes.items()}
    by_stem: dict[str, str] = {}
    for name in known:
        stem = Path(name).stem
        if stem in by_stem:
            raise ValueError(
                f"images {by_stem[stem]!r} and {name!r} share the stem {stem!r}, so they "
                f"would share one label file; rename one"
            )
        by_stem[stem] = name
    labels: dict[str, Path | None] = dict.fromkeys(known)
    orphans = []
    for label in sorted(labels_dir.glob("*.txt")) if labels_dir.is_dir() else []:
        if label.stem in by_stem:
            labels[by_stem[label.stem]] = label
        else:
            orphans.append(label.name)
    if orphans:
        raise ValueError(
            f"{labels_dir}: no image (so no size) for label files {orphans[:5]}; put the "
            f"images in {images_dir} or pass sizes={{file_name: (width, height)}}"
        )
    return YoloData(classes, known, _LazyYolo(labels, known, classes))
