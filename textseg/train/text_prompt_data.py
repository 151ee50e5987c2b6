"""The masks the text-prompt adapter trains on (:mod:`textseg.train.text_prompt`): a COCO
dataset's instance masks (:func:`iter_coco_masks`) or the automatic generator's masks of an
unlabelled folder (:func:`iter_folder_masks`), turned into a :class:`MaskDataset` (SAM image
embeddings, low-resolution targets, masked-crop CLIP embeddings) by :func:`build_dataset`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from textseg._image import IMAGE_SUFFIXES, list_images, load_image
from textseg.clip.crops import masked_crop
from textseg.fields import CLASS_NAME
from textseg.io.coco import load_coco

__all__ = [
    "MaskDataset",
    "build_dataset",
    "coco_paths",
    "iter_coco_masks",
    "iter_folder_masks",
    "low_res_target",
]

logger = logging.getLogger(__name__)


def coco_paths(data: Path) -> tuple[Path, Path]:
    if data.is_file() and data.suffix == ".json":
        ann = data
        root = data.parent
    else:
        ann = data / "annotations.json"
        root = data
    images = root / "images"
    return ann, images if images.is_dir() else root


def iter_coco_masks(
    data: str | os.PathLike[str],
) -> Iterator[tuple[Path, np.ndarray, list[np.ndarray], list[str]]]:
    """Images of a COCO-format dataset with their instance masks.

    Args:
        data: A folder holding ``annotations.json`` and ``images/`` (image ``file_name`` s are
            relative to ``images/``, or to the folder if it has none), or the JSON file.

    Yields:
        ``(image path, (H, W, 3) uint8 RGB image, [(H, W) bool mask, ...], [class name, ...])``
        per image with at least one non-crowd annotation; crowd annotations are skipped.

    Raises:
        FileNotFoundError: No annotations file or a missing image.
        ValueError: An annotation whose mask size differs from its image.
    """
    ann_path, image_dir = coco_paths(Path(data))
    if not ann_path.is_file():
        raise FileNotFoundError(f"data: no COCO annotations at {ann_path}")
    coco = load_coco(ann_path)
    for info in coco.images:
        dets = coco.detections[int(info["id"])]
        crowd = np.asarray(dets.data.get("iscrowd", np.zeros(len(dets))), bool)
        if len(dets) == 0 or crowd.all() or dets.mask is None:
            continue
        path = image_dir / info["file_name"]
        image = load_image(path)
        if image.shape[:2] != dets.mask.shape[1:]:
            raise ValueError(
                f"{path.name}: annotations are {dets.mask.shape[1:]} (the COCO image record), "
                f"the image is {image.shape[:2]}"
            )
        keep = np.flatnonzero(~crowd)
        names = np.asarray(dets.data[CLASS_NAME])[keep]
        yield path, image, [dets.mask[i] for i in keep], [str(n) for n in names]


def iter_folder_masks(
    folder: str | os.PathLike[str], generator: Any
) -> Iterator[tuple[Path, np.ndarray, list[np.ndarray], list[str]]]:
    """Images of a folder with the masks ``generator`` (an AutomaticMaskGenerator) finds.

    Yields:
        ``(image path, image, masks, [])`` per image (no class names), in file-name order.
    """
    names = list_images(folder)
    if not names:
        raise FileNotFoundError(
            f"data: {folder} has neither annotations.json nor images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    for path in (Path(folder) / n for n in names):
        image = load_image(path)
        dets = generator.generate(image)
        yield path, image, list(dets.mask) if dets.mask is not None else [], []


def low_res_target(mask: np.ndarray, valid: tuple[int, int], size: int) -> np.ndarray:
    """``(H, W)`` bool mask -> ``(size, size)`` bool target in the decoder's low-res frame."""
    vh, vw = valid
    small = cv2.resize(mask.astype(np.float32), (vw, vh), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), bool)
    out[:vh, :vw] = small >= 0.5
    return out


@dataclass
class MaskDataset:
    """The training masks of one run, all in memory."""

    embeddings: list[torch.Tensor]  # per image (1, C, h, w) float16 on CPU
    valid: list[tuple[int, int]]  # per image, low-res rows/cols covering the image
    image_of: np.ndarray  # (M,) image index per mask
    targets: torch.Tensor  # (M, S, S) bool
    clip_embeddings: torch.Tensor  # (M, D) float32
    class_of: np.ndarray  # (M,) index into class_names, -1 for none
    class_names: list[str]


def build_dataset(
    items: Iterator[tuple[Path, np.ndarray, list[np.ndarray], list[str]]],
    core: Any,
    clip: Any,
    *,
    max_images: int | None,
    max_masks_per_image: int,
    min_mask_area: int,
    crop_margin: float,
    empty_hint: str = "",
) -> MaskDataset:
    low = int(core.backend.low_res_size)
    factor = core.image_size / low
    embeddings, valid, image_of, targets, clip_rows, class_of = [], [], [], [], [], []
    class_names: list[str] = []
    class_index: dict[str, int] = {}
    for path, image, masks, classes in items:
        areas = [int(m.sum()) for m in masks]
        order = [i for i in np.argsort(areas)[::-1] if areas[i] >= max(1, min_mask_area)]
        order = order[:max_masks_per_image]
        if not order:
            logger.info("%s: no mask of at least %d pixels, skipped", path.name, min_mask_area)
            continue
        emb = core.encode(image)
        in_h, in_w = emb.input_size
        size = (min(low, math.ceil(in_h / factor)), min(low, math.ceil(in_w / factor)))
        image_id = len(embeddings)
        # Leave inference mode's tensor behind: a plain copy can enter the training graph.
        embeddings.append(emb.embedding.detach().to("cpu", torch.float16).clone())
        valid.append(size)
        crops = []
        for i in order:
            crop = masked_crop(
                image,
                masks[i],
                fill=clip.pixel_mean,
                context=crop_margin,
                max_size=int(clip.input_size),
            )
            crops.append(crop)
            targets.append(low_res_target(masks[i], size, low))
            image_of.append(image_id)
            name = classes[i] if classes else ""
            if name:
                if name not in class_index:
                    class_index[name] = len(class_names)
                    class_names.append(name)
                class_of.append(class_index[name])
            else:
                class_of.append(-1)
        clip_rows.append(clip.encode_images(crops).float().cpu().clone())
        # Stop here, not when the next item arrives: pulling it would load (and, for a folder,
        # run the automatic generator on) an image that is not used.
        if max_images is not None and len(embeddings) >= max_images:
            break
    if not embeddings:
        raise ValueError(
            f"data: no usable masks: none of at least min_mask_area={min_mask_area} pixels"
            f"{empty_hint or '; check the dataset or lower min_mask_area'}"
        )
    return MaskDataset(
        embeddings=embeddings,
        valid=valid,
        image_of=np.asarray(image_of, np.int64),
        targets=torch.from_numpy(np.stack(targets)),
        clip_embeddings=torch.cat(clip_rows),
        class_of=np.asarray(class_of, np.int64),
        class_names=class_names,
    )
