"""Label Studio tasks: masks as brush regions a Label Studio project imports as predictions.

Label Studio keeps a brush mask as its own run-length code (thi.ng's ``rle-pack``) of the
flattened ``(H, W, 4)`` RGBA layer, the mask in every channel as 0/255. A multi-part object is
one brush region, so it stays one object (polygon regions would split it). :func:`encode_brush`
writes that code; :func:`labeling_config` is the matching project configuration and
:func:`task` one task with the image and its predictions. :func:`image_urls` names each image
the way Label Studio loads it: ``/data/local-files/?d=<path under the document root>`` (its
local-files storage, with ``LOCAL_FILES_DOCUMENT_ROOT`` set to that root), or a URL.

The bit stream: 32 bits value count, 5 bits word size - 1, four 4-bit run-size classes - 1,
then chunks of: 1 bit (1 = a run of one value), 2 bits (the size class), the run length - 1 in
that many bits, and the value in word-size bits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

__all__ = [
    "LOCAL_FILES",
    "decode_brush",
    "encode_brush",
    "image_urls",
    "labeling_config",
    "prediction",
    "region",
    "task",
]

#: What a task's ``data.image`` starts with for a file of Label Studio's local-files storage.
LOCAL_FILES = "/data/local-files/?d="

_WORD = 8
_RUN_BITS = (3, 4, 8, 16)


class _Bits:
    def __init__(self) -> None:
        self.bits: list[str] = []

    def put(self, value: int, width: int) -> None:
        self.bits.append(format(value, f"0{width}b"))

    def bytes(self) -> list[int]:
        text = "".join(self.bits)
        text += "0" * (-len(text) % 8)
        return [int(text[i : i + 8], 2) for i in range(0, len(text), 8)]


def encode_brush(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a ``(H, W)`` bool mask (row-major, RGBA layer 0/255).

    Returns:
        The byte values (what a task's ``value["rle"]`` holds).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected (H, W), got shape {mask.shape}")
    flat = mask.ravel()
    # Pixel runs along the rows; each pixel is four values (R, G, B, A) in the layer.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4
    out = _Bits()
    out.put(flat.size * 4, 32)
    out.put(_WORD - 1, 5)
    for bits in _RUN_BITS:
        out.put(bits - 1, 4)
    limit = 1 << _RUN_BITS[-1]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        value = 255 if flat[start] else 0
        while length > 0:
            n = min(length, limit)
            size = next(k for k, b in enumerate(_RUN_BITS) if n - 1 < (1 << b))
            out.put(1, 1)
            out.put(size, 2)
            out.put(n - 1, _RUN_BITS[size])
            out.put(value, _WORD)
            length -= n
    return out.bytes()


def decode_brush(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """The ``(H, W)`` bool mask of a Label Studio brush RLE (its alpha channel, as drawn).

    Raises:
        ValueError: The code does not hold ``H * W * 4`` values.
    """
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    pos = 0

    def take(width_: int) -> int:
        nonlocal pos
        chunk = bits[pos : pos + width_]
        pos += width_
        return int("".join(map(str, chunk.tolist())) or "0", 2)

    total = take(32)
    word = take(5) + 1
    sizes = [take(4) + 1 for _ in range(4)]
    values = np.zeros(total, np.uint8)
    i = 0
    while i < total and pos < bits.size:
        run = take(1)
        n = take(sizes[take(2)]) + 1
        if run:
            values[i : i + n] = take(word)
        else:
            values[i : i + n] = [take(word) for _ in range(n)]
        i += n
    if total != height * width * 4 or i != total:
        raise ValueError(
            f"brush rle: expected {height}x{width}x4 = {height * width * 4} values, got "
            f"{total} declared and {i} decoded"
        )
    return values.reshape(height, width, 4)[:, :, 3] > 0


def image_urls(
    file_names: Sequence[str],
    *,
    images_root: str | os.PathLike[str] | None,
    document_root: str | os.PathLike[str] | None = None,
    url_prefix: str | None = None,
) -> dict[str, str]:
    """``{file_name: data.image}`` for a task per image.

    Label Studio serves ``/data/local-files/?d=P`` from ``LOCAL_FILES_DOCUMENT_ROOT/P``, and
    refuses a local-files storage whose folder is the document root itself: the root is a
    folder above the images' one, and ``P`` starts with the folder's name.

    Args:
        file_names: The images' paths relative to ``images_root`` (COCO ``file_name``).
        images_root: The labelled folder; None: unknown, the paths are taken as relative to
            the document root.
        document_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` (default: the parent of
            ``images_root``).
        url_prefix: Instead of local files, ``url_prefix`` + the file name (URL-quoted), for
            images served over HTTP.

    Raises:
        ValueError: Both ``document_root`` and ``url_prefix``, or ``images_root`` outside
            ``document_root``.
    """
    if url_prefix is not None:
        if document_root is not None:
            raise ValueError(
                f"labelstudio: expected a document root or a URL prefix, got both "
                f"({document_root!s}, {url_prefix!r}); local files or HTTP, not both"
            )
        return {n: url_prefix + quote(n.replace(os.sep, "/")) for n in file_names}
    if images_root is None:
        return {n: LOCAL_FILES + quote(n.replace(os.sep, "/")) for n in file_names}
    folder = Path(images_root).resolve()
    root = Path(document_root).resolve() if document_root is not None else folder.parent
    if folder == root or not folder.is_relative_to(root):
        raise ValueError(
            f"labelstudio root: expected a folder above the images' folder {folder} (Label "
            f"Studio's LOCAL_FILES_DOCUMENT_ROOT), got {root}"
        )
    base = folder.relative_to(root).as_posix()
    return {n: LOCAL_FILES + quote(f"{base}/{n.replace(os.sep, '/')}") for n in file_names}


def labeling_config(classes: Sequence[str]) -> str:
    """A Label Studio labeling configuration for brush masks of ``classes``."""
    labels = "\n".join(f"    <Label value={quoteattr(str(c))}/>" for c in classes)
    return (
        "<View>\n"
        '  <Image name="image" value="$image" zoom="true"/>\n'
        '  <BrushLabels name="label" toName="image">\n'
        f"{labels}\n"
        "  </BrushLabels>\n"
        "</View>\n"
    )


def region(
    kind: str,
    label: str,
    *,
    width: int,
    height: int,
    mask: np.ndarray | None = None,
    xyxy: Sequence[float] | None = None,
    score: float | None = None,
    from_name: str = "label",
    to_name: str = "image",
    region_id: str = "r0",
) -> list[dict[str, Any]]:
    """Label Studio result items of one object, for a control tag of ``kind``.

    Args:
        kind: ``"brushlabels"`` (one item, the mask as brush RLE), ``"polygonlabels"`` (one
            item per part of the mask, holes filled) or ``"rectanglelabels"`` (one item, the
            box ``xyxy``, or the mask's box).
        label: The label value (a ``<Label value>`` of the control).
        width: Image width in pixels.
        height: Image height in pixels.
        mask: ``(H, W)`` bool mask (brush and polygon).
        xyxy: The box, XYXY absolute pixels (rectangle; default: the mask's box).
        score: The object's score; None: not measured, left out.
        from_name: The control tag's ``name``.
        to_name: The image tag's ``name``.
        region_id: The region's id (polygon parts get ``_1``, ``_2``... after the first).

    Raises:
        ValueError: An unknown kind, or no mask (no box) to write.
    """
    base: dict[str, Any] = {
        "from_name": from_name,
        "to_name": to_name,
        "type": kind,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
    }
    if score is not None:
        base["score"] = float(score)
    if kind == "brushlabels":
        if mask is None:
            raise ValueError("brushlabels region: expected a mask, got None")
        value = {"format": "rle", "rle": encode_brush(mask), "brushlabels": [label]}
        return [{"id": region_id, **base, "value": value}]
    if kind == "polygonlabels":
        from textseg.io.polygons import mask_to_polygons

        if mask is None:
            raise ValueError("polygonlabels region: expected a mask, got None")
        items = []
        for k, flat in enumerate(mask_to_polygons(mask, holes=False)):
            xy = np.asarray(flat, float).reshape(-1, 2) / [width, height] * 100.0
            value = {"points": xy.round(4).tolist(), "closed": True, "polygonlabels": [label]}
            rid = region_id if k == 0 else f"{region_id}_{k}"
            items.append({"id": rid, **base, "value": value})
        return items
    if kind == "rectanglelabels":
        if xyxy is None:
            if mask is None:
                raise ValueError("rectanglelabels region: expected a box or a mask, got neither")
            from textseg.masks import masks_to_boxes

            x0, y0, x1, y1 = masks_to_boxes(np.asarray(mask, bool)[None])[0].tolist()
            x1, y1 = x1 + 1, y1 + 1  # inclusive pixel box to its outer edges
        else:
            x0, y0, x1, y1 = (float(v) for v in xyxy)
        value = {
            "x": 100.0 * x0 / width,
            "y": 100.0 * y0 / height,
            "width": 100.0 * (x1 - x0) / width,
            "height": 100.0 * (y1 - y0) / height,
            "rotation": 0,
            "rectanglelabels": [label],
        }
        return [{"id": region_id, **base, "value": value}]
    raise ValueError(
        f"region kind: expected brushlabels, polygonlabels or rectanglelabels, got {kind!r}"
    )


def task(
    image: str,
    width: int,
    height: int,
    masks: Sequence[np.ndarray],
    class_names: Sequence[str],
    scores: Sequence[float | None],
    *,
    model_version: str = "textseg",
) -> dict[str, Any]:
    """One Label Studio task: the image and its masks as brush predictions.

    Args:
        image: What the task's ``data.image`` says (a URL, or a local-files path).
        width: Image width in pixels.
        height: Image height in pixels.
        masks: ``(H, W)`` bool masks.
        class_names: One label per mask (a name of the labeling config).
        scores: One score per mask (None: not measured, left out).
        model_version: Recorded in the prediction.
    """
    results = []
    for k, (mask, name, score) in enumerate(zip(masks, class_names, scores, strict=True)):
        results += region(
            "brushlabels",
            str(name),
            width=width,
            height=height,
            mask=mask,
            score=score,
            region_id=f"r{k}",
        )
    return {"data": {"image": image}, "predictions": [prediction(results, scores, model_version)]}


def prediction(
    results: list[dict[str, Any]], scores: Sequence[float | None], model_version: str
) -> dict[str, Any]:
    """A Label Studio prediction: the result items, the model version and the mean of the
    measured scores (left out when none was)."""
    known = [float(s) for s in scores if s is not None]
    out: dict[str, Any] = {"model_version": model_version, "result": results}
    if known:
        out["score"] = float(np.clip(np.mean(known), 0.0, 1.0))
    return out
