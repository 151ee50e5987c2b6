"""AnnotationStore on its own: the COCO file of a folder, with no SAM and no session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from textseg.app.store import AnnotationStore
from textseg.io.coco import load_coco

from .app_writes import square_masks

H, W = 60, 80


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two 80x60 images; no SAM anywhere."""
    from PIL import Image

    out = tmp_path / "images"
    out.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (W, H)).save(out / name)
    return out


BOXES = ((5, 5, 20, 30), (30, 10, 70, 50))


def _store(folder: Path, images=("a.png", "b.png")) -> AnnotationStore:
    return AnnotationStore(folder / "labels.json", folder, list(images))


def _add(store: AnnotationStore, name: str, k: int, cls: str, source: str = "manual") -> dict:
    mask = square_masks(H, W, BOXES)[k]
    ann = store.new_annotation(
        name, mask, cls, score=0.9, sam_iou=0.8, origin="click", source=source
    )
    store.set(name, (*store.annotations(name), ann))
    return ann


def test_saved_at_once_and_reopened(folder: Path):
    store = _store(folder)
    a = _add(store, "a.png", 0, "dog")
    b = _add(store, "b.png", 1, "cat")
    data = load_coco(store.path)
    assert data.classes == ["dog", "cat"]
    assert (a["id"], b["id"]) == (1, 2) and a["bbox"] == [5, 5, 15, 25]
    again = _store(folder)
    assert again.classes == ["dog", "cat"]
    assert again.counts() == {"a.png": {"dog": 1, "cat": 0}, "b.png": {"dog": 0, "cat": 1}}
    np.testing.assert_array_equal(again.detections("b.png").mask, square_masks(H, W, BOXES)[1:])
    np.testing.assert_array_equal(again.masks("a.png", H, W), square_masks(H, W, BOXES)[:1])
    assert _add(again, "a.png", 1, "dog")["id"] == 3  # ids go on after the file's
    assert again.totals() == {"dog": 2, "cat": 1}


def test_reclassed_and_without_are_not_saved_until_set(folder: Path):
    store = _store(folder)
    a = _add(store, "a.png", 0, "dog", source="proposal")
    _add(store, "a.png", 1, "dog")
    anns = store.reclassed("a.png", a["id"], "cat")
    assert store.class_of(anns[0]) == "cat" and anns[0]["source"] == "corrected"
    assert [c["name"] for c in json.loads(store.path.read_text())["categories"]] == ["dog"]
    store.set("a.png", anns)
    assert store.totals() == {"dog": 1, "cat": 1}
    assert [x["id"] for x in store.without("a.png", a["id"])] == [2]
    with pytest.raises(
        ValueError, match=r"annotation 9 is not on a\.png; expected one of \[1, 2\]"
    ):
        store.without("a.png", 9)


def test_a_failed_write_changes_nothing(folder: Path, monkeypatch: pytest.MonkeyPatch):
    store = _store(folder)
    _add(store, "a.png", 0, "dog")
    before = store.path.read_bytes()

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        _add(store, "b.png", 1, "dog")
    assert store.path.read_bytes() == before
    assert store.annotations("b.png") == () and len(store.annotations("a.png")) == 1


def test_records_of_files_gone_from_the_folder_are_kept(folder: Path):
    store = _store(folder)
    _add(store, "a.png", 0, "dog")
    _add(store, "b.png", 0, "dog")
    again = _store(folder, images=["a.png"])  # b.png deleted meanwhile
    _add(again, "a.png", 1, "dog")
    data = json.loads(again.path.read_text())
    assert sorted(im["file_name"] for im in data["images"]) == ["a.png", "b.png"]
    assert len(data["annotations"]) == 3
    present = again.dataset(present_only=True)
    assert [im["file_name"] for im in present["images"]] == ["a.png"]
    assert len(present["annotations"]) == 2


def test_not_a_coco_file(folder: Path):
    (folder / "labels.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a COCO dict"):
        _store(folder)


def test_the_files_folder_is_made_on_the_first_save(folder: Path):
    store = AnnotationStore(folder / "new" / "labels.json", folder, ["a.png"])
    _add(store, "a.png", 0, "dog")
    assert load_coco(folder / "new" / "labels.json").classes == ["dog"]
