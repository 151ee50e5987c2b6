"""YOLO-seg export/import: coco-dev round trip, tiny and multi-part masks, boxes, empty images,
resuming, data.yaml, image sizes from headers, and bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
import yaml

from textseg.io.coco import CocoData
from textseg.io.polygons import polygons_to_mask
from textseg.io.yolo import (
    YoloWriter,
    detections_to_yolo,
    load_yolo,
    read_data_yaml,
    yolo_to_detections,
)

CLASSES = ["cat", "dog", "bird"]


def _detections(masks: np.ndarray, class_id: list[int]) -> sv.Detections:
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks, class_id=np.asarray(class_id)
    )


def test_coco_dev_round_trip(tmp_path: Path, coco_gt: CocoData, coco_gt_dense: dict) -> None:
    """Polygons through the boundary pixels' centres, read back as ultralytics fills them
    (int32 truncation, cv2.fillPoly): every instance at IoU >= 0.95, nearly all exactly;
    only the zero-width bridges joining an instance's parts paint extra pixels."""
    with YoloWriter(tmp_path, coco_gt.classes) as writer:
        for image in coco_gt.images:
            writer.add(
                image["file_name"], image["width"], image["height"], coco_gt_dense[image["id"]]
            )
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in coco_gt.images}
    back = load_yolo(tmp_path, sizes=sizes)
    assert back.classes == coco_gt.classes
    assert set(back.detections) == set(sizes)
    ious = []
    for image in coco_gt.images:
        want, got = coco_gt_dense[image["id"]], back.detections[image["file_name"]]
        np.testing.assert_array_equal(got.class_id, want.class_id)
        for a, b in zip(want.mask, got.mask):
            ious.append((a & b).sum() / (a | b).sum())
    ious = np.asarray(ious)
    # The lowest are small multi-part objects, where the bridges' pixels weigh most.
    assert len(ious) == 427 and ious.min() >= 0.85
    assert ious.mean() >= 0.995 and (ious == 1.0).mean() >= 0.85


def test_edges_tracing_is_exact_for_pycocotools_and_fatter_for_opencv() -> None:
    h, w = 40, 50
    blob = np.zeros((h, w), bool)
    blob[10:20, 5:30] = True
    blob[15:25, 20:22] = True
    (line,) = detections_to_yolo(_detections(blob[None], [2]), w, h, CLASSES, trace="edges")
    points = np.asarray([float(v) for v in line.split()[1:]]).reshape(-1, 2) * [w, h]
    np.testing.assert_array_equal(polygons_to_mask([points.ravel().tolist()], h, w), blob)
    filled = yolo_to_detections(line, w, h, CLASSES).mask[0]  # as ultralytics fills it
    assert (filled & blob).sum() == blob.sum() and filled.sum() > blob.sum()
    (centre,) = detections_to_yolo(_detections(blob[None], [2]), w, h, CLASSES)
    np.testing.assert_array_equal(yolo_to_detections(centre, w, h, CLASSES).mask[0], blob)


def test_tiny_masks_round_trip(tiny: np.ndarray) -> None:
    h, w = tiny.shape
    (line,) = detections_to_yolo(_detections(tiny[None], [2]), w, h, CLASSES)
    values = line.split()
    assert values[0] == "2" and len(values) - 1 >= 6
    back = yolo_to_detections(line, w, h, CLASSES)
    np.testing.assert_array_equal(back.mask[0], tiny)


def test_multi_part_with_hole_is_one_line(multi_part: np.ndarray) -> None:
    h, w = multi_part.shape
    lines = detections_to_yolo(_detections(multi_part[None], [0]), w, h, CLASSES)
    assert len(lines) == 1
    back = yolo_to_detections(lines, w, h, CLASSES)
    # Every pixel of the mask comes back; the 1-pixel bridges (ultralytics' own convention for
    # multi-part objects) are the only extra pixels.
    assert (back.mask[0] & multi_part).sum() == multi_part.sum()
    extra = back.mask[0] & ~multi_part
    assert extra.sum() <= 2 * (h + w)
    assert back.data["class_name"].tolist() == ["cat"]


