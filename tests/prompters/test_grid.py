"""GridPrompter: the automatic generator's point grid as unnamed prompts."""

from __future__ import annotations

import numpy as np
import pytest

from textseg.pipelines import decode_prompts
from textseg.prompters import GridPrompter, Prompter


def test_is_a_prompter() -> None:
    assert isinstance(GridPrompter(2), Prompter)


def test_grid_points_are_cell_centres_in_pixels(coco_image: np.ndarray) -> None:
    height, width = coco_image.shape[:2]  # 480 x 640
    cp = GridPrompter(points_per_side=4).prompts(coco_image, ["dog", "cat"])
    xs = (np.arange(4) + 0.5) / 4 * width
    ys = (np.arange(4) + 0.5) / 4 * height
    expected = np.array([[x, y] for y in ys for x in xs], np.float32)  # row by row
    assert cp.prompts.points.shape == (16, 1, 2)
    np.testing.assert_allclose(cp.prompts.points[:, 0], expected, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(cp.prompts.point_labels, np.ones((16, 1)))
    np.testing.assert_array_equal(cp.data["point"], cp.prompts.points[:, 0])
    np.testing.assert_array_equal(cp.class_id, np.full(16, -1))
    assert np.isnan(cp.confidence).all()
    assert cp.multimask is True
    assert cp.class_names == ("dog", "cat")


def test_classes_are_optional(coco_image: np.ndarray) -> None:
    cp = GridPrompter(3).prompts(coco_image)
    assert len(cp) == 9 and cp.class_names == ()


def test_end_to_end_into_sam(core, coco_image, assert_detections) -> None:
    cp = GridPrompter(3).prompts(coco_image, ["dog"])
    dets = decode_prompts(core, coco_image, cp)
    assert_detections(dets, coco_image, n=9)  # multimask: the best of three per point
    np.testing.assert_array_equal(dets.class_id, np.full(9, -1))
    assert set(dets.data["mask_index"].tolist()) <= {1, 2, 3}  # a multimask output
    # Unscored prompts take SAM's predicted IoU as confidence.
    np.testing.assert_array_equal(dets.confidence, dets.data["sam_iou"])
    all_three = decode_prompts(core, coco_image, cp, return_all=True)
    assert_detections(all_three, coco_image, n=27)
    np.testing.assert_array_equal(all_three.data["prompt_index"], np.repeat(np.arange(9), 3))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, r"^points_per_side: expected a positive int, got 0$"),
        (-3, ValueError, r"^points_per_side: expected a positive int, got -3$"),
        (2.5, TypeError, r"^points_per_side: expected a positive int, got float$"),
        (True, TypeError, r"^points_per_side: expected a positive int, got bool$"),
        ("4", TypeError, r"^points_per_side: expected a positive int, got str$"),
    ],
)
def test_bad_points_per_side(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GridPrompter(value)  # type: ignore[arg-type]


def test_bad_classes(coco_image, bad_classes, bad_error, bad_match) -> None:
    with pytest.raises(bad_error, match=bad_match):
        GridPrompter(2).prompts(coco_image, bad_classes)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (
            np.zeros((10, 10, 2), np.uint8),
            ValueError,
            r"^image: expected shape \(H, W\), \(H, W, 1\), \(H, W, 3\) or \(H, W, 4\), "
            r"got \(10, 10, 2\)$",
        ),
        (np.zeros((0, 10, 3), np.uint8), ValueError, r"^image: image is empty"),
        (np.full((4, 4, 3), 2.0), ValueError, r"^image: float image with values in \[2, 2\]"),
        ([[0, 1]], TypeError, r"^image: expected a path, PIL.Image or numpy array"),
    ],
)
def test_bad_image(image: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GridPrompter(2).prompts(image)
