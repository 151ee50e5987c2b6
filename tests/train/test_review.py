"""The review queue: images ranked by the pipeline's doubt, worst first, from the COCO file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from textseg.io.coco_writer import CocoWriter
from textseg.train.review import review_queue, write_review_queue


def _dets(n: int, **fields: list) -> sv.Detections:
    masks = np.zeros((n, 8, 8), bool)
    for i in range(n):
        masks[i, i : i + 2, i : i + 2] = True
    names = fields.pop("class_name")
    classes = ["cat", "dog", "unknown"]
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        confidence=np.asarray(fields.pop("score"), np.float32),
        class_id=np.asarray([classes.index(c) for c in names]),
        data={"class_name": np.asarray(names, dtype=object), **{
            k: np.asarray(v, dtype=object if k == "prompt" else np.float32)
            for k, v in fields.items()
        }},
    )  # fmt: skip


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "annotations.json"
    with CocoWriter(path, ["cat", "dog", "unknown"]) as writer:
        # sure: high IoU, high margin, the detector's class kept
        writer.add("sure.jpg", 8, 8, _dets(1, class_name=["cat"], score=[0.9], sam_iou=[0.95],
                                           clip_margin=[0.8], prompt=["cat"]))  # fmt: skip
        # relabelled: the detector said dog, CLIP wrote cat
        writer.add("relabel.jpg", 8, 8, _dets(1, class_name=["cat"], score=[0.9],
                                              sam_iou=[0.95], clip_margin=[0.6],
                                              prompt=["dog"]))  # fmt: skip
        # a poor mask: low predicted IoU, but only one of two detections
        writer.add("poor.jpg", 8, 8, _dets(2, class_name=["cat", "dog"], score=[0.9, 0.9],
                                           sam_iou=[0.2, 0.95], clip_margin=[0.8, 0.8],
                                           prompt=["cat", "dog"]))  # fmt: skip
        # the labeler could not name it
        writer.add("unknown.jpg", 8, 8, _dets(1, class_name=["unknown"], score=[0.9],
                                              sam_iou=[0.95], clip_margin=[-0.2],
                                              prompt=["cat"]))  # fmt: skip
        writer.add("empty.jpg", 8, 8, _dets(0, class_name=[], score=[]))
    return path


def test_ranked_worst_first(labels: Path) -> None:
    queue = review_queue(labels)
    assert [q.file_name for q in queue] == [
        "unknown.jpg", "relabel.jpg", "poor.jpg", "sure.jpg", "empty.jpg"
    ]  # fmt: skip
    by_name = {q.file_name: q for q in queue}
    assert by_name["unknown.jpg"].uncertainty == 1.0 and by_name["unknown.jpg"].unknown == 1
    assert by_name["relabel.jpg"].disagreements == 1
    assert by_name["relabel.jpg"].worst_reason == "detector/labeler disagree"
    assert by_name["poor.jpg"].worst_reason == "low sam_iou"
    assert by_name["poor.jpg"].min_sam_iou == pytest.approx(0.2)
    assert by_name["sure.jpg"].disagreements == 0 and by_name["sure.jpg"].doubtful == 0
    empty = by_name["empty.jpg"]
    assert empty.uncertainty is None and empty.detections == 0  # absent, never a filler


def test_csv_is_written_beside_the_labels(labels: Path) -> None:
    path = write_review_queue(labels)
    assert path == labels.parent / "review_queue.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["file_name"] == "unknown.jpg" and rows[0]["rank"] == "1"
    assert rows[-1]["uncertainty"] == "" and rows[-1]["detections"] == "0"
    # The file is the pipeline's: written by CocoWriter with the per-instance fields.
    ann = json.loads(labels.read_text())["annotations"][0]
    assert {"sam_iou", "clip_margin", "prompt", "score"} <= set(ann)
