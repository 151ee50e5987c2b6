"""The automatic generator: grids, crops, filters and de-duplication (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import build_point_grid, generate_crop_boxes

from textseg._hub import create_model
from textseg.sam import AutomaticMaskGenerator, SamCore
from textseg.sam.automatic import crop_boxes, point_grid


@pytest.mark.parametrize("n", [1, 4, 16, 32])
def test_point_grid_matches_official(n: int):
    np.testing.assert_allclose(point_grid(n), build_point_grid(n))


@pytest.mark.parametrize(("h", "w", "layers"), [(480, 640, 1), (640, 427, 2), (100, 100, 0)])
def test_crop_boxes_match_official(h: int, w: int, layers: int):
    boxes, idx = generate_crop_boxes((h, w), layers, 512 / 1500)
    ours = crop_boxes(h, w, layers, 512 / 1500)
    assert [b for b, _ in ours] == boxes and [i for _, i in ours] == idx


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.kron(small, np.ones((40, 40, 1), np.uint8))


@pytest.fixture(scope="module")
def sam() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("sam-vit-tiny-test", pretrained=False)


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_matches_official_with_crops(sam, crop_n_layers: int):
    settings = dict(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=crop_n_layers,
        box_nms_thresh=0.99,
        crop_nms_thresh=0.99,
    )
    ref = SamAutomaticMaskGenerator(sam, **settings).generate(_image())
    ours = AutomaticMaskGenerator(SamCore(sam), **settings).generate(_image())
    assert len(ours) == len(ref)
    ref_boxes = sorted(tuple(r["crop_box"]) for r in ref)
    assert sorted(tuple(b) for b in ours.data["crop_box"].tolist()) == ref_boxes


def test_detections_fields_and_order(sam):
    dets = AutomaticMaskGenerator(
        SamCore(sam), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(_image())
    assert dets.mask.shape[1:] == (240, 320)
    assert (np.diff(dets.confidence) <= 0).all()
    assert {"sam_iou", "stability_score", "point", "crop_box"} <= set(dets.data)


def test_mask_dedup_removes_more_than_box_nms(sam):
    kw = dict(
        points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    box = AutomaticMaskGenerator(SamCore(sam), **kw).generate(_image())
    mask = AutomaticMaskGenerator(SamCore(sam), dedup="mask", mask_nms_thresh=0.5, **kw).generate(
        _image()
    )
    # Box NMS at 1.0 keeps every candidate; mask NMS removes the overlapping ones.
    assert 0 < len(mask) < len(box)
    from textseg.masks import mask_iou_matrix

    iou, _ = mask_iou_matrix(mask.mask)
    np.fill_diagonal(iou, 0.0)
    assert iou.max() <= 0.5  # no two kept masks overlap beyond the threshold
    kept = {m.tobytes() for m in mask.mask}
    for dropped in (m for m in box.mask if m.tobytes() not in kept):
        both = np.concatenate([dropped[None], mask.mask])
        assert mask_iou_matrix(both)[0][0, 1:].max() > 0.5  # dropped for an overlap


def test_thresholds_filter_everything_gives_empty(sam):
    dets = AutomaticMaskGenerator(SamCore(sam), points_per_side=2, pred_iou_thresh=1.5).generate(
        _image()
    )
    assert len(dets) == 0 and dets.mask.shape == (0, 240, 320)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(dedup="nms"), "dedup: expected"),
        (dict(points_per_side=0), "points_per_side"),
        (dict(crop_n_layers=-1), "crop_n_layers"),
    ],
)
def test_bad_arguments(sam, kwargs, error):
    with pytest.raises(ValueError, match=error):
        AutomaticMaskGenerator(SamCore(sam), **kwargs)
