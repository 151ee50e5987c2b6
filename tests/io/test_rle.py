"""COCO RLE encode/decode, area/box without decoding, and CompactMasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import supervision as sv
from pycocotools import mask as mask_utils

from textseg.io.rle import (
    CompactMasks,
    decode_masks,
    encode_mask,
    encode_masks,
    rle_area,
    rle_xyxy,
    to_rle,
)


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (iscrowd style): column-major runs, starting with background."""
    counts, current, run = [], False, 0
    for value in mask.T.ravel():
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def test_encode_decode_is_exact_and_json_ready(tiny: np.ndarray) -> None:
    rles = encode_masks(tiny[None])
    assert isinstance(rles[0]["counts"], str)
    assert rles[0]["size"] == list(tiny.shape)
    rles = json.loads(json.dumps(rles))
    back = decode_masks(rles, *tiny.shape)
    assert back.dtype == np.bool_ and back.shape == (1, *tiny.shape)
    np.testing.assert_array_equal(back[0], tiny)


def test_coco_dev_masks_round_trip_exactly(coco_gt_dense: dict[int, sv.Detections]) -> None:
    for detections in coco_gt_dense.values():
        masks = detections.mask
        rles = encode_masks(masks)
        np.testing.assert_array_equal(decode_masks(rles, *masks.shape[1:]), masks)
        np.testing.assert_array_equal(rle_area(rles), masks.sum(axis=(1, 2)))


def test_area_of_hundreds_of_rles() -> None:
    # pycocotools 2.0.11's area() overflows on 256+ RLEs at once with numpy 2.
    masks = np.zeros((600, 6, 7), bool)
    for k in range(600):
        masks[k, : k % 6 + 1, : k % 7] = True
    np.testing.assert_array_equal(rle_area(encode_masks(masks)), masks.sum(axis=(1, 2)))


def test_empty_stack_and_empty_mask() -> None:
    assert encode_masks(np.zeros((0, 4, 5), bool)) == []
    assert decode_masks([], 4, 5).shape == (0, 4, 5)
    empty = encode_mask(np.zeros((4, 5), bool))
    assert rle_area([empty]).tolist() == [0]
    assert rle_xyxy([empty]).tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        ([(2, 3)], [3, 2, 3, 2]),  # (row, col) -> XYXY inclusive: one pixel is (x, y, x, y)
        ([(0, 0), (4, 6)], [0, 0, 6, 4]),
        ([(1, 1), (1, 2), (1, 3)], [1, 1, 3, 1]),
    ],
)
def test_rle_xyxy_matches_supervision_convention(pixels: list, expected: list) -> None:
    mask = np.zeros((5, 7), bool)
    for r, c in pixels:
        mask[r, c] = True
    assert rle_xyxy(encode_masks(mask[None])).tolist() == [expected]
    np.testing.assert_array_equal(rle_xyxy(encode_masks(mask[None])), sv.mask_to_xyxy(mask[None]))


def test_uncompressed_rle_is_accepted() -> None:
    mask = np.zeros((6, 5), bool)
    mask[1:4, 2] = True
    mask[0, 0] = True
    rle = _uncompressed(mask)
    np.testing.assert_array_equal(decode_masks([rle], 6, 5)[0], mask)
    expected = mask_utils.frPyObjects(rle, 6, 5)["counts"].decode()
    assert to_rle(rle, 6, 5)["counts"] == expected


def test_bytes_counts_are_accepted() -> None:
    mask = np.eye(4, dtype=bool)
    rle = encode_mask(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(decode_masks([as_bytes], 4, 4)[0], mask)


@pytest.mark.parametrize(
    ("masks", "error", "message"),
    [
        (np.zeros((4, 5), bool), ValueError, r"expected shape \(N, H, W\), got \(4, 5\); add"),
        (np.zeros((1, 1, 4, 5), bool), ValueError, r"expected shape \(N, H, W\)"),
        (np.zeros((1, 4, 5), np.float32), TypeError, "expected dtype bool, got float32"),
        (np.zeros((1, 4, 5), np.uint8), TypeError, "expected dtype bool, got uint8"),
        ([[[True]]], TypeError, "expected a numpy array"),
    ],
)
def test_encode_bad_masks(masks: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        encode_masks(masks)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rle", "error", "message"),
    [
        ({"size": [4, 6], "counts": "PX1"}, ValueError, r"RLE of size \[4, 6\].*\[4, 5\]"),
        ({"counts": "PX1"}, ValueError, "expected a COCO RLE dict"),
        ("not an rle", ValueError, "expected a COCO RLE dict"),
        ({"size": [4, 5], "counts": 3.5}, TypeError, "counts must be str, bytes or a list"),
        ({"size": [4, 5], "counts": "1"}, ValueError, "RLE counts cover 1 pixels, expected 20"),
    ],
)
def test_decode_bad_rles(rle: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        decode_masks([rle], 4, 5)  # type: ignore[list-item]


class TestCompactMasks:
    @pytest.fixture
    def dense(self, coco_gt_dense: dict[int, sv.Detections]) -> np.ndarray:
        return coco_gt_dense[1].mask

    def test_round_trip_and_lazy_access(self, dense: np.ndarray) -> None:
        compact = CompactMasks.from_dense(dense)
        assert len(compact) == len(dense)
        assert compact.shape == dense.shape
        assert (compact.height, compact.width) == dense.shape[1:]
        np.testing.assert_array_equal(compact.to_dense(), dense)
        np.testing.assert_array_equal(compact[2], dense[2])
        np.testing.assert_array_equal(compact[-1], dense[-1])
        for got, want in zip(compact, dense):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(compact.area, dense.sum(axis=(1, 2)))
        np.testing.assert_array_equal(compact.xyxy, sv.mask_to_xyxy(dense))

    def test_is_much_smaller_than_dense(self, dense: np.ndarray) -> None:
        compact = CompactMasks.from_dense(dense)
        assert compact.nbytes * 20 < dense.nbytes

    @pytest.mark.parametrize(
        "index",
        [slice(1, 4), [0, 2], np.array([True, False, True, False, True, False, False, True])],
    )
    def test_subsets_stay_compact(self, dense: np.ndarray, index: object) -> None:
        compact = CompactMasks.from_dense(dense)
        subset = compact[index]  # type: ignore[index]
        assert isinstance(subset, CompactMasks)
        np.testing.assert_array_equal(subset.to_dense(), dense[index])  # type: ignore[index]

    def test_rles_are_json_and_rebuild_equal(self, dense: np.ndarray) -> None:
        compact = CompactMasks.from_dense(dense)
        again = CompactMasks(json.loads(json.dumps(compact.rles)), *dense.shape[1:])
        assert again == compact
        assert compact != CompactMasks.from_dense(dense[:2])

    def test_index_out_of_range(self, dense: np.ndarray) -> None:
        with pytest.raises(IndexError, match="mask index 8 out of range for 8 masks"):
            CompactMasks.from_dense(dense)[8]

    def test_rles_of_another_size_are_refused(self) -> None:
        rle = encode_mask(np.ones((3, 3), bool))
        with pytest.raises(ValueError, match=r"RLE of size \[3, 3\]"):
            CompactMasks([rle], 4, 4)
