"""How many of each class per image: count, and save/load as CSV or JSON.

Counts are plain dicts: ``{image: {class_name: count}}``, classes in vocabulary order, zeros
included (an explicit 0 is an answer; a missing class is not).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import supervision as sv

from textseg.fields import CLASS_NAME
from textseg.io._common import atomic_write, check_detections, class_indices, prepare_output_dir
from textseg.vocab import UNKNOWN

__all__ = [
    "count_classes",
    "count_per_image",
    "load_counts_csv",
    "load_counts_json",
    "save_counts_csv",
    "save_counts_json",
]

Counts = dict[str, dict[str, int]]


def count_classes(detections: sv.Detections, names: Sequence[str]) -> dict[str, int]:
    """Instances per class in one image's detections: the one count of textseg.

    Args:
        detections: With ``class_id`` indexing ``names`` (or ``data["class_name"]``);
            ``class_id`` -1 / ``class_name`` ``"unknown"`` counts as :data:`UNKNOWN`.
        names: The vocabulary.

    Returns:
        ``{name: count}`` for every name, in vocabulary order (0 for absent classes), then
        ``"unknown"`` when some detections are unknown.

    Raises:
        ValueError: A class id out of range or an unknown class name.
    """
    detections = check_detections(detections, what="count_classes")
    unknown = np.zeros(len(detections), bool)
    if detections.class_id is not None:
        unknown = np.asarray(detections.class_id).reshape(-1) == -1
    elif CLASS_NAME in detections.data:
        unknown = np.asarray(detections.data[CLASS_NAME]).astype(str) == UNKNOWN
    ids = class_indices(detections[~unknown], names, what="count_classes")
    tally = np.bincount(ids, minlength=len(names))
    counts = {name: int(tally[k]) for k, name in enumerate(names)}
    if unknown.any():
        counts[UNKNOWN] = int(unknown.sum())
    return counts


def count_per_image(
    results: Mapping[str, sv.Detections] | Iterable[tuple[str, sv.Detections]],
    names: Sequence[str],
) -> Counts:
    """:func:`count_classes` for many images.

    Args:
        results: ``{image: detections}`` or ``(image, detections)`` pairs (e.g. a generator,
            so the detections need not all be in memory).
        names: The vocabulary.

    Returns:
        ``{image: {name: count}}`` in the order given.

    Raises:
        ValueError: An image given twice, or bad detections (the image is named).
    """
    items = results.items() if isinstance(results, Mapping) else results
    counts: Counts = {}
    for image, detections in items:
        image = str(image)
        if image in counts:
            raise ValueError(f"image {image!r} is given twice")
        try:
            counts[image] = count_classes(detections, names)
        except (TypeError, ValueError) as err:
            raise type(err)(f"image {image!r}: {err}") from None
    return counts


def _classes_of(counts: Counts, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return [str(n) for n in names]
    seen: dict[str, None] = {}
    for per_image in counts.values():
        seen.update(dict.fromkeys(per_image))
    return list(seen)


def save_counts_csv(
    path: str | os.PathLike[str],
    counts: Counts,
    *,
    layout: Literal["long", "wide"] = "long",
    names: Sequence[str] | None = None,
) -> Path:
    """Write counts as CSV.

    Args:
        path: The ``.csv`` file (folder created if needed; written atomically).
        counts: ``{image: {name: count}}`` (from :func:`count_per_image`).
        layout: ``"long"``: header ``image,class,count``, one row per image and class (zeros
            included). ``"wide"``: header ``image,<class 1>,<class 2>,...``, one row per image.
        names: Classes and their order (default: as they first appear in ``counts``); a
            class an image lacks counts 0.

    Returns:
        The file.

    Raises:
        ValueError: Bad layout, or a class in ``counts`` that is not in ``names``.
    """
    if layout not in ("long", "wide"):
        raise ValueError(f"layout must be 'long' or 'wide', got {layout!r}")
    classes = _classes_of(counts, names)
    known = set(classes)
    for image, per_image in counts.items():
        extra = sorted(set(per_image) - known)
        if extra:
            raise ValueError(f"image {image!r} has counts for {extra}, which are not in names")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if layout == "long":
        writer.writerow(["image", "class", "count"])
        for image, per_image in counts.items():
            for name in classes:
                writer.writerow([image, name, int(per_image.get(name, 0))])
    else:
        writer.writerow(["image", *classes])
        for image, per_image in counts.items():
            writer.writerow([image, *(int(per_image.get(name, 0)) for name in classes)])
    path = Path(path)
    prepare_output_dir(path.parent, what="save_counts_csv")
    atomic_write(path, buffer.getvalue())
    return path


def load_counts_csv(path: str | os.PathLike[str]) -> Counts:
    """Read a CSV written by :func:`save_counts_csv` (either layout, told by the header).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a counts CSV (the header or a row says why).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"counts CSV not found: {path}")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    if not rows or not rows[0] or rows[0][0] != "image":
        raise ValueError(f"{path}: expected a header starting with 'image', got {rows[:1]}")
    header, body = rows[0], rows[1:]
    counts: Counts = {}
    try:
        if header == ["image", "class", "count"]:
            for image, name, count in body:
                counts.setdefault(image, {})[name] = int(count)
        else:
            for row in body:
                if len(row) != len(header):
                    raise ValueError(f"row {row[:3]} has {len(row)} cells, header {len(header)}")
                counts[row[0]] = {name: int(c) for name, c in zip(header[1:], row[1:])}
    except ValueError as err:
        raise ValueError(f"{path}: not a counts CSV: {err}") from None
    return counts


def save_counts_json(
    path: str | os.PathLike[str], counts: Counts, *, names: Sequence[str] | None = None
) -> Path:
    """Write counts as JSON: ``{"classes": [...], "images": {image: {class: n}},
    "totals": {class: n}}`` (every class in every image, zeros included).

    Raises:
        ValueError: A class in ``counts`` that is not in ``names``.
    """
    classes = _classes_of(counts, names)
    known = set(classes)
    images = {}
    for image, per_image in counts.items():
        extra = sorted(set(per_image) - known)
        if extra:
            raise ValueError(f"image {image!r} has counts for {extra}, which are not in names")
        images[image] = {name: int(per_image.get(name, 0)) for name in classes}
    totals = {name: sum(c[name] for c in images.values()) for name in classes}
    path = Path(path)
    prepare_output_dir(path.parent, what="save_counts_json")
    payload = {"classes": classes, "images": images, "totals": totals}
    atomic_write(path, json.dumps(payload, indent=1, ensure_ascii=False))
    return path


def load_counts_json(path: str | os.PathLike[str]) -> Counts:
    """Read the ``images`` part of a JSON written by :func:`save_counts_json`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a counts JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"counts JSON not found: {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), dict):
        raise ValueError(f"{path}: expected {{'classes': ..., 'images': {{image: {{class: n}}}}}}")
    return {str(i): {str(k): int(v) for k, v in c.items()} for i, c in payload["images"].items()}
