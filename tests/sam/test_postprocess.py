"""Post-processing helpers against segment_anything's and supervision's versions."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
import torch
from segment_anything.utils import amg

from textseg.masks import _cheaper_iou_method, mask_iou_matrix, mask_nms, masks_to_boxes
from textseg.sam.postprocess import remove_small_regions, stability_score


def _blobs(seed: int = 0, n: int = 6, h: int = 40, w: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
        masks[i, y : y + rng.integers(2, 20), x : x + rng.integers(2, 20)] = True
        masks[i, rng.integers(0, h), rng.integers(0, w)] = True  # a stray island
    return masks


def test_stability_score_matches_official():
    logits = torch.randn(5, 30, 40) * 3
    ours = stability_score(logits, 0.0, 1.0)
    ref = amg.calculate_stability_score(logits, 0.0, 1.0)
    torch.testing.assert_close(ours, ref)


def test_masks_to_boxes_matches_supervision_and_official():
    masks = _blobs()
    np.testing.assert_array_equal(masks_to_boxes(masks), sv.mask_to_xyxy(masks).astype(np.float32))
    ref = amg.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(masks_to_boxes(masks), ref.astype(np.float32))
    empty = np.zeros((1, 5, 5), bool)
    np.testing.assert_array_equal(masks_to_boxes(empty), np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("mode", ["islands", "holes"])
@pytest.mark.parametrize("area", [1, 5, 50])
def test_remove_small_regions_matches_official(mode: str, area: int):
    rng = np.random.default_rng(1)
    mask = rng.random((40, 40)) > 0.6
    mask[5:30, 5:30] = True
    mask[10:12, 10:12] = False
    ours, changed = remove_small_regions(mask, area, mode)
    ref, ref_changed = amg.remove_small_regions(mask, area, mode)
    np.testing.assert_array_equal(ours, ref)
    assert changed == ref_changed


def test_remove_small_regions_bad_mode():
    with pytest.raises(ValueError, match="mode: expected"):
        remove_small_regions(np.zeros((3, 3), bool), 1, "blobs")


def _brute_iou_contain(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inter = np.logical_and(masks[:, None], masks[None]).sum((2, 3)).astype(float)
    union = np.logical_or(masks[:, None], masks[None]).sum((2, 3))
    area = masks.sum((1, 2))
    smaller = np.minimum(area[:, None], area[None])
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou, np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def test_mask_iou_and_containment_against_brute_force():
    masks = _blobs(2)
    iou, contain = mask_iou_matrix(masks)
    ref_iou, ref_contain = _brute_iou_contain(masks)
    np.testing.assert_allclose(iou, ref_iou, rtol=1e-6)
    np.testing.assert_allclose(contain, ref_contain, rtol=1e-6)


def test_auto_picks_rle_for_smooth_masks_and_dense_for_ragged_ones():
    # A few big smooth masks on a photo-sized image: few runs, many pixels.
    smooth = np.zeros((20, 1000, 1000), bool)
    for k in range(20):
        smooth[k, 20 * k : 20 * k + 500, 30 * k : 30 * k + 400] = True
    assert _cheaper_iou_method(smooth) == "rle"
    ragged = np.random.default_rng(0).random((50, 200, 200)) < 0.5  # about 100 runs a column
    assert _cheaper_iou_method(ragged) == "dense"


@pytest.mark.parametrize("method", ["auto", "rle", "dense"])
def test_mask_iou_matrix_with_hundreds_of_masks(method: str):
    # pycocotools 2.0.11's area() overflows on 256+ RLEs with numpy 2; a 16x16 grid gives 768.
    rng = np.random.default_rng(0)
    masks = np.zeros((300, 12, 12), bool)
    for k, (y, x, size) in enumerate(rng.integers(0, 8, (300, 3))):
        masks[k, y : y + size + 1, x : x + size + 1] = True
    masks[7] = False  # an empty mask among them
    iou, contain = mask_iou_matrix(masks, method=method)
    ref_iou, ref_contain = _brute_iou_contain(masks)
    np.testing.assert_allclose(iou, ref_iou, atol=1e-12)
    np.testing.assert_allclose(contain, ref_contain, atol=1e-12)


@pytest.mark.parametrize("method", ["rle", "dense"])
def test_mask_iou_matrix_ragged_masks_both_ways_exact(method: str):
    # Noisy masks (many runs) are where "auto" switches to the dense product.
    masks = np.random.default_rng(1).random((40, 30, 50)) < 0.4
    masks[:, :3] = False  # the joint bounding box crop must not change anything
    iou, contain = mask_iou_matrix(masks, method=method)
    ref_iou, ref_contain = _brute_iou_contain(masks)
    np.testing.assert_allclose(iou, ref_iou, atol=1e-12)
    np.testing.assert_allclose(contain, ref_contain, atol=1e-12)


def test_mask_iou_matrix_all_empty_and_bad_method():
    iou, contain = mask_iou_matrix(np.zeros((3, 4, 4), bool))
    assert iou.shape == contain.shape == (3, 3) and not iou.any() and not contain.any()
    with pytest.raises(ValueError, match="method: expected"):
        mask_iou_matrix(np.zeros((1, 4, 4), bool), method="fast")


def test_mask_nms_keeps_best_of_overlapping():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :5, :5] = True
    masks[1, :5, :6] = True  # IoU 25/30 with 0
    masks[2, 6:, 6:] = True
    keep = mask_nms(masks, np.array([0.5, 0.9, 0.1]), iou_threshold=0.7)
    assert keep.tolist() == [1, 2]
    keep = mask_nms(masks, np.array([0.5, 0.9, 0.1]), iou_threshold=0.9)
    assert keep.tolist() == [1, 0, 2]
    masks[2] = False
    masks[2, 1:3, 1:3] = True  # inside mask 0
    keep = mask_nms(masks, np.array([0.9, 0.1, 0.5]), iou_threshold=0.95, containment_threshold=0.9)
    assert keep.tolist() == [0]
