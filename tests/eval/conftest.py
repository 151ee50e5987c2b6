"""Fixtures for the evaluation tests: a small synthetic COCO dataset and ORACLE stand-ins
(SAM core, pipeline, labeler) that answer with the ground truth, so the protocols must score
them perfectly, and variants that err in known ways."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from textseg.eval import EvalDataset, farthest_interior_point, load_dataset
from textseg.io.counts import count_classes
from textseg.io.rle import CompactMasks, encode_mask
from textseg.pipelines import Result
from textseg.vocab import Vocabulary

H, W = 48, 64


def _rect_polygon(r0: int, r1: int, c0: int, c1: int) -> list[list[float]]:
    """Polygon (pixel edges) of rows r0:r1, columns c0:c1."""
    return [[c0, r0, c1, r0, c1, r1, c0, r1]]


def _rect_rle(r0: int, r1: int, c0: int, c1: int) -> dict[str, Any]:
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return encode_mask(m)


def make_dataset(root: Path) -> Path:
    """3 images 48x64: categories cat (id 1), bird (id 2, no instance), dog (id 3).

    image 1: a cat (polygon), a dog (RLE) and a crowd dog region; image 2: two cats, one an
    L-shape; image 3: nothing.
    """
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i in (1, 2, 3):
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "width": W, "height": H})
    l_shape = np.zeros((H, W), bool)
    l_shape[20:44, 30:38] = True
    l_shape[36:44, 38:60] = True
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rect_polygon(5, 20, 5, 25)},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": _rect_rle(25, 45, 30, 60)},
        {
            "id": 3,
            "image_id": 1,
            "category_id": 3,
            "segmentation": _rect_rle(0, 10, 50, 64),
            "iscrowd": 1,
        },
        {"id": 4, "image_id": 2, "category_id": 1, "segmentation": _rect_rle(2, 12, 2, 12)},
        {"id": 5, "image_id": 2, "category_id": 1, "segmentation": encode_mask(l_shape)},
    ]
    for ann in anns:
        ann.setdefault("iscrowd", 0)
    categories = [
        {"id": 1, "name": "cat"},
        {"id": 3, "name": "dog"},
        {"id": 2, "name": "bird"},
    ]
    doc = {"images": images, "annotations": anns, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


@pytest.fixture
def synth_dir(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "synth")


@pytest.fixture
def synth(synth_dir: Path) -> EvalDataset:
    return load_dataset(synth_dir)


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)


@dataclass
class FakeEmbedding:
    gt: sv.Detections


class OracleSam:
    """A SamCore stand-in answering box and point prompts with ground-truth masks.

    A box must be exactly a ground-truth mask's box, a click exactly its farthest interior
    point: wrong prompts fail the test. Masks come back in reversed prompt order (with
    ``prompt_index``), as a batched core may return them.

    Args:
        top: For clicks: ``"gt"`` gives the ground-truth mask the highest predicted IoU;
            ``"half"`` gives the mask's top half the highest predicted IoU (the ground truth is
            still among the three, so the oracle mIoU stays 1).
    """

    device = "cpu"
    name = "oracle-sam"

    def __init__(self, dataset: EvalDataset, top: str = "gt") -> None:
        self.gt = {image_key(s.image): s.gt for s in dataset}
        self.top = top
        self.calls: list[tuple[str, int]] = []

    def encode(self, image: np.ndarray) -> FakeEmbedding:
        return FakeEmbedding(self.gt[image_key(image)])

    def predict(
        self,
        emb: FakeEmbedding,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        multimask_output: bool = False,
        return_all: bool = False,
    ) -> sv.Detections:
        gt = emb.gt
        if boxes is not None:
            self.calls.append(("box", len(boxes)))
            index = [_match(gt.xyxy, box) for box in boxes]
            masks = gt.mask[index][::-1]
            scores = np.full(len(index), 0.9, np.float32)
            prompt = np.arange(len(index))[::-1]
        else:
            assert points is not None and point_labels is not None
            assert multimask_output and return_all
            assert points.shape[1:] == (1, 2) and (point_labels == 1).all()
            self.calls.append(("point", len(points)))
            clicks = [farthest_interior_point(m) for m in gt.mask]
            masks_l, scores_l, prompt_l = [], [], []
            for p, xy in enumerate(points[:, 0]):
                i = clicks.index((int(xy[0]), int(xy[1])))
                m = gt.mask[i]
                masks_l += [m, top_half(m), np.zeros_like(m)]
                scores_l += [0.9, 0.5, 0.1] if self.top == "gt" else [0.5, 0.9, 0.1]
                prompt_l += [p, p, p]
            masks = np.stack(masks_l)[::-1]
            scores = np.asarray(scores_l, np.float32)[::-1]
            prompt = np.asarray(prompt_l)[::-1]
        return sv.Detections(
            xyxy=np.zeros((len(masks), 4), np.float32),
            mask=np.ascontiguousarray(masks),
            confidence=scores.copy(),
            data={"sam_iou": scores.copy(), "prompt_index": prompt.copy()},
        )


def top_half(mask: np.ndarray) -> np.ndarray:
    """The rows of ``mask`` above its middle row (a known-IoU wrong answer)."""
    rows = np.flatnonzero(mask.any(axis=1))
    out = mask.copy()
    out[rows[len(rows) // 2] :] = False
    return out


def _match(xyxy: np.ndarray, box: np.ndarray) -> int:
    hits = np.flatnonzero(np.all(np.abs(xyxy - box) < 1e-6, axis=1))
    assert hits.size >= 1, f"box {box} is not a ground-truth box"
    return int(hits[0])


class OracleSegmenter:
    """A TextSegmenter stand-in whose ``segment`` returns the ground truth as a Result.

    Args:
        drop: A class name whose instances are left out (missed), to check AP and counts.
    """

    def __init__(
        self, dataset: EvalDataset, sam: Any = None, labeler: Any = None, drop: str | None = None
    ) -> None:
        self.sam = sam if sam is not None else OracleSam(dataset)
        self.labeler = labeler
        self.gt = {image_key(s.image): s.gt for s in dataset}
        self.drop = drop
        self.vocabularies: list[list[str]] = []

    def segment(self, image: np.ndarray, classes: Vocabulary | Sequence[str]) -> Result:
        vocab = Vocabulary.coerce(classes)
        self.vocabularies.append(list(vocab.names))
        gt = self.gt[image_key(image)]
        h, w = image.shape[:2]
        names = [str(n) for n in gt.data["class_name"]]
        keep = np.array([n != self.drop for n in names], bool)
        names = [n for n, k in zip(names, keep) if k]
        class_id = np.array([vocab.names.index(n) for n in names], np.int64)
        boxes = sv.Detections(
            xyxy=gt.xyxy[keep],
            confidence=np.ones(len(names), np.float32),
            class_id=class_id,
            data={"class_name": np.array(names, dtype=object)},
        )
        masks = CompactMasks.from_dense(gt.mask[keep]) if keep.any() else CompactMasks([], h, w)
        timings = {"encode": 1.0, "prompt": 2.0, "decode": 3.0, "label": 0.0, "total": 6.0}
        return Result("image[0]", (h, w), count_classes(boxes, vocab.names), timings, boxes, masks)


class OracleLabeler:
    """A labeler that names each mask with its ground-truth class (``"unknown"``: never)."""

    def __init__(self, dataset: EvalDataset, answer: str = "gt") -> None:
        self.gt = {image_key(s.image): s.gt for s in dataset}
        self.answer = answer

    def label(self, image: np.ndarray, detections: sv.Detections, classes: Any) -> sv.Detections:
        vocab = Vocabulary.coerce(classes)
        gt = self.gt[image_key(image)]
        assert (detections.class_id == -1).all()  # the protocol hides the true class
        ids = []
        for mask in detections.mask:
            i = next(j for j, g in enumerate(gt.mask) if np.array_equal(g, mask))
            ids.append(vocab.names.index(str(gt.data["class_name"][i])))
        out = sv.Detections(xyxy=detections.xyxy, mask=detections.mask)
        out.class_id = np.asarray(ids, np.int64) if self.answer == "gt" else np.full(len(ids), -1)
        return out


@pytest.fixture
def fakes() -> SimpleNamespace:
    """The stand-ins (test modules cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(
        OracleSam=OracleSam,
        OracleSegmenter=OracleSegmenter,
        OracleLabeler=OracleLabeler,
        top_half=top_half,
    )
