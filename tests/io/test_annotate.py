"""Annotated images: size, RGB colours, labels built from data (never glued into class_name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from textseg.io.annotate import annotate, detection_labels, save_annotated


def _one(h: int = 40, w: int = 60, **kwargs: object) -> sv.Detections:
    mask = np.zeros((1, h, w), bool)
    mask[0, 10:30, 20:50] = True
    fields = {
        "xyxy": np.array([[20, 10, 49, 29]], np.float32),
        "mask": mask,
        "class_id": np.array([0]),
        "confidence": np.array([0.8734], np.float32),
        "data": {"class_name": np.array(["cat"])},
    }
    fields.update(kwargs)
    return sv.Detections(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("detections", "classes", "expected"),
    [
        (_one(), None, ["cat 0.87"]),
        (_one(confidence=None), None, ["cat"]),
        (_one(data={}), ["tabby"], ["tabby 0.87"]),
        (_one(data={}), None, ["class 0 0.87"]),
        (_one(data={}, class_id=None, confidence=None), None, ["object"]),
    ],
)
def test_labels(detections: sv.Detections, classes: list | None, expected: list) -> None:
    assert detection_labels(detections, classes) == expected


def test_labels_leave_class_name_alone() -> None:
    detections = _one()
    annotate(np.zeros((40, 60, 3), np.uint8), detections)
    assert detections.data["class_name"].tolist() == ["cat"]


def test_image_size_and_rgb_colours() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    out = annotate(image, _one(), boxes=False, labels=False, opacity=1.0)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    first = sv.ColorPalette.DEFAULT.by_idx(0)  # class 0's colour
    assert tuple(out[20, 30]) == (first.r, first.g, first.b)  # RGB, not BGR
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert not image.any()  # the input is not drawn on


@pytest.mark.parametrize("image_kind", ["path", "pil", "numpy"])
def test_real_image(data_dir: Path, coco_gt_dense: dict, image_kind: str) -> None:
    path = data_dir / "coco-dev" / "images" / "000000000009.jpg"
    image = {"path": path, "pil": Image.open(path), "numpy": np.asarray(Image.open(path))}[
        image_kind
    ]
    out = annotate(image, coco_gt_dense[1])
    assert out.shape == (480, 640, 3)
    assert (out != np.asarray(Image.open(path))).any()


def test_empty_detections_give_the_image_back() -> None:
    image = np.full((8, 9, 3), 7, np.uint8)
    np.testing.assert_array_equal(annotate(image, sv.Detections.empty()), image)


def test_save(tmp_path: Path) -> None:
    path = save_annotated(tmp_path / "sub" / "a.png", np.zeros((40, 60, 3), np.uint8), _one())
    with Image.open(path) as im:
        assert im.size == (60, 40) and im.mode == "RGB"
    with pytest.raises(ValueError, match=r"unknown file type; use \.png or \.jpg"):
        save_annotated(tmp_path / "a.nope", np.zeros((40, 60, 3), np.uint8), _one())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"image": np.zeros((41, 60, 3), np.uint8)},
            r"masks are \(40, 60\) \(H, W\) but the image is \(41, 60\)",
        ),
        ({"opacity": 1.5}, r"opacity must be in \[0, 1\]"),
    ],
)
def test_bad_input(kwargs: dict, message: str) -> None:
    image = kwargs.pop("image", np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(ValueError, match=message):
        annotate(image, _one(), **kwargs)


def test_not_detections() -> None:
    with pytest.raises(TypeError, match=r"expected supervision\.Detections, got list"):
        annotate(np.zeros((4, 4, 3), np.uint8), [])  # type: ignore[arg-type]
