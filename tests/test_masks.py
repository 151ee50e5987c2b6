"""textseg.masks: the one home of mask geometry, dense and RLE alike."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from textseg.io.rle import CompactMasks, encode_masks
from textseg.masks import (
    coco_bbox,
    greedy_match,
    mask_iou_matrix,
    masks_to_boxes,
    paired_iou,
    pairwise_iou,
)


def _random_masks(n: int, h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 5), rng.integers(0, w - 5)
        masks[i, y0 : y0 + rng.integers(2, h - y0), x0 : x0 + rng.integers(2, w - x0)] = True
    return masks


def _brute(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    iou = np.zeros((len(a), len(b)))
    cover = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            inter = np.logical_and(x, y).sum()
            union = np.logical_or(x, y).sum()
            iou[i, j] = inter / union if union else 0.0
            cover[i, j] = inter / x.sum() if x.sum() else 0.0
    return iou, cover


@pytest.mark.parametrize("kind", ["dense", "compact", "rles"])
def test_pairwise_iou_and_cover_equal_brute_force(kind: str) -> None:
    a, b = _random_masks(5, seed=1), _random_masks(7, seed=2)
    a[0] = False  # an empty mask: IoU and cover 0
    want_iou, want_cover = _brute(a, b)

    def as_kind(m: np.ndarray):
        if kind == "dense":
            return m
        rles = encode_masks(m)
        return CompactMasks(rles, *m.shape[1:]) if kind == "compact" else rles

    iou, cover = pairwise_iou(as_kind(a), as_kind(b))
    np.testing.assert_allclose(iou, want_iou, atol=1e-12)
    np.testing.assert_allclose(cover, want_cover, atol=1e-12)


def test_pairwise_iou_refuses_two_sizes() -> None:
    with pytest.raises(ValueError, match="expected one image size"):
        pairwise_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 5, 4), bool))


def test_mask_iou_matrix_dense_and_compact_agree() -> None:
    masks = _random_masks(6, seed=3)
    dense = mask_iou_matrix(masks)
    compact = mask_iou_matrix(CompactMasks(encode_masks(masks), 40, 50), dense_bytes=0)
    np.testing.assert_allclose(dense[0], compact[0], atol=1e-12)
    np.testing.assert_allclose(dense[1], compact[1], atol=1e-12)
    iou, _ = _brute(masks, masks)
    np.testing.assert_allclose(dense[0], iou, atol=1e-12)


def test_greedy_match_best_pairs_first_each_once() -> None:
    score = np.array([[0.9, 0.8, 0.0], [0.85, 0.3, 0.0], [0.0, 0.0, 0.4]])
    pairs = greedy_match(score, 0.5)
    assert pairs == [(0, 0)]  # row 1's best column is taken; 0.3 and 0.4 are under 0.5
    assert greedy_match(score, 0.25) == [(0, 0), (2, 2), (1, 1)]
    assert greedy_match(np.zeros((0, 3)), 0.5) == []


def test_coco_bbox_is_pycocotools_tobbox() -> None:
    masks = _random_masks(8, seed=4)
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    np.testing.assert_array_equal(coco_bbox(masks_to_boxes(masks)), mask_utils.toBbox(rles))
    one = np.zeros((1, 10, 10), bool)
    one[0, 3, 4] = True
    assert coco_bbox(masks_to_boxes(one)[0]).tolist() == [4.0, 3.0, 1.0, 1.0]


def test_paired_iou_counts_two_empty_masks_as_agreement() -> None:
    a = np.zeros((2, 3, 3), bool)
    b = np.zeros((2, 3, 3), bool)
    a[1, 0, 0] = True
    assert paired_iou(a, b).tolist() == [1.0, 0.0]
    assert paired_iou(a, b, empty=0.0).tolist() == [0.0, 0.0]
