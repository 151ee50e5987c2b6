"""EvalDataset / load_dataset: layout, selection, crowd handling and the errors users meet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textseg.eval import EvalDataset, load_dataset


def test_synthetic_dataset_layout(synth: EvalDataset) -> None:
    assert len(synth) == 3
    assert synth.classes == ["cat", "bird", "dog"]  # sorted by category id
    assert synth.category_ids == [1, 2, 3]
    assert synth.present_classes() == [0, 2]  # bird has no instance
    np.testing.assert_array_equal(synth.gt_counts(), [[1, 0, 1], [2, 0, 0], [0, 0, 0]])


def test_sample_excludes_crowd_and_gives_mask_boxes(synth: EvalDataset) -> None:
    first = synth.sample(0)
    assert first.image.shape == (48, 64, 3) and first.image.dtype == np.uint8
    assert first.size == (48, 64)
    assert list(first.gt.data["class_name"]) == ["cat", "dog"]  # the crowd dog left out
    assert first.gt.mask.shape == (2, 48, 64)
    assert int(first.gt.mask[1].sum()) == 20 * 30
    np.testing.assert_array_equal(first.gt.xyxy[1], [30, 25, 59, 44])  # last column/row
    empty = synth.sample(2)
    assert len(empty.gt) == 0 and empty.gt.mask.shape == (0, 48, 64)


def test_coco_gt_restricted_to_selection(synth_dir: Path) -> None:
    data = load_dataset(synth_dir, max_images=1)
    gt = data.coco_gt()
    assert [im["id"] for im in gt["images"]] == [1]
    assert {a["image_id"] for a in gt["annotations"]} == {1}
    assert len(gt["annotations"]) == 3  # crowd included: COCOeval ignores matches to it


def test_coco_dev_first_images(data_dir: Path) -> None:
    data = load_dataset(data_dir / "coco-dev", max_images=2)
    assert len(data) == 2 and len(data.classes) == 80
    assert data.name == "coco-dev"
    sample = data.sample(0)
    assert sample.gt.mask.shape[1:] == sample.size
    assert len(sample.gt) == int(data.gt_counts()[0].sum())


def test_other_layout_with_explicit_paths(synth_dir: Path, tmp_path: Path) -> None:
    ann = tmp_path / "labels" / "val.json"
    ann.parent.mkdir()
    ann.write_text((synth_dir / "annotations.json").read_text())
    data = load_dataset(ann, images=synth_dir / "images")
    assert len(data) == 3 and data.name == "val"


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        ("missing", FileNotFoundError, r"dataset not found: .*nope"),
        (
            "no_json",
            FileNotFoundError,
            r"has no annotations.json; give the COCO file with "
            r"--annotations FILE",
        ),
        (
            "no_images",
            FileNotFoundError,
            r"has no images/ folder; give the image folder with "
            r"--images DIR",
        ),
        ("image_gone", FileNotFoundError, r"1 of 3 images not found in .*images, e.g. im2.png"),
        ("not_coco", ValueError, r"expected a COCO instances dict with images, annotations"),
        ("not_json", ValueError, r"is not a JSON file"),
        ("no_segm", ValueError, r"annotation 4 has no segmentation; mask evaluation needs"),
        ("dup_names", ValueError, r"category names are not unique"),
    ],
)
def test_load_dataset_errors(synth_dir: Path, setup: str, error: type, match: str) -> None:
    path = synth_dir
    ann = synth_dir / "annotations.json"
    doc = json.loads(ann.read_text())
    if setup == "missing":
        path = synth_dir / "nope"
    elif setup == "no_json":
        ann.unlink()
    elif setup == "no_images":
        (synth_dir / "images").rename(synth_dir / "pictures")
    elif setup == "image_gone":
        (synth_dir / "images" / "im2.png").unlink()
    elif setup == "not_coco":
        ann.write_text(json.dumps([{"image_id": 1}]))
    elif setup == "not_json":
        ann.write_text("{not json")
    elif setup == "no_segm":
        del doc["annotations"][3]["segmentation"]
        ann.write_text(json.dumps(doc))
    elif setup == "dup_names":
        doc["categories"][1]["name"] = "Cat"
        ann.write_text(json.dumps(doc))
    with pytest.raises(error, match=match):
        load_dataset(path)


def test_max_images_must_be_positive(synth_dir: Path) -> None:
    with pytest.raises(ValueError, match="max_images: expected a positive integer or None, got 0"):
        load_dataset(synth_dir, max_images=0)


def test_image_of_another_size_is_refused(synth_dir: Path) -> None:
    Image.new("RGB", (10, 10)).save(synth_dir / "images" / "im1.png")
    data = EvalDataset(synth_dir / "annotations.json", synth_dir / "images")
    with pytest.raises(ValueError, match=r"im1.png: the image is 10x10 .* its record says 64x48"):
        data.sample(0)


def test_unknown_category_is_refused(synth_dir: Path) -> None:
    ann = synth_dir / "annotations.json"
    doc = json.loads(ann.read_text())
    doc["annotations"][0]["category_id"] = 99
    ann.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="annotation 1 has category_id 99, which is not among"):
        load_dataset(synth_dir)
