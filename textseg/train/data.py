"""Training data for specialists: a COCO dataset read with :func:`textseg.io.coco.load_coco`.

A dataset is any COCO instances file with its image folder: textseg's own output
(``textseg label DIR --out L`` writes ``L/annotations.json``, images in ``DIR``), the
annotation app's file, or a COCO folder (``annotations.json`` + ``images/``).

Provenance: an annotation may carry ``"source"``, who made it, as the annotation app records it
when a person reviews the pipeline's proposals (:data:`SOURCES`): ``"proposal"`` (a proposal
accepted unchanged), ``"corrected"`` (a proposal fixed with clicks) or ``"manual"`` (drawn
by hand). Annotations without it are machine labels nobody reviewed (:data:`UNREVIEWED`).
Training weights or filters by it (``source_weights``): a weight multiplies the instance's
share of the loss; weight 0 leaves it out. What is left out is not taught as background: its
pixels are ignored by semantic training, and instance training skips the images holding it.

Also ignored (never taught as background): crowd regions (``iscrowd=1``) and masks of the
reserved class ``unknown``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textseg._image import load_image
from textseg.io.coco import load_coco
from textseg.specialists.example import IGNORE, Example
from textseg.vocab import UNKNOWN

__all__ = [
    "IGNORE",
    "SOURCES",
    "UNREVIEWED",
    "Example",
    "TrainingSet",
    "open_dataset",
    "open_split",
    "parse_source_weights",
    "split_indices",
]

#: ``source`` values of reviewed annotations (written by the annotation app).
SOURCES = ("proposal", "corrected", "manual")
#: The provenance of annotations without a ``source`` key: unreviewed machine labels.
UNREVIEWED = "unreviewed"


def parse_source_weights(
    weights: Mapping[str, float] | Sequence[str] | None,
) -> dict[str, float]:
    """``{"proposal": 0.5}`` or ``["proposal=0.5", "unreviewed=0"]`` -> a weight per provenance.

    Provenances not given weigh 1.

    Raises:
        ValueError: An unknown provenance, a malformed item or a negative or non-finite weight.
    """
    out = dict.fromkeys((*SOURCES, UNREVIEWED), 1.0)
    if weights is None:
        return out
    items: list[tuple[str, Any]] = []
    if isinstance(weights, Mapping):
        items = list(weights.items())
    else:
        for item in weights:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ValueError(
                    f"source weight: expected SOURCE=WEIGHT (e.g. proposal=0.5), got {item!r}"
                )
            items.append((key.strip(), value.strip()))
    for key, value in items:
        if key not in out:
            raise ValueError(
                f"source weight: unknown provenance {key!r}; expected one of "
                f"{', '.join(out)} (annotations without a source are {UNREVIEWED!r})"
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"source weight for {key!r}: expected a number, got {value!r}"
            ) from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"source weight for {key!r}: expected a number >= 0, got {number}")
        out[key] = number
    return out


class TrainingSet:
    """A COCO instances file and its image folder, read one image at a time.

    Args:
        annotations: The COCO JSON.
        images: The folder the image records' ``file_name`` are relative to.
        source_weights: Loss weight per provenance (:func:`parse_source_weights`).
        file_names: Only these images (a split), in this order; default every image.

    Raises:
        FileNotFoundError: The JSON, the folder or an image is missing.
        ValueError: No class to learn, an unknown ``source`` value, or a ``file_name`` that is
            not in the file.
    """

    def __init__(
        self,
        annotations: str | os.PathLike[str],
        images: str | os.PathLike[str],
        *,
        source_weights: Mapping[str, float] | None = None,
        file_names: Sequence[str] | None = None,
    ) -> None:
        self.annotations = Path(annotations)
        self.images_dir = Path(images)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images_dir}")
        self._coco = load_coco(self.annotations)
        names = self._coco.classes
        #: The classes learnt: the file's categories in id order, ``unknown`` left out.
        self.classes: list[str] = [n for n in names if n != UNKNOWN]
        if not self.classes:
            raise ValueError(f"{self.annotations}: no category to learn (only {names})")
        self._to_class = np.asarray(
            [self.classes.index(n) if n != UNKNOWN else -1 for n in names], np.int64
        )
        self.source_weights = parse_source_weights(source_weights)
        by_name = {str(r["file_name"]): r for r in self._coco.images}
        if file_names is None:
            self.records = list(self._coco.images)
        else:
            unknown = [f for f in file_names if f not in by_name]
            if unknown:
                raise ValueError(
                    f"{self.annotations}: {len(unknown)} images are not in the file, e.g. "
                    f"{unknown[0]!r}"
                )
            self.records = [by_name[f] for f in file_names]
        missing = [
            r["file_name"] for r in self.records if not (self.images_dir / r["file_name"]).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.records)} images of {self.annotations} are not in "
                f"{self.images_dir}, e.g. {missing[0]}; give the folder the file names are "
                f"relative to (--images DIR; for `textseg label DIR --out L` that is DIR)"
            )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def file_names(self) -> list[str]:
        return [str(r["file_name"]) for r in self.records]

    def subset(self, file_names: Sequence[str]) -> TrainingSet:
        """The same file restricted to ``file_names`` (a split)."""
        out = TrainingSet.__new__(TrainingSet)
        out.__dict__.update(self.__dict__)
        by_name = {str(r["file_name"]): r for r in self.records}
        out.records = [by_name[f] for f in file_names]
        return out

    def provenance(self) -> dict[str, int]:
        """Instances per provenance over the selected images (``source`` values)."""
        counts: dict[str, int] = {}
        for record in self.records:
            dets = self._coco.detections[int(record["id"])]
            for source in self._sources(dets):
                counts[source] = counts.get(source, 0) + 1
        return counts

    def _sources(self, dets: Any) -> list[str]:
        raw = dets.data.get("source")
        values = (
            [UNREVIEWED] * len(dets)
            if raw is None
            else [UNREVIEWED if s is None else str(s) for s in raw]
        )
        for value in values:
            if value not in self.source_weights:
                raise ValueError(
                    f"{self.annotations}: annotation source {value!r} is not one of "
                    f"{', '.join(SOURCES)} (or absent: unreviewed)"
                )
        return values

    def load(self, index: int) -> Example:
        """Read image ``index`` and its instances."""
        record = self.records[index]
        path = self.images_dir / record["file_name"]
        image = load_image(path)
        h, w = int(record["height"]), int(record["width"])
        if image.shape[:2] != (h, w):
            raise ValueError(
                f"{path}: the image is {image.shape[1]}x{image.shape[0]} but its record in "
                f"{self.annotations} says {w}x{h}; the annotations do not fit this file"
            )
        dets = self._coco.detections[int(record["id"])]
        n = len(dets)
        masks = dets.mask if dets.mask is not None else np.zeros((0, h, w), bool)
        if len(masks) != n:  # annotations without segmentation
            raise ValueError(
                f"{self.annotations}: image {record['file_name']} has annotations "
                f"without segmentation; specialists learn masks"
            )
        class_ids = self._to_class[np.asarray(dets.class_id, np.int64)] if n else np.zeros(0, int)
        crowd = np.asarray(dets.data.get("iscrowd", np.zeros(n)), bool) if n else np.zeros(0, bool)
        weights = np.asarray([self.source_weights[s] for s in self._sources(dets)], np.float32)
        ignored = crowd | (class_ids < 0) | (weights <= 0)
        ignore = masks[ignored].any(axis=0) if ignored.any() else np.zeros((h, w), bool)
        keep = ~ignored & masks.reshape(n, -1).any(axis=1) if n else np.zeros(0, bool)
        return Example(
            file_name=str(record["file_name"]),
            image=image,
            masks=masks[keep],
            class_ids=class_ids[keep].astype(np.int64),
            weights=weights[keep],
            ignore=ignore,
            excluded=int(((weights <= 0) & ~crowd & (class_ids >= 0)).sum()),
        )


def open_dataset(
    dataset: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str] | None = None,
    source_weights: Mapping[str, float] | None = None,
) -> TrainingSet:
    """Open a COCO dataset for training.

    Args:
        dataset: A folder holding ``annotations.json`` (textseg's label output, a COCO folder)
            or the COCO JSON itself.
        images: The folder the ``file_name`` s are relative to. Default: the folder the file
            records it labelled (``info.image_root``, written by ``textseg label`` and
            ``textseg segment``), else ``images/`` beside the JSON when it exists, else the
            JSON's folder.
        source_weights: Loss weight per provenance (:func:`parse_source_weights`).

    Raises:
        FileNotFoundError: No annotations, or images not where the file names say; the message
            says to give ``images``.
    """
    path = Path(dataset)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    annotations = path if path.is_file() else path / "annotations.json"
    if not annotations.is_file():
        raise FileNotFoundError(
            f"{path} has no annotations.json; give the COCO file itself or a folder holding it"
        )
    try:
        coco = json.loads(annotations.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{annotations}: not a COCO JSON file ({err})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{annotations}: not a COCO JSON file (no 'images' list)")
    if images is None:
        info = coco.get("info") or {}
        recorded = Path(str(info.get("image_root", ""))) if info.get("image_root") else None
        beside = annotations.parent / "images"
        if recorded is not None and recorded.is_dir():
            images = recorded
        else:
            images = beside if beside.is_dir() else annotations.parent
    return TrainingSet(annotations, images, source_weights=source_weights)


def open_split(
    dataset: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str] | None = None,
    val: str | os.PathLike[str] | None = None,
    val_images: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    source_weights: Mapping[str, float] | Sequence[str] | None = None,
) -> tuple[TrainingSet, TrainingSet | None]:
    """The training and validation sets of a run: ``val`` (same classes) when given, else a
    seeded ``val_fraction`` split of ``dataset`` (:func:`split_indices`).

    Raises:
        ValueError: Other classes in ``val``, or no annotation on the training images (a
            specialist would learn background only).
    """
    data = open_dataset(dataset, images=images, source_weights=source_weights)
    if val is not None:
        val_data: TrainingSet | None = open_dataset(
            val, images=val_images, source_weights=source_weights
        )
        if val_data.classes != data.classes:
            raise ValueError(
                f"val: its classes {val_data.classes} differ from the training set's {data.classes}"
            )
        train_data = data
    else:
        train_idx, val_idx = split_indices(len(data), val_fraction, seed)
        names = data.file_names
        train_data = data.subset([names[i] for i in train_idx])
        val_data = data.subset([names[i] for i in val_idx]) if len(val_idx) else None
    if not any(train_data.provenance().values()):
        raise ValueError(
            f"{train_data.annotations}: its {len(train_data)} training images hold no "
            f"annotation: a specialist would learn background only; label them first "
            f"(textseg label, or the annotation app)"
        )
    return train_data, val_data


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n`` items: ``(train, val)`` sorted index arrays.

    ``val`` holds ``round(n * val_fraction)`` items, at least 1 when ``val_fraction > 0`` and
    ``n >= 2``, and never all of them.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1), or nothing left to train on.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction}")
    if n < 1:
        raise ValueError("the dataset has no image to train on")
    n_val = round(n * val_fraction)
    n_val = min(max(n_val, 1) if val_fraction > 0 and n >= 2 else n_val, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
