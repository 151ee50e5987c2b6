"""Masks as PNG images: one 8-bit PNG per instance, or one palette PNG per image.

- Instance PNGs: ``<stem>_0000.png``, ``<stem>_0001.png``... mode ``L``, 255 inside the mask,
  0 outside. Any viewer shows them; every tool reads them.
- Index PNG: one palette (mode ``P``) PNG per image whose pixel value is ``instance index + 1``
  (``by="instance"``) or ``class_id + 1`` (``by="class"``), 0 for background; the palette
  colours each value like textseg's annotations (supervision's default palette, by class). One
  byte per pixel, so at most 255 instances or classes, and one value per pixel: where masks
  overlap, the most confident instance (the last one without confidences) wins, so only
  non-overlapping masks come back exactly.

Both carry their class ids, names and confidences in a PNG text chunk (``textseg``, JSON), so
import gives back Detections, not just masks; PNGs without it import as masks only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import supervision as sv
from PIL import Image, PngImagePlugin

from textseg.fields import CLASS_NAME
from textseg.io._common import (
    check_detections,
    class_indices,
    iter_masks,
    prepare_output_dir,
)
from textseg.masks import masks_to_boxes

__all__ = [
    "load_index_png",
    "load_instance_masks",
    "palette",
    "save_index_png",
    "save_instance_masks",
]

_KEY = "textseg"


def palette(n: int = 256) -> list[int]:
    """A flat ``[r, g, b] * n`` PNG palette: value 0 black, value v the colour supervision's
    default palette gives index ``v - 1`` (so ``class_id + 1`` gets the class's colour)."""
    colors = [0, 0, 0]
    for v in range(1, n):
        c = sv.ColorPalette.DEFAULT.by_idx(v - 1)
        colors += [c.r, c.g, c.b]
    return colors


def _instance_meta(detections: sv.Detections, classes: Sequence[str] | None) -> list[dict]:
    n = len(detections)
    ids: Sequence[Any] | None = None
    if classes is not None:
        ids = class_indices(detections, classes, what="png").tolist()
    elif detections.class_id is not None:
        ids = [int(k) for k in detections.class_id]
    names = detections.data.get(CLASS_NAME)
    if names is None and classes is not None and ids is not None:
        names = [classes[k] for k in ids]
    meta = []
    for i in range(n):
        item: dict[str, Any] = {}
        if ids is not None:
            item["class_id"] = int(ids[i])
        if names is not None:
            item[CLASS_NAME] = str(names[i])
        if detections.confidence is not None:
            item["confidence"] = float(detections.confidence[i])
        meta.append(item)
    return meta


def _png_info(meta: dict[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(_KEY, json.dumps(meta))
    return info


def _read_meta(im: Image.Image, path: Path) -> dict[str, Any] | None:
    text = getattr(im, "text", {}).get(_KEY)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{path}: its {_KEY!r} PNG text chunk is not JSON") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its {_KEY!r} PNG text chunk is not a JSON object")
    return meta


def _detections(masks: np.ndarray, meta: list[dict[str, Any]]) -> sv.Detections:
    """Detections from (N, H, W) masks and per-instance metadata dicts."""
    n = len(masks)

    def column(key: str) -> list[Any] | None:
        if n and all(key in m for m in meta):
            return [m[key] for m in meta]
        return None

    ids, names, scores = column("class_id"), column(CLASS_NAME), column("confidence")
    data = {CLASS_NAME: np.array(names, dtype=str)} if names is not None else {}
    return sv.Detections(
        xyxy=masks_to_boxes(masks),
        mask=masks,
        class_id=np.asarray(ids, dtype=np.int64) if ids is not None else None,
        confidence=np.asarray(scores, dtype=np.float32) if scores is not None else None,
        data=data,
    )


def _instance_files(directory: Path, stem: str) -> dict[int, Path]:
    pattern = re.compile(rf"^{re.escape(stem)}_(\d{{4,}})\.png$")
    found = {}
    for path in directory.glob(f"{_glob_escape(stem)}_*.png"):
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def _glob_escape(text: str) -> str:
    """Escape glob metacharacters in a file-name stem."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def save_instance_masks(
    directory: str | os.PathLike[str],
    detections: sv.Detections,
    *,
    stem: str,
    classes: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write one 8-bit PNG per instance: ``<directory>/<stem>_<i:04d>.png``.

    Args:
        directory: Output folder (created if needed).
        detections: ``mask`` (N, H, W) bool required; class ids, names and confidences are
            stored in each PNG's ``textseg`` text chunk.
        stem: File-name prefix, usually the image's stem.
        classes: Optional vocabulary to check ``class_id`` against (and name the classes).
        overwrite: Replace earlier ``<stem>_NNNN.png`` files (all of them, so none is left
            over from a run with more instances); otherwise their presence is an error.

    Returns:
        The ``N`` files, in instance order (none for no detections).

    Raises:
        ValueError: No masks, bad masks or classes, or files already there.
        NotADirectoryError / PermissionError: The folder cannot be written.
    """
    detections = check_detections(detections, what="save_instance_masks")
    if detections.mask is None:
        raise ValueError("save_instance_masks: detections have no masks (mask is None)")
    if not stem or Path(stem).name != stem:
        raise ValueError(f"stem must be a plain file-name prefix like 'image_001', got {stem!r}")
    directory = prepare_output_dir(directory, what="save_instance_masks")
    old = _instance_files(directory, stem)
    if old and not overwrite:
        raise ValueError(
            f"{directory} already has {len(old)} mask PNGs of {stem!r}; pass overwrite=True "
            f"to replace them or choose another folder"
        )
    for path in old.values():
        path.unlink()
    n = len(detections)
    height, width = np.shape(detections.mask)[1:3] if np.ndim(detections.mask) == 3 else (0, 0)
    meta = _instance_meta(detections, classes)
    paths = []
    digits = max(4, len(str(n - 1)))
    masks = iter_masks(detections.mask, n, height, width, what="save_instance_masks")
    for i, mask in enumerate(masks):
        path = directory / f"{stem}_{i:0{digits}d}.png"
        item = {"index": i, "height": int(height), "width": int(width), **meta[i]}
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path, pnginfo=_png_info(item))
        paths.append(path)
    return paths


def load_instance_masks(
    directory: str | os.PathLike[str],
    *,
    stem: str,
    height: int | None = None,
    width: int | None = None,
) -> sv.Detections:
    """Read the instance PNGs written by :func:`save_instance_masks` (or any ``<stem>_NNNN.png``
    0/255 masks).

    Args:
        directory: The folder.
        stem: The file-name prefix.
        height: Image height, needed only to give an image without instances a
            ``(0, H, W)`` mask (otherwise ``mask`` is None then).
        width: Image width, likewise.

    Returns:
        Detections with ``mask`` (N, H, W) bool (non-zero pixels), ``xyxy`` the masks' boxes
        (x2/y2 inclusive) and, when stored, ``class_id``, ``data["class_name"]``,
        ``confidence``.

    Raises:
        ValueError: Missing indices (0..N-1 must all be there), masks of different sizes or of
            another size than ``height``/``width``.
    """
    directory = Path(directory)
    files = _instance_files(directory, stem) if directory.is_dir() else {}
    if sorted(files) != list(range(len(files))):
        missing = sorted(set(range(max(files, default=-1) + 1)) - set(files))
        raise ValueError(
            f"{directory}: mask PNGs of {stem!r} are not numbered 0..{len(files) - 1}; "
            f"missing {missing[:5]}"
        )
    if not files:
        mask = np.zeros((0, height, width), dtype=bool) if height and width else None
        return sv.Detections(xyxy=np.zeros((0, 4), np.float32), mask=mask)
    masks, meta = [], []
    for i in range(len(files)):
        with Image.open(files[i]) as im:
            masks.append(np.asarray(im.convert("L")) > 0)
            meta.append(_read_meta(im, files[i]) or {})
    shapes = {m.shape for m in masks}
    expected = (height, width) if height and width else masks[0].shape
    if shapes != {expected}:
        raise ValueError(
            f"{directory}: mask PNGs of {stem!r} have sizes {sorted(shapes)} (H, W), expected "
            f"all {expected}"
        )
    return _detections(np.stack(masks), meta)


def save_index_png(
    path: str | os.PathLike[str],
    detections: sv.Detections,
    *,
    by: Literal["instance", "class"] = "instance",
    classes: Sequence[str] | None = None,
) -> Path:
    """Write one palette PNG for an image: pixel value = instance index + 1 or class id + 1.

    Args:
        path: The ``.png`` file (its folder is created if needed).
        detections: ``mask`` (N, H, W) bool required.
        by: ``"instance"`` (value ``i + 1`` for detection ``i``, at most 255 detections) or
            ``"class"`` (value ``class_id + 1``, at most 255 classes; needs ``classes``).
        classes: The vocabulary; required for ``by="class"``, optional otherwise.

    Returns:
        The file.

    Raises:
        ValueError: No masks, too many instances or classes for 8 bits, bad ``by``, no classes
            for ``by="class"``.
    """
    detections = check_detections(detections, what="save_index_png")
    if by not in ("instance", "class"):
        raise ValueError(f"by must be 'instance' or 'class', got {by!r}")
    if detections.mask is None:
        raise ValueError("save_index_png: detections have no masks (mask is None)")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_index_png: the file must end in .png, got {path.name!r}")
    n = len(detections)
    height, width = np.shape(detections.mask)[1:3] if np.ndim(detections.mask) == 3 else (0, 0)
    meta = _instance_meta(detections, classes)
    if by == "class":
        if classes is None:
            raise ValueError("save_index_png(by='class') needs classes=[...] (the vocabulary)")
        if len(classes) > 255:
            raise ValueError(
                f"an 8-bit index PNG holds at most 255 classes, got {len(classes)}; use "
                f"save_instance_masks or COCO RLE"
            )
        values = [m["class_id"] + 1 for m in meta]
        header: dict[str, Any] = {"by": "class", "classes": list(classes)}
    else:
        if n > 255:
            raise ValueError(
                f"an 8-bit index PNG holds at most 255 instances, got {n}; use "
                f"save_instance_masks or COCO RLE"
            )
        values = list(range(1, n + 1))
        header = {"by": "instance", "instances": meta}
    # Paint the least confident first so the most confident instance wins an overlap.
    order = (
        np.argsort(detections.confidence, kind="stable")
        if detections.confidence is not None
        else range(n)
    )
    masks = list(iter_masks(detections.mask, n, height, width, what="save_index_png")) if n else []
    index = np.zeros((height, width), dtype=np.uint8)
    for i in order:
        index[masks[int(i)]] = values[int(i)]
    image = Image.fromarray(index, mode="P")
    if by == "instance":
        colors = [0, 0, 0]
        for i in range(n):
            c = sv.ColorPalette.DEFAULT.by_idx(meta[i].get("class_id", i))
            colors += [c.r, c.g, c.b]
        image.putpalette(colors + [0, 0, 0] * (256 - n - 1))
    else:
        image.putpalette(palette())
    prepare_output_dir(path.parent, what="save_index_png")
    image.save(path, pnginfo=_png_info(header))
    return path


def load_index_png(path: str | os.PathLike[str]) -> sv.Detections:
    """Read an index PNG written by :func:`save_index_png` (or any 8-bit index/label image).

    Returns:
        ``by="instance"``: one detection per stored instance (masks may be empty where an
        instance was fully covered by a more confident one), with stored class ids, names,
        confidences. ``by="class"``: one detection per class present, ``class_id`` and
        ``data["class_name"]`` set. Without a ``textseg`` chunk: one detection per value
        1..max, masks only.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an 8-bit single-channel PNG, or pixel values the metadata cannot
            explain.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index PNG not found: {path}")
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: expected an 8-bit palette (P) or grayscale (L) PNG, got mode {im.mode}"
            )
        values = np.asarray(im)  # palette indices for mode P, not colours
        meta = _read_meta(im, path)
    top = int(values.max())
    if meta is not None and meta.get("by") == "class":
        classes = [str(c) for c in meta.get("classes", [])]
        if top > len(classes):
            raise ValueError(f"{path}: pixel value {top} but only {len(classes)} classes stored")
        present = [v for v in range(1, top + 1) if (values == v).any()]
        masks = (
            np.stack([values == v for v in present])
            if present
            else np.zeros((0, *values.shape), bool)
        )
        items = [{"class_id": v - 1, CLASS_NAME: classes[v - 1]} for v in present]
        return _detections(masks, items)
    items = meta.get("instances", []) if meta is not None else [{} for _ in range(top)]
    if top > len(items):
        raise ValueError(f"{path}: pixel value {top} but only {len(items)} instances stored")
    masks = (
        np.stack([values == v for v in range(1, len(items) + 1)])
        if items
        else np.zeros((0, *values.shape), bool)
    )
    return _detections(masks, items)
