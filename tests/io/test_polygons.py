"""Mask <-> polygons: exact outlines on pixel edges, tiny masks, parts, holes, joining."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from textseg.io.polygons import join_polygons, mask_to_polygons, polygons_to_mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Reference hole filling: background 4-connected to the border stays background."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_one_pixel_is_its_square() -> None:
    mask = np.zeros((6, 8), bool)
    mask[2, 5] = True
    (polygon,) = mask_to_polygons(mask)
    corners = {tuple(p) for p in np.reshape(polygon, (-1, 2)).tolist()}
    assert corners == {(5.0, 2.0), (6.0, 2.0), (6.0, 3.0), (5.0, 3.0)}


def test_tiny_masks_give_valid_exact_polygons(tiny: np.ndarray) -> None:
    polygons = mask_to_polygons(tiny)
    assert polygons, "a non-empty mask must never give an empty segmentation"
    for polygon in polygons:
        assert len(polygon) >= 6 and len(polygon) % 2 == 0
        points = np.reshape(polygon, (-1, 2))
        x, y = points[:, 0], points[:, 1]
        assert abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) > 0  # non-zero area
        assert x.min() >= 0 and y.min() >= 0
        assert x.max() <= tiny.shape[1] and y.max() <= tiny.shape[0]
    np.testing.assert_array_equal(polygons_to_mask(polygons, *tiny.shape), tiny)


@pytest.mark.parametrize("tolerance", [0.5, 1.0, 3.0])
def test_tiny_masks_stay_non_degenerate_when_simplified(tiny: np.ndarray, tolerance: float) -> None:
    polygons = mask_to_polygons(tiny, tolerance=tolerance)
    assert polygons and all(len(p) >= 6 for p in polygons)
    assert polygons_to_mask(polygons, *tiny.shape).any()


def test_two_diagonal_pixels_are_one_pinched_polygon() -> None:
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[1, 1] = True
    (polygon,) = mask_to_polygons(mask)  # 8-connected: one part
    np.testing.assert_array_equal(polygons_to_mask([polygon], 4, 4), mask)


def test_multi_part_keeps_all_parts_largest_first(multi_part: np.ndarray) -> None:
    polygons = mask_to_polygons(multi_part)
    # rectangle, ring (with its hole cut in), the island in the hole, the single pixel
    assert len(polygons) == 4
    areas = [polygons_to_mask([p], *multi_part.shape).sum() for p in polygons]
    assert areas == sorted(areas, reverse=True)
    assert areas[-1] == 1
    np.testing.assert_array_equal(polygons_to_mask(polygons, *multi_part.shape), multi_part)


def test_holes_filled_on_request(multi_part: np.ndarray) -> None:
    polygons = mask_to_polygons(multi_part, holes=False)
    assert len(polygons) == 3  # the island disappears into the filled ring
    np.testing.assert_array_equal(
        polygons_to_mask(polygons, *multi_part.shape), _fill_holes(multi_part)
    )


def test_random_masks_round_trip_exactly(random_mask_set: list[np.ndarray]) -> None:
    for mask in random_mask_set:
        polygons = mask_to_polygons(mask)
        np.testing.assert_array_equal(polygons_to_mask(polygons, *mask.shape), mask)
        filled = polygons_to_mask(mask_to_polygons(mask, holes=False), *mask.shape)
        np.testing.assert_array_equal(filled, _fill_holes(mask))


def test_joined_polygon_rasterises_to_the_mask(
    random_mask_set: list[np.ndarray], multi_part: np.ndarray
) -> None:
    for mask in [multi_part, *random_mask_set[:60]]:
        joined = join_polygons(mask_to_polygons(mask))
        np.testing.assert_array_equal(polygons_to_mask([joined], *mask.shape), mask)


def test_join_single_polygon_is_unchanged() -> None:
    polygon = [0.0, 0.0, 2.0, 0.0, 2.0, 2.0]
    assert join_polygons([polygon]) == polygon


def test_coco_dev_masks_round_trip(coco_gt_dense: dict[int, sv.Detections]) -> None:
    """Real COCO instance masks (ultralytics polygons, some with holes from self-crossings)."""
    ious = []
    for detections in coco_gt_dense.values():
        for mask in detections.mask:
            back = polygons_to_mask(mask_to_polygons(mask), *mask.shape)
            ious.append(_iou(mask, back))
            assert ious[-1] >= 0.99
            np.testing.assert_array_equal(back, mask)  # in fact exact
    assert len(ious) == 427


def test_simplification_trades_vertices_for_accuracy(
    coco_gt_dense: dict[int, sv.Detections],
) -> None:
    mask = coco_gt_dense[1].mask[0]
    exact = mask_to_polygons(mask)
    simple = mask_to_polygons(mask, tolerance=1.0)
    assert sum(map(len, simple)) < sum(map(len, exact)) / 2
    assert _iou(mask, polygons_to_mask(simple, *mask.shape)) >= 0.97


def test_empty_mask_gives_no_polygon_and_back() -> None:
    assert mask_to_polygons(np.zeros((3, 3), bool)) == []
    assert not polygons_to_mask([], 3, 3).any()


@pytest.mark.parametrize(
    ("mask", "kwargs", "error", "message"),
    [
        (np.zeros((1, 3, 3), bool), {}, ValueError, r"expected shape \(H, W\), got \(1, 3, 3\)"),
        (np.zeros((3, 3), np.uint8), {}, TypeError, "expected dtype bool, got uint8"),
        ([[True]], {}, TypeError, "expected a numpy array"),
        (np.ones((3, 3), bool), {"tolerance": -1.0}, ValueError, "tolerance must be >= 0"),
    ],
)
def test_mask_to_polygons_bad_input(mask: object, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        mask_to_polygons(mask, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("polygons", "error", "message"),
    [
        ([[0, 0, 1, 1]], ValueError, "polygon 0 has 4 coordinates; expected an even number"),
        ([[0, 0, 1, 1, 2]], ValueError, "polygon 0 has 5 coordinates"),
        ([[0, 0, 1, 0, 1, np.nan]], ValueError, "NaN or infinite"),
        ("0 0 1 0 1 1", TypeError, "expected a list of polygons"),
    ],
)
def test_polygons_to_mask_bad_input(polygons: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        polygons_to_mask(polygons, 4, 4)  # type: ignore[arg-type]


def test_join_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected at least one polygon"):
        join_polygons([])