def test_boxes_without_masks() -> None:
    detections = sv.Detections(
        xyxy=np.array([[10, 20, 50, 60], [0, 0, 100, 80]], np.float32), class_id=np.array([1, 0])
    )
    lines = detections_to_yolo(detections, 100, 80, CLASSES)
    assert lines == ["1 0.3 0.5 0.4 0.5", "0 0.5 0.5 1 1"]
    back = yolo_to_detections(lines, 100, 80, CLASSES)
    assert back.mask is None
    np.testing.assert_allclose(back.xyxy, detections.xyxy, atol=1e-3)


def test_box_lines_among_polygons_get_rectangle_masks() -> None:
    back = yolo_to_detections("0 0.5 0.5 0.5 0.5\n1 0 0 0.25 0 0.25 0.25", 8, 8, CLASSES)
    assert back.mask.shape == (2, 8, 8)
    assert back.mask[0].sum() == 16 and back.mask[0][2:6, 2:6].all()
    triangle = np.zeros((8, 8), np.uint8)  # what ultralytics paints for that polygon
    cv2.fillPoly(triangle, [np.array([[0, 0], [2, 0], [2, 2]], np.int32)], 1)
    np.testing.assert_array_equal(back.mask[1], triangle.astype(bool))


def test_empty_image_gets_empty_label_file(tmp_path: Path) -> None:
    with YoloWriter(tmp_path, CLASSES) as writer:
        label = writer.add("empty.jpg", 20, 10, sv.Detections.empty())
    assert label.read_text() == ""
    back = load_yolo(tmp_path, sizes={"empty.jpg": (20, 10), "unlabelled.jpg": (5, 5)})
    assert len(back.detections["empty.jpg"]) == 0
    assert len(back.detections["unlabelled.jpg"]) == 0


def test_layout_data_yaml_and_images(tmp_path: Path, data_dir: Path) -> None:
    source = data_dir / "coco-dev" / "images" / "000000000009.jpg"
    rgb = np.zeros((10, 20, 3), np.uint8)
    with YoloWriter(tmp_path / "ds", CLASSES, split="val") as writer:
        mask = np.zeros((1, 480, 640), bool)
        mask[0, 100:200, 50:300] = True
        writer.add(source.name, 640, 480, _detections(mask, [1]), image=source)
        writer.add("made.png", 20, 10, sv.Detections.empty(), image=rgb)
    root = tmp_path / "ds"
    config = yaml.safe_load((root / "data.yaml").read_text())
    # Relative split folders and no path: a copied dataset stays whole; val always present.
    assert config["val"] == "images/val" and config["train"] == "images/train"
    assert config["nc"] == 3 and "path" not in config
    assert config["names"] == {0: "cat", 1: "dog", 2: "bird"}
    assert (root / "labels" / "val" / "000000000009.txt").is_file()
    assert (root / "images" / "val" / "made.png").is_file()
    back = load_yolo(root, "val")  # sizes from the image headers
    assert back.sizes == {"000000000009.jpg": (640, 480), "made.png": (20, 10)}
    np.testing.assert_array_equal(back.detections["000000000009.jpg"].mask, mask)


def test_resume(tmp_path: Path) -> None:
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 2:5, 2:5] = True
    with YoloWriter(tmp_path, CLASSES) as writer:
        writer.add("a.jpg", 10, 10, _detections(mask, [0]))
    writer = YoloWriter(tmp_path, [*CLASSES, "fish"])  # names may be extended at the end
    assert "a.jpg" in writer and "b.jpg" not in writer
    with pytest.raises(ValueError, match=r"labels for 'a.jpg' already exist .* skip images"):
        writer.add("a.jpg", 10, 10, _detections(mask, [0]))
    writer.add("b.jpg", 10, 10, _detections(mask, [3]))
    assert read_data_yaml(tmp_path) == [*CLASSES, "fish"]
    assert YoloWriter(tmp_path).classes == [*CLASSES, "fish"]
    with pytest.raises(ValueError, match="existing names must come first in the same order"):
        YoloWriter(tmp_path, ["dog", "cat", "bird", "fish"])


