"""Per-image, per-class counts: counting, CSV (long and wide) and JSON round trips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from textseg.io.coco import CocoData
from textseg.io.counts import (
    count_classes,
    count_per_image,
    load_counts_csv,
    load_counts_json,
    save_counts_csv,
    save_counts_json,
)

NAMES = ["cat", "dog", "hot dog, with mustard", 'say "cheese"']


def _boxes(class_id: list[int] | None, names: list[str] | None = None) -> sv.Detections:
    n = len(class_id if class_id is not None else names or [])
    data = {"class_name": np.array(names)} if names is not None else {}
    return sv.Detections(
        xyxy=np.zeros((n, 4), np.float32),
        class_id=None if class_id is None else np.asarray(class_id, dtype=np.int64),
        data=data,
    )


@pytest.mark.parametrize(
    ("detections", "expected"),
    [
        (_boxes([0, 0, 2]), {"cat": 2, "dog": 0, "hot dog, with mustard": 1, 'say "cheese"': 0}),
        (_boxes([]), dict.fromkeys(NAMES, 0)),
        (sv.Detections.empty(), dict.fromkeys(NAMES, 0)),
        (
            _boxes(None, ["dog", "dog"]),
            {"cat": 0, "dog": 2, "hot dog, with mustard": 0, 'say "cheese"': 0},
        ),
    ],
)
def test_count_classes(detections: sv.Detections, expected: dict) -> None:
    counts = count_classes(detections, NAMES)
    assert counts == expected
    assert list(counts) == NAMES  # vocabulary order, zeros included


@pytest.mark.parametrize(
    ("detections", "message"),
    [
        (_boxes([4]), "class_id 4 of detection 0 is out of range for 4 classes"),
        (_boxes(None, ["cow"]), "class_name 'cow' of detection 0 is not one of the classes"),
    ],
)
def test_count_bad_classes(detections: sv.Detections, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        count_classes(detections, NAMES)


def test_count_per_image_names_the_image() -> None:
    with pytest.raises(ValueError, match=r"image 'b\.jpg': count_classes: class_id 9"):
        count_per_image({"a.jpg": _boxes([0]), "b.jpg": _boxes([9])}, NAMES)
    with pytest.raises(ValueError, match=r"image 'a\.jpg' is given twice"):
        count_per_image([("a.jpg", _boxes([0])), ("a.jpg", _boxes([1]))], NAMES)


@pytest.fixture
def counts() -> dict:
    images = [("a.jpg", [0, 0, 3]), ("b,c.jpg", []), ("d.jpg", [2])]
    return count_per_image([(name, _boxes(ids)) for name, ids in images], NAMES)


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_csv_round_trip(tmp_path: Path, counts: dict, layout: str) -> None:
    path = save_counts_csv(tmp_path / "out" / "counts.csv", counts, layout=layout)  # type: ignore[arg-type]
    assert load_counts_csv(path) == counts
    rows = list(csv.reader(path.open()))
    if layout == "long":
        assert rows[0] == ["image", "class", "count"]
        assert rows[1] == ["a.jpg", "cat", "2"]
        assert len(rows) == 1 + 3 * len(NAMES)
    else:
        assert rows[0] == ["image", *NAMES]
        assert rows[2] == ["b,c.jpg", "0", "0", "0", "0"]


def test_json_round_trip_with_totals(tmp_path: Path, counts: dict) -> None:
    path = save_counts_json(tmp_path / "counts.json", counts)
    assert load_counts_json(path) == counts
    payload = json.loads(path.read_text())
    assert payload["classes"] == NAMES
    assert payload["totals"] == {"cat": 2, "dog": 0, "hot dog, with mustard": 1, 'say "cheese"': 1}


def test_names_fix_columns_and_refuse_unknown(tmp_path: Path, counts: dict) -> None:
    path = save_counts_csv(
        tmp_path / "c.csv", {"x": {"dog": 1}}, layout="wide", names=["dog", "cat"]
    )
    assert path.read_text().splitlines() == ["image,dog,cat", "x,1,0"]
    with pytest.raises(ValueError, match=r"image 'a.jpg' has counts for \['cat', .*not in names"):
        save_counts_csv(tmp_path / "c.csv", counts, names=["dog"])
    with pytest.raises(ValueError, match="not in names"):
        save_counts_json(tmp_path / "c.json", counts, names=["dog"])


def test_coco_dev_counts(coco_gt: CocoData, tmp_path: Path) -> None:
    counts = count_per_image(
        ((im["file_name"], coco_gt.detections[im["id"]]) for im in coco_gt.images[:10]),
        coco_gt.classes,
    )
    assert sum(sum(c.values()) for c in counts.values()) == sum(
        len(coco_gt.detections[im["id"]]) for im in coco_gt.images[:10]
    )
    assert load_counts_csv(save_counts_csv(tmp_path / "c.csv", counts, layout="wide")) == counts


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,count\n", "expected a header starting with 'image'"),
        ("image,class,count\na.jpg,cat,many\n", "not a counts CSV"),
        ("image,cat,dog\na.jpg,1\n", "has 2 cells, header 3"),
    ],
)
def test_bad_csv(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "c.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_counts_csv(tmp_path / "c.csv")


def test_bad_layout_and_unwritable(tmp_path: Path, counts: dict) -> None:
    with pytest.raises(ValueError, match="layout must be 'long' or 'wide'"):
        save_counts_csv(tmp_path / "c.csv", counts, layout="tall")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="it or a parent is a file"):
        save_counts_json(tmp_path / "file" / "c.json", counts)
