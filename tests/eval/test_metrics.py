"""Metric primitives against pycocotools and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from textseg.eval.metrics import (
    coco_mask_ap,
    count_errors,
    farthest_interior_point,
    mask_iou,
    mean_iou,
)
from textseg.io.rle import encode_mask


def _rect(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------------------------- mask IoU
@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (_rect(10, 10, 0, 4, 0, 4), _rect(10, 10, 0, 4, 0, 4), 1.0),  # identical
        (_rect(10, 10, 0, 4, 0, 4), _rect(10, 10, 5, 9, 5, 9), 0.0),  # disjoint
        (_rect(10, 10, 0, 4, 0, 4), _rect(10, 10, 0, 4, 2, 6), 8 / 24),  # half shifted
        (_rect(10, 10, 0, 4, 0, 4), _rect(10, 10, 0, 2, 0, 2), 4 / 16),  # inside
        (np.zeros((10, 10), bool), _rect(10, 10, 0, 2, 0, 2), 0.0),  # missed
        (np.zeros((10, 10), bool), np.zeros((10, 10), bool), 1.0),  # both empty agree
    ],
)
def test_mask_iou_hand_cases(pred: np.ndarray, gt: np.ndarray, expected: float) -> None:
    assert mask_iou(pred, gt) == pytest.approx([expected])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_iou_matches_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.random((6, 23, 31)) > 0.6
    gt = rng.random((6, 23, 31)) > 0.4
    ref = mask_utils.iou(
        [encode_mask(m) | {"counts": encode_mask(m)["counts"].encode()} for m in pred],
        [encode_mask(m) | {"counts": encode_mask(m)["counts"].encode()} for m in gt],
        [0] * 6,
    )
    np.testing.assert_allclose(mask_iou(pred, gt), np.diag(ref), rtol=1e-12)


@pytest.mark.parametrize(
    ("pred", "gt", "error", "match"),
    [
        (
            np.zeros((2, 4, 4), bool),
            np.zeros((3, 4, 4), bool),
            ValueError,
            r"expected the same \(N, H, W\) shape .* got \(2, 4, 4\) and \(3, 4, 4\)",
        ),
        (
            np.zeros((1, 4, 4), np.uint8),
            np.zeros((1, 4, 4), bool),
            TypeError,
            r"pred: expected bool masks, got dtype uint8",
        ),
        (np.zeros(4, bool), np.zeros(4, bool), ValueError, r"pred: expected \(N, H, W\)"),
    ],
)
def test_mask_iou_bad_input(pred, gt, error, match) -> None:
    with pytest.raises(error, match=match):
        mask_iou(pred, gt)


def test_mean_iou_overall_and_per_class() -> None:
    miou, per_class = mean_iou([1.0, 0.5, 0.0, 0.25], [0, 0, 2, 2], ["a", "b", "c"])
    assert miou == pytest.approx(0.4375)
    assert per_class == {
        "a": {"n": 2, "miou": 0.75},
        "b": {"n": 0, "miou": None},
        "c": {"n": 2, "miou": 0.125},
    }


@pytest.mark.parametrize(
    ("ious", "ids", "match"),
    [
        ([0.5], [0, 1], "expected one class id per IoU, got 1 IoUs and 2 class ids"),
        ([0.5], [3], r"expected indices in \[0, 2\), got values in \[3, 3\]"),
    ],
)
def test_mean_iou_bad_input(ious, ids, match) -> None:
    with pytest.raises(ValueError, match=match):
        mean_iou(ious, ids, ["a", "b"])


# ---------------------------------------------------------------- farthest interior point
@pytest.mark.parametrize(("side", "top", "left"), [(1, 3, 4), (5, 0, 0), (9, 10, 20), (11, 2, 30)])
def test_farthest_point_of_a_square_is_its_centre(side: int, top: int, left: int) -> None:
    mask = _rect(40, 50, top, top + side, left, left + side)
    assert farthest_interior_point(mask) == (left + side // 2, top + side // 2)


def test_farthest_point_of_an_l_shape_hand_computed() -> None:
    # A 7x7 square with its 3x3 top-right corner cut out: an L. Distances to the nearest
    # outside pixel: (row 4, col 2) is sqrt(8) = 2.83 from the notch corner (2, 4) and 3 from
    # the left and bottom borders; every other pixel is closer to the outside.
    mask = _rect(7, 7, 0, 7, 0, 7)
    mask[0:3, 4:7] = False
    assert farthest_interior_point(mask) == (2, 4)


def test_farthest_point_is_inside_an_l_whose_centroid_is_not() -> None:
    mask = np.zeros((30, 30), bool)
    mask[0:30, 0:3] = True  # 3-pixel-wide arms
    mask[27:30, 0:30] = True
    ys, xs = np.nonzero(mask)
    assert not mask[round(ys.mean()), round(xs.mean())]  # the centroid (21, 8) is outside
    x, y = farthest_interior_point(mask)
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert mask[y, x]
    assert dist[y, x] == pytest.approx(dist.max())
    assert (x, y) == (1, 1)  # ties (the arms' middle lines, distance 2) go to row-major first


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_farthest_point_distance_matches_scipy_edt(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((40, 60)) > 0.35, iterations=2)
    x, y = farthest_interior_point(mask)
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert mask[y, x]
    assert dist[y, x] == pytest.approx(dist.max(), abs=1e-4)


def test_farthest_point_treats_the_image_border_as_outside() -> None:
    # A square in the image's top-left corner: without the border counting as outside, its
    # corner pixel (0, 0) would be farthest from the other mask edges.
    mask = _rect(10, 10, 0, 5, 0, 5)
    assert farthest_interior_point(mask) == (2, 2)
    assert farthest_interior_point(np.ones((9, 9), bool)) == (4, 4)


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (np.zeros((4, 4), bool), ValueError, "mask: empty"),
        (np.ones((4, 4), np.uint8), TypeError, "expected a bool mask, got dtype uint8"),
        (np.ones((1, 4, 4), bool), ValueError, r"expected one \(H, W\) mask, got shape"),
    ],
)
def test_farthest_point_bad_input(mask, error, match) -> None:
    with pytest.raises(error, match=match):
        farthest_interior_point(mask)


# ---------------------------------------------------------------------------------- mask AP
def _gt_dataset(masks: list[np.ndarray], cats: list[int]) -> dict:
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": c, "segmentation": encode_mask(m)}
        for i, (m, c) in enumerate(zip(masks, cats))
    ]
    return {
        "images": [{"id": 1, "width": 40, "height": 30}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def _res(mask: np.ndarray, cat: int, score: float) -> dict:
    return {"image_id": 1, "category_id": cat, "segmentation": encode_mask(mask), "score": score}


M1 = _rect(30, 40, 0, 10, 0, 10)
M2 = _rect(30, 40, 15, 30, 20, 40)
M3 = _rect(30, 40, 0, 10, 25, 35)


def test_ap_is_one_when_results_are_the_ground_truth() -> None:
    gt = _gt_dataset([M1, M2, M3], [1, 1, 2])
    overall, per_cat = coco_mask_ap(gt, [_res(M1, 1, 0.9), _res(M2, 1, 0.8), _res(M3, 2, 0.7)])
    assert overall["ap"] == pytest.approx(1.0)
    assert overall["ap50"] == pytest.approx(1.0)
    assert per_cat == {
        1: {"ap": pytest.approx(1.0), "ap50": pytest.approx(1.0)},
        2: {"ap": pytest.approx(1.0), "ap50": pytest.approx(1.0)},
    }


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        # one of two instances found: precision 1 up to recall 0.5, then nothing -> 51/101
        ([_res(M1, 1, 0.9)], 51 / 101),
        # a false positive ranked below the hit: precision stays 1 up to recall 1
        ([_res(M1, 1, 0.9), _res(M3, 1, 0.2), _res(M2, 1, 0.8)], 1.0),
        # a false positive ranked first: precision 1/2 at recall 0.5 and 2/3 at recall 1
        ([_res(M3, 1, 0.99), _res(M1, 1, 0.9), _res(M2, 1, 0.8)], 2 / 3),
        # nothing detected
        ([], 0.0),
    ],
)
def test_ap_hand_computed(results: list[dict], expected: float) -> None:
    gt = _gt_dataset([M1, M2], [1, 1])
    overall, per_cat = coco_mask_ap(gt, results, category_ids=[1])
    assert overall["ap"] == pytest.approx(expected, abs=1e-9)
    assert per_cat[1]["ap"] == pytest.approx(expected, abs=1e-9)
    assert per_cat[1]["ap50"] == pytest.approx(expected, abs=1e-9)


def test_ap_is_none_for_a_category_without_ground_truth() -> None:
    gt = _gt_dataset([M1], [1])
    _, per_cat = coco_mask_ap(gt, [_res(M1, 1, 0.9)], category_ids=[1, 2])
    assert per_cat[2] == {"ap": None, "ap50": None}


def test_ap_fills_missing_area_and_iscrowd_without_changing_the_input() -> None:
    gt = _gt_dataset([M1], [1])
    gt["annotations"][0]["segmentation"] = [[0, 0, 10, 0, 10, 10, 0, 10]]  # polygon, no area
    overall, _ = coco_mask_ap(gt, [_res(M1, 1, 0.9)], category_ids=[1])
    assert overall["ap"] == pytest.approx(1.0)
    assert "area" not in gt["annotations"][0]


@pytest.mark.parametrize(
    ("result", "match"),
    [
        ({"image_id": 7, "category_id": 1}, "results\\[0\\]: image_id 7 is not among"),
        ({"image_id": 1, "category_id": 2}, "results\\[0\\]: category_id 2 is not among"),
    ],
)
def test_ap_rejects_results_outside_the_evaluation(result: dict, match: str) -> None:
    gt = _gt_dataset([M1], [1])
    with pytest.raises(ValueError, match=match):
        coco_mask_ap(gt, [{**_res(M1, 1, 0.9), **result}], category_ids=[1])


# ---------------------------------------------------------------------------------- counts
def test_count_errors_small_table() -> None:
    #            cat dog          cat dog
    pred = [[2, 0], [1, 1], [0, 3]]
    gt = [[2, 1], [1, 1], [0, 1]]
    overall, per_class = count_errors(np.array(pred), np.array(gt), ["cat", "dog"])
    # |diff| = [[0, 1], [0, 0], [0, 2]]: 6 cells, 4 exact, MAE 3/6
    assert overall["mae"] == pytest.approx(0.5)
    assert overall["exact"] == pytest.approx(4 / 6)
    # cells with gt > 0: (0,cat)=0, (0,dog)=1, (1,cat)=0, (1,dog)=0, (2,dog)=2
    assert overall["mae_present"] == pytest.approx(3 / 5)
    assert overall["exact_present"] == pytest.approx(3 / 5)
    assert overall["image_exact"] == pytest.approx(1 / 3)
    assert overall["bias"] == pytest.approx(1 / 6)
    assert per_class["cat"] == {"gt": 3, "pred": 3, "mae": 0.0, "exact": 1.0, "bias": 0.0}
    assert per_class["dog"] == {
        "gt": 3,
        "pred": 4,
        "mae": pytest.approx(1.0),
        "exact": pytest.approx(1 / 3),
        "bias": pytest.approx(1 / 3),
    }


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        ([[1, 2]], [[1, 2], [0, 0]], r"expected two \(images, 2\) count tables"),
        ([[1, 2, 3]], [[1, 2, 3]], r"expected two \(images, 2\) count tables"),
        ([[-1, 0]], [[0, 0]], "counts must be >= 0"),
    ],
)
def test_count_errors_bad_input(pred, gt, match) -> None:
    with pytest.raises(ValueError, match=match):
        count_errors(np.array(pred), np.array(gt), ["cat", "dog"])