def test_names_as_list_in_data_yaml(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("names: [a, b]\n")
    assert read_data_yaml(tmp_path) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.1 0.1 0.2", "label line 1: 3 coordinates; expected 4"),
        ("0 0.1 0.1 0.2 0.2 0.3", "label line 1: 5 coordinates"),
        ("\n3 0.1 0.1 0.2 0.2", "label line 2: class index 3 is out of range for 3 names"),
        ("0 0.1 0.1 1.5 0.2 0.3 0.3", r"normalised to \[0, 1\].*\[0.1, 1.5\]"),
        ("cat 0.1 0.1 0.2 0.2", "expected 'class x1 y1 x2 y2 ...' numbers"),
    ],
)
def test_bad_label_lines(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        yolo_to_detections(text, 10, 10, CLASSES)


def test_bad_label_file_is_named(tmp_path: Path) -> None:
    YoloWriter(tmp_path, CLASSES)
    (tmp_path / "labels" / "train" / "x.txt").write_text("9 0.1 0.1 0.2 0.2\n")
    data = load_yolo(tmp_path, sizes={"x.jpg": (10, 10)})
    with pytest.raises(ValueError, match=r"x.txt: label line 1: class index 9"):
        data.detections["x.jpg"]


def test_label_without_image_is_an_error(tmp_path: Path) -> None:
    YoloWriter(tmp_path, CLASSES)
    (tmp_path / "labels" / "train" / "orphan.txt").write_text("")
    with pytest.raises(
        ValueError, match=r"no image \(so no size\) for label files \['orphan.txt'\]"
    ):
        load_yolo(tmp_path)


def test_shared_stem_is_an_error(tmp_path: Path) -> None:
    YoloWriter(tmp_path, CLASSES)
    with pytest.raises(ValueError, match="share the stem 'a'"):
        load_yolo(tmp_path, sizes={"a.jpg": (4, 4), "a.png": (4, 4)})


@pytest.mark.parametrize(
    ("detections", "message"),
    [
        (
            sv.Detections(xyxy=np.zeros((1, 4), np.float32), class_id=np.array([5])),
            "class_id 5 of detection 0 is out of range for 3 classes",
        ),
        (
            _detections(np.zeros((1, 10, 10), bool), [0]),
            "detection 0 has an empty mask, which has no polygon",
        ),
        (
            sv.Detections(
                xyxy=np.zeros((1, 4), np.float32),
                mask=np.ones((1, 10, 11), bool),
                class_id=np.array([0]),
            ),
            r"expected masks of shape \(1, 10, 10\)",
        ),
    ],
)
def test_bad_detections(detections: sv.Detections, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detections_to_yolo(detections, 10, 10, CLASSES)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "../x"}, "split must be a simple folder name"),
        ({"precision": 2}, "precision must be an int >= 3"),
        ({"classes": None}, "has no data.yaml yet: pass classes"),
        ({"classes": ["a", "a"]}, "classes must be unique"),
    ],
)
def test_bad_writer_options(tmp_path: Path, kwargs: dict, message: str) -> None:
    kwargs = {"classes": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message):
        YoloWriter(tmp_path, **kwargs)


def test_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match="it or a parent is a file"):
        YoloWriter(blocker / "ds", CLASSES)


def test_file_name_must_be_plain(tmp_path: Path) -> None:
    writer = YoloWriter(tmp_path, CLASSES)
    with pytest.raises(ValueError, match="file_name must be a plain file name"):
        writer.add("sub/a.jpg", 4, 4, sv.Detections.empty())


def test_image_of_wrong_size_is_refused(tmp_path: Path) -> None:
    writer = YoloWriter(tmp_path, CLASSES)
    with pytest.raises(ValueError, match="image is 5x4, but width x height is 6x4"):
        writer.add("a.png", 6, 4, sv.Detections.empty(), image=np.zeros((4, 5, 3), np.uint8))
    assert "a.png" not in writer
