"""Fixtures of the annotation app tests: a folder of three coco-dev images, tiny pipelines."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from textseg.pipelines import TextSegmenter
from textseg.prompters.base import ClassPrompts
from textseg.sam.prompts import Prompts

IMAGES = ("000000000009.jpg", "000000000030.jpg", "000000000036.jpg")


@pytest.fixture
def folder(tmp_path: Path, data_dir: Path) -> Path:
    """``tmp_path/images`` with three coco-dev images (never written into the repo)."""
    out = tmp_path / "images"
    out.mkdir()
    for name in IMAGES:
        shutil.copy(data_dir / "coco-dev" / "images" / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny() -> TextSegmenter:
    """The ``tiny-test`` preset: random tiny Grounding DINO + SAM + CLIP, offline."""
    return TextSegmenter.from_preset("tiny-test")


class FixedBoxes:
    """A prompter with known output: two boxes, the first class then the last, scores 0.9/0.6.

    With random weights the detector finds arbitrary boxes; this one makes the review flow
    (proposals in score order, their classes) checkable.
    """

    boxes = ((20.0, 20.0, 300.0, 240.0), (320.0, 200.0, 620.0, 460.0))

    def prompts(self, image: np.ndarray, vocab: object) -> ClassPrompts:
        names = tuple(vocab.names)  # type: ignore[attr-defined]
        return ClassPrompts(
            prompts=Prompts.from_boxes(self.boxes),
            class_id=np.array([0, len(names) - 1]),
            confidence=np.array([0.6, 0.9], np.float32),
            multimask=False,
            class_names=names,
        )


@pytest.fixture(scope="session")
def fixed(tiny: TextSegmenter) -> TextSegmenter:
    """The tiny SAM core behind :class:`FixedBoxes`; no de-duplication (random masks overlap)."""
    return TextSegmenter(FixedBoxes(), tiny.sam, dedup_iou=1.0, dedup_containment=None)
