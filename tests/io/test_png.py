"""Per-instance PNGs and palette index PNGs: exact round trips, metadata, overlaps, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image, PngImagePlugin

from textseg.io.png import (
    load_index_png,
    load_instance_masks,
    palette,
    save_index_png,
    save_instance_masks,
)

CLASSES = ["cat", "dog", "bird"]


def _detections(masks: np.ndarray, class_id: list[int], confidence: list[float] | None = None):
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        class_id=np.asarray(class_id),
        confidence=None if confidence is None else np.asarray(confidence, np.float32),
        data={"class_name": np.array([CLASSES[k] for k in class_id])},
    )


def _disjoint(masks: np.ndarray) -> np.ndarray:
    out = masks.copy()
    taken = np.zeros(masks.shape[1:], bool)
    for m in out:
        m &= ~taken
        taken |= m
    return out


@pytest.fixture
def real(coco_gt_dense: dict) -> sv.Detections:
    """coco-dev image 1 (8 overlapping instances), with made-up confidences."""
    detections = coco_gt_dense[1]
    return sv.Detections(
        xyxy=detections.xyxy,
        mask=detections.mask,
        class_id=detections.class_id,
        confidence=np.linspace(0.3, 0.95, len(detections)).astype(np.float32),
        data={"class_name": detections.data["class_name"]},
    )


class TestInstancePngs:
    def test_round_trip_exact_with_metadata(self, tmp_path: Path, real: sv.Detections) -> None:
        paths = save_instance_masks(tmp_path, real, stem="000000000009")
        assert [p.name for p in paths[:2]] == ["000000000009_0000.png", "000000000009_0001.png"]
        with Image.open(paths[0]) as im:
            assert im.mode == "L" and set(np.unique(np.asarray(im))) <= {0, 255}
        back = load_instance_masks(tmp_path, stem="000000000009")
        np.testing.assert_array_equal(back.mask, real.mask)  # overlaps are no problem here
        np.testing.assert_array_equal(back.class_id, real.class_id)
        np.testing.assert_array_equal(back.data["class_name"], real.data["class_name"])
        np.testing.assert_array_equal(back.confidence, real.confidence)
        np.testing.assert_array_equal(back.xyxy, real.xyxy)

    def test_tiny_masks(self, tmp_path: Path, tiny: np.ndarray) -> None:
        save_instance_masks(tmp_path, _detections(tiny[None], [1]), stem="t")
        np.testing.assert_array_equal(load_instance_masks(tmp_path, stem="t").mask[0], tiny)

    def test_plain_masks_without_metadata(self, tmp_path: Path) -> None:
        mask = np.zeros((5, 6), np.uint8)
        mask[1:3, 2:5] = 255
        Image.fromarray(mask).save(tmp_path / "x_0000.png")
        back = load_instance_masks(tmp_path, stem="x")
        assert back.class_id is None and back.confidence is None
        np.testing.assert_array_equal(back.mask[0], mask > 0)

    def test_empty_detections(self, tmp_path: Path) -> None:
        empty = sv.Detections(xyxy=np.zeros((0, 4), np.float32), mask=np.zeros((0, 5, 6), bool))
        assert save_instance_masks(tmp_path, empty, stem="e") == []
        assert load_instance_masks(tmp_path, stem="e", height=5, width=6).mask.shape == (0, 5, 6)

    def test_overwrite_removes_all_old_files(self, tmp_path: Path, real: sv.Detections) -> None:
        save_instance_masks(tmp_path, real, stem="a")
        with pytest.raises(ValueError, match="already has 8 mask PNGs of 'a'; pass overwrite=True"):
            save_instance_masks(tmp_path, real[:2], stem="a")
        save_instance_masks(tmp_path, real[:2], stem="a", overwrite=True)
        assert len(load_instance_masks(tmp_path, stem="a")) == 2

    def test_missing_index_is_an_error(self, tmp_path: Path, real: sv.Detections) -> None:
        paths = save_instance_masks(tmp_path, real[:3], stem="a")
        paths[1].unlink()
        with pytest.raises(ValueError, match=r"not numbered 0..1; missing \[1\]"):
            load_instance_masks(tmp_path, stem="a")

    @pytest.mark.parametrize(
        ("detections", "kwargs", "error", "message"),
        [
            (
                sv.Detections(xyxy=np.zeros((1, 4), np.float32), class_id=np.array([0])),
                {},
                ValueError,
                r"detections have no masks \(mask is None\)",
            ),
            (
                _detections(np.ones((1, 4, 4), bool), [2]),
                {"classes": ["cat"]},
                ValueError,
                "class_id 2 of detection 0 is out of range for 1 classes",
            ),
            (
                _detections(np.ones((1, 4, 4), bool), [0]),
                {"stem": "a/b"},
                ValueError,
                "stem must be",
            ),
        ],
    )
    def test_bad_input(
        self, tmp_path: Path, detections: sv.Detections, kwargs: dict, error: type, message: str
    ) -> None:
        kwargs = {"stem": "x", **kwargs}
        with pytest.raises(error, match=message):
            save_instance_masks(tmp_path, detections, **kwargs)

    def test_wrong_mask_dtype(self, tmp_path: Path) -> None:
        detections = _detections(np.ones((1, 4, 4), bool), [0])
        detections.mask = np.ones((1, 4, 4), np.uint8)
        with pytest.raises(TypeError, match="expected dtype bool, got uint8"):
            save_instance_masks(tmp_path, detections, stem="x")

    def test_unwritable_folder(self, tmp_path: Path, real: sv.Detections) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(NotADirectoryError, match="it or a parent is a file"):
            save_instance_masks(tmp_path / "file" / "masks", real, stem="x")


class TestIndexPng:
    def test_instance_round_trip_exact_for_disjoint_masks(
        self, tmp_path: Path, real: sv.Detections
    ) -> None:
        real.mask = _disjoint(real.mask)
        path = save_index_png(tmp_path / "idx.png", real)
        with Image.open(path) as im:
            assert im.mode == "P"
            values = np.asarray(im)
            assert im.getpalette()[:3] == [0, 0, 0]
        for i, m in enumerate(real.mask):
            assert (values[m] == i + 1).all()
        assert (values[~real.mask.any(axis=0)] == 0).all()
        back = load_index_png(path)
        np.testing.assert_array_equal(back.mask, real.mask)
        np.testing.assert_array_equal(back.class_id, real.class_id)
        np.testing.assert_array_equal(back.data["class_name"], real.data["class_name"])
        np.testing.assert_array_equal(back.confidence, real.confidence)

    def test_overlap_goes_to_the_most_confident(self, tmp_path: Path) -> None:
        masks = np.zeros((2, 6, 6), bool)
        masks[0, 0:4, 0:4] = True
        masks[1, 2:6, 2:6] = True
        for scores, winner in (([0.9, 0.2], 0), ([0.2, 0.9], 1)):
            path = save_index_png(tmp_path / "o.png", _detections(masks, [0, 1], scores))
            back = load_index_png(path)
            assert back.mask[winner][3, 3] and not back.mask[1 - winner][3, 3]
            np.testing.assert_array_equal(back.mask[winner], masks[winner])

    def test_by_class(self, tmp_path: Path) -> None:
        masks = np.zeros((3, 6, 8), bool)
        masks[0, 0:2, 0:2] = True
        masks[1, 4:6, 4:8] = True
        masks[2, 0:2, 5:7] = True
        path = save_index_png(
            tmp_path / "c.png", _detections(masks, [2, 0, 2]), by="class", classes=CLASSES
        )
        with Image.open(path) as im:
            assert im.getpalette()[: 3 * 4] == palette(4)
            assert set(np.unique(np.asarray(im)).tolist()) == {0, 1, 3}
        back = load_index_png(path)
        assert back.class_id.tolist() == [0, 2]
        assert back.data["class_name"].tolist() == ["cat", "bird"]
        np.testing.assert_array_equal(back.mask[0], masks[1])
        np.testing.assert_array_equal(back.mask[1], masks[0] | masks[2])

    def test_plain_label_image_without_metadata(self, tmp_path: Path) -> None:
        values = np.zeros((4, 5), np.uint8)
        values[0, 0] = 1
        values[3, 4] = 2
        Image.fromarray(values, mode="L").save(tmp_path / "plain.png")
        back = load_index_png(tmp_path / "plain.png")
        assert len(back) == 2 and back.class_id is None
        assert back.mask[0][0, 0] and back.mask[1][3, 4]

    def test_empty_detections(self, tmp_path: Path) -> None:
        empty = sv.Detections(xyxy=np.zeros((0, 4), np.float32), mask=np.zeros((0, 5, 6), bool))
        back = load_index_png(save_index_png(tmp_path / "e.png", empty))
        assert len(back) == 0 and back.mask.shape == (0, 5, 6)

    def test_too_many_instances(self, tmp_path: Path) -> None:
        masks = np.zeros((256, 4, 4), bool)
        with pytest.raises(
            ValueError, match="at most 255 instances, got 256; use save_instance_masks"
        ):
            save_index_png(tmp_path / "x.png", _detections(masks, [0] * 256))

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"by": "class"}, r"needs classes=\[...\]"),
            ({"by": "pixel"}, "by must be 'instance' or 'class'"),
            ({"name": "x.jpg"}, "the file must end in .png"),
        ],
    )
    def test_bad_options(self, tmp_path: Path, kwargs: dict, message: str) -> None:
        name = kwargs.pop("name", "x.png")
        with pytest.raises(ValueError, match=message):
            save_index_png(tmp_path / name, _detections(np.ones((1, 4, 4), bool), [0]), **kwargs)

    def test_rgb_png_is_not_an_index_png(self, tmp_path: Path) -> None:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
        with pytest.raises(ValueError, match=r"expected an 8-bit palette \(P\) or grayscale \(L\)"):
            load_index_png(tmp_path / "rgb.png")

    def test_values_beyond_metadata(self, tmp_path: Path) -> None:
        path = save_index_png(tmp_path / "x.png", _detections(np.ones((1, 4, 4), bool), [0]))
        with Image.open(path) as im:
            values = np.asarray(im).copy()
            info = im.info
        values[0, 0] = 7
        meta = PngImagePlugin.PngInfo()
        meta.add_text("textseg", info["textseg"])
        Image.fromarray(values, mode="L").save(path, pnginfo=meta)
        with pytest.raises(ValueError, match="pixel value 7 but only 1 instances stored"):
            load_index_png(path)
