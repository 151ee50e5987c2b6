"""Oracle components built from the coco-dev ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from pycocotools import mask as mask_utils

from textseg._image import load_image
from textseg.sam.cache import ImageEmbedding


class GroundTruth:
    """coco-dev's annotations, by image file name."""

    def __init__(self, coco: dict, images_dir: Path) -> None:
        self.images_dir = images_dir
        self.classes = sorted({a["category_name"] for a in coco["annotations"]})
        self.by_file: dict[str, dict] = {}
        anns: dict[int, list] = {}
        for a in coco["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        for im in coco["images"]:
            self.by_file[im["file_name"]] = {"image": im, "anns": anns.get(im["id"], [])}

    def masks(self, file_name: str) -> tuple[np.ndarray, np.ndarray]:
        entry = self.by_file[file_name]
        h, w = entry["image"]["height"], entry["image"]["width"]
        masks = []
        for a in entry["anns"]:
            rles = mask_utils.frPyObjects(a["segmentation"], h, w)
            masks.append(mask_utils.decode(mask_utils.merge(rles)).astype(bool))
        names = np.array([a["category_name"] for a in entry["anns"]], dtype=object)
        return (np.stack(masks) if masks else np.zeros((0, h, w), bool)), names

    def counts(self, file_name: str) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for a in self.by_file[file_name]["anns"]:
            out[a["category_name"]] += 1
        return out


class OracleDetector:
    """A Detector that returns the ground-truth boxes (of the mask extents) with their classes."""

    def __init__(self, gt: GroundTruth) -> None:
        self.gt = gt
        self._by_shape: dict[bytes, str] = {}

    def detect(self, images, classes, *, box_threshold=None):
        from textseg.vocab import Vocabulary

        vocab = Vocabulary.coerce(classes)
        image = images
        file_name = self.file_for(image)
        masks, names = self.gt.masks(file_name)
        keep = np.array([n in vocab.names for n in names], bool)
        masks, names = masks[keep], names[keep]
        ids = np.array([vocab.names.index(n) for n in names], np.int64)
        return sv.Detections(
            xyxy=sv.mask_to_xyxy(masks).astype(np.float32)
            if len(masks)
            else np.zeros((0, 4), np.float32),
            confidence=np.ones(len(ids), np.float32),
            class_id=ids,
            data={"class_name": names.astype(str), "prompt": names.astype(str)},
        )

    def file_for(self, image: np.ndarray) -> str:
        key = image.tobytes()[:4096] + bytes(str(image.shape), "ascii")
        if key not in self._by_shape:
            for name in self.gt.by_file:
                candidate = load_image(self.gt.images_dir / name)
                if candidate.shape == image.shape and np.array_equal(candidate, image):
                    self._by_shape[key] = name
                    break
            else:
                raise KeyError("image not in the ground truth")
        return self._by_shape[key]


class OracleSam:
    """A SamCore stand-in whose mask for a box prompt is the ground-truth mask with that box."""

    def __init__(self, gt: GroundTruth, detector: OracleDetector) -> None:
        self.gt = gt
        self.detector = detector
        self._images: dict[str, np.ndarray] = {}

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        name = self.detector.file_for(image)
        import torch

        return ImageEmbedding(name, "test", torch.zeros(1), image.shape[:2], image.shape[:2])

    def predict(self, emb: ImageEmbedding, prompts, multimask_output="auto") -> sv.Detections:
        masks, _ = self.gt.masks(emb.key)
        boxes = sv.mask_to_xyxy(masks).astype(np.float32)
        picked = []
        for box in prompts.boxes:
            picked.append(int(np.argmin(np.abs(boxes - box).sum(axis=1))))
        chosen = masks[picked]
        n = len(picked)
        return sv.Detections(
            xyxy=boxes[picked],
            mask=chosen,
            confidence=np.ones(n, np.float32),
            data={
                "sam_iou": np.ones(n, np.float32),
                "prompt_index": np.arange(n),
                "mask_index": np.zeros(n, np.int64),
                "stability_score": np.ones(n, np.float32),
            },
        )


@pytest.fixture(scope="session")
def ground_truth(coco_dev: dict, data_dir: Path) -> GroundTruth:
    return GroundTruth(coco_dev, data_dir / "coco-dev" / "images")
