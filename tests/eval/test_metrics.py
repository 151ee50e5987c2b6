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


def test_ap_counts_a_partial_match_at_the_thresholds_it_passes() -> None:
    # 78 of the 100 ground-truth pixels: IoU 0.78 matches at IoU 0.50, 0.55, ..., 0.75 (6 of
    # the 10 thresholds) and misses at 0.80 and above, so AP = 0.6, AP50 = AP75 = 1.
    gt = _gt_dataset([M1], [1])
    partial = np.zeros_like(M1)
    partial[0:7, 0:10] = True
    partial[7, 0:8] = True
    overall, per_cat = coco_mask_ap(gt, [_res(partial, 1, 0.9)], category_ids=[1])
    assert overall["ap"] == pytest.approx(0.6)
    assert (overall["ap50"], overall["ap75"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert per_cat[1] == {"ap": pytest.approx(0.6), "ap50": pytest.approx(1.0)}


def test_ap_area_ranges_use_the_mask_area_not_the_bbox() -> None:
    # A small false positive ranked first, whose (wrong, whole-image) bbox is large: by its
    # mask it is small, so it halves AP_small (precision 1/2 at recall 1). pycocotools given
    # the bbox would take its area as the detection's and ignore it in the small range.
    gt = _gt_dataset([M1], [1])
    fp = {**_res(M3, 1, 0.99), "bbox": [0, 0, 40, 30]}
    hit = {**_res(M1, 1, 0.5), "bbox": [0, 0, 10, 10]}
    overall, _ = coco_mask_ap(gt, [fp, hit], category_ids=[1])
    assert overall["ap_small"] == pytest.approx(0.5)
    assert overall["ap"] == pytest.approx(0.5)
    assert overall["ap_medium"] is None and overall["ap_large"] is None  # no such objects


def test_ap_accepts_polygon_and_uncompressed_rle_results() -> None:
    gt = _gt_dataset([M1, M3], [1, 2])
    polygon = {"image_id": 1, "category_id": 1, "score": 0.9}
    polygon["segmentation"] = [[0, 0, 10, 0, 10, 10, 0, 10]]  # pixel edges of M1
    uncompressed = {"image_id": 1, "category_id": 2, "score": 0.8}
    uncompressed["segmentation"] = {"size": [30, 40], "counts": _uncompressed(M3)}
    overall, per_cat = coco_mask_ap(gt, [polygon, uncompressed])
    assert overall["ap"] == pytest.approx(1.0)
    one = {"ap": pytest.approx(1.0), "ap50": pytest.approx(1.0)}
    assert per_cat == {1: one, 2: one}


def _uncompressed(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + runs


def test_empty_results_score_zero_where_there_is_ground_truth() -> None:
    overall, per_cat = coco_mask_ap(_gt_dataset([M1, M2], [1, 1]), [])
    assert (overall["ap"], overall["ap50"], overall["ap_small"]) == (0.0, 0.0, 0.0)
    assert overall["ap_large"] is None  # no large object: undefined, as COCOeval says
    assert per_cat == {1: {"ap": 0.0, "ap50": 0.0}, 2: {"ap": None, "ap50": None}}


def _random_coco(seed: int) -> tuple[dict, list[dict]]:
    """4 images, 3 categories, blob masks; results: jittered copies of most instances with
    random scores, plus false positives."""
    rng = np.random.default_rng(seed)
    h, w = 40, 50
    images, anns, results = [], [], []
    for image_id in range(1, 5):
        images.append({"id": image_id, "width": w, "height": h})
        for _ in range(rng.integers(1, 5)):
            r0, c0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            mask = _rect(h, w, r0, r0 + rng.integers(4, 12), c0, c0 + rng.integers(4, 14))
            cat = int(rng.integers(1, 4))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": encode_mask(mask),
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                }
            )
            if rng.random() < 0.8:
                shifted = np.roll(mask, (rng.integers(-2, 3), rng.integers(-2, 3)), (0, 1))
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": cat,
                        "segmentation": encode_mask(shifted),
                        "score": float(rng.random()),
                    }
                )
        for _ in range(rng.integers(0, 3)):
            r0, c0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 4)),
                    "segmentation": encode_mask(_rect(h, w, r0, r0 + 5, c0, c0 + 5)),
                    "score": float(rng.random()),
                }
            )
    categories = [{"id": c, "name": n} for c, n in ((1, "a"), (2, "b"), (3, "c"))]
    return {"images": images, "annotations": anns, "categories": categories}, results


def _cocoeval_stats(gt: dict, results: list[dict], cat_ids: list[int]) -> np.ndarray:
    """pycocotools run the documented way (files on disk, loadRes, COCOeval)."""
    import contextlib
    import copy
    import io
    import json
    import tempfile

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        path = f"{tmp}/gt.json"
        with open(path, "w") as f:
            json.dump(gt, f)
        coco = COCO(path)
        # loadRes adds fields to the dicts it is given (a numpy bbox): give it copies.
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iouType="segm")
        evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_matches_pycocotools_overall_and_per_category(seed: int) -> None:
    gt, results = _random_coco(seed)
    overall, per_cat = coco_mask_ap(gt, results)
    stats = _cocoeval_stats(gt, results, [1, 2, 3])
    assert overall["ap"] == pytest.approx(stats[0], abs=1e-12)
    assert overall["ap50"] == pytest.approx(stats[1], abs=1e-12)
    assert overall["ar100"] == pytest.approx(stats[8], abs=1e-12)
    for cat in (1, 2, 3):
        alone = _cocoeval_stats(gt, results, [cat])
        expected = None if alone[0] < 0 else pytest.approx(alone[0], abs=1e-12)
        assert per_cat[cat]["ap"] == expected, cat
        expected50 = None if alone[1] < 0 else pytest.approx(alone[1], abs=1e-12)
        assert per_cat[cat]["ap50"] == expected50, cat
    assert 0.0 < overall["ap"] < 1.0  # a case where the numbers say something


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
