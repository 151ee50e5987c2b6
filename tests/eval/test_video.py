"""The video protocol on DAVIS-layout data written from panning clips: an oracle scores J = F =
J&F = 1 with no count error and no identity switch; known mistakes are measured as such."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv

from textseg.cli import main
from textseg.eval.video import boundary_f, evaluate_video, id_switches, load_davis
from textseg.video import Tracker
from textseg.video.propagator import Propagated
from textseg.video.synthetic import from_coco


@pytest.fixture(scope="module")
def davis(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("davis")
    ann = data_dir / "coco-dev" / "annotations.json"
    from_coco(ann, "000000000257.jpg", num_frames=8, min_area=400).write_davis(root, "trucks")
    from_coco(ann, "000000000312.jpg", num_frames=6, min_area=400).write_davis(root, "elephants")
    return root


def _key(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()


class SequenceOracle:
    """Propagator and keyframe pipeline answering with a DAVIS sequence's ground truth."""

    def __init__(self, sequences, *, drop: bool = False):
        self.by_key = {}
        for s in sequences:
            for t in range(len(s)):
                self.by_key[_key(s.image(t))] = (s, t)
        self.drop = drop  # propagate nothing (a tracker that loses everything)
        self.reset()

    # propagator
    def reset(self):
        self.objects: dict[int, int] = {}
        self.current = None

    def propagate(self, frame, image, embedding=None):
        self.current = self.by_key[_key(image)]
        s, t = self.current
        labels = s.labels(t)
        ids = np.array(sorted(self.objects), np.int64)
        masks = (
            np.stack([labels == self.objects[i] for i in ids])
            if len(ids) and not self.drop
            else np.zeros((len(ids), *labels.shape), bool)
        )
        return Propagated(ids, masks, np.full(len(ids), 0.99, np.float32))

    def add(self, frame, ids, masks):
        s, t = self.current
        labels = s.labels(t)
        for i, m in zip(ids, masks):
            self.objects[int(i)] = int(np.bincount(labels[m]).argmax())
        return Propagated(np.asarray(ids, np.int64), masks, np.full(len(ids), 0.99, np.float32))

    def remove(self, ids):
        for i in ids:
            self.objects.pop(int(i), None)

    # keyframe pipeline
    def segment(self, image, classes):
        s, t = self.by_key[_key(image)]
        labels = s.labels(t)
        ids = [int(i) for i in np.unique(labels) if i]
        masks = np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool)
        names = [s.categories[i] for i in ids]
        vocab = list(classes.names)
        return SimpleNamespace(
            detections=sv.Detections(
                xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
                mask=masks,
                confidence=np.ones(len(ids), np.float32),
                class_id=np.array([vocab.index(n) for n in names], int),
                data={"class_name": np.array(names, object)},
            )
        )


def test_layout_and_loader(davis):
    sequences = load_davis(davis)
    assert [s.name for s in sequences] == ["trucks", "elephants"]
    trucks = sequences[0]
    assert len(trucks) == 8 and trucks.labels(0).dtype == np.uint8
    assert set(trucks.categories.values()) <= {"truck", "person", "backpack", "traffic light"}
    assert set(trucks.object_ids()) == set(trucks.categories)
    meta = json.loads((davis / "meta.json").read_text())
    assert meta["videos"]["elephants"]["objects"]["1"]["category"] == "elephant"
    with pytest.raises(FileNotFoundError, match="not a DAVIS-layout folder"):
        load_davis(davis / "JPEGImages")


def test_oracle_scores_one(davis):
    sequences = load_davis(davis)
    oracle = SequenceOracle(sequences)
    tracker = Tracker(oracle, SequenceOracle(sequences), every=2)
    report = evaluate_video(sequences, propagator=oracle, tracker=tracker)
    m = report.metrics
    assert m["J"] == m["F"] == m["J&F"] == 1.0
    assert m["count_mae"] == 0.0 and m["id_switches"] == 0.0
    assert m["tracks"] == m["objects"] > 0
    for name, entry in report.sequences.items():
        assert all(p == t for p, t in entry["counts"].values()), name


def test_losing_everything_scores_low(davis):
    sequences = load_davis(davis)
    report = evaluate_video(sequences, propagator=SequenceOracle(sequences, drop=True))
    # Frames where an object is gone from both the ground truth and the prediction count 1.
    assert report.metrics["J"] < 0.5 and report.metrics["F"] < 0.5


def test_identity_switches_are_counted(davis):
    """A tracker that swaps the ids of two objects half way: two switches."""
    sequences = load_davis(davis, sequences=["elephants"])
    s = sequences[0]
    visible = [{int(i) for i in np.unique(s.labels(t)) if i} for t in range(1, len(s))]
    a, b = sorted(set.intersection(*visible))[:2]

    class Swapper:
        def track(self, frames, classes):
            for t, _ in enumerate(frames):
                labels = s.labels(t)
                ids = [int(i) for i in np.unique(labels) if i]
                masks = np.stack([labels == i for i in ids])
                swap = {a: b, b: a} if t >= 3 else {}
                tracker_id = np.array([swap.get(i, i) for i in ids])
                dets = sv.Detections(
                    xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
                    mask=masks,
                    tracker_id=tracker_id,
                    data={"class_name": np.array([s.categories[i] for i in ids], object)},
                )
                yield SimpleNamespace(error=None, detections=dets)

    report = evaluate_video(sequences, tracker=Swapper())
    assert report.metrics["id_switches"] == 2
    assert id_switches([{1: 5, 2: 6}, {1: 5}, {1: 6, 2: 6}, {2: 6}]) == 1


def test_boundary_f():
    a = np.zeros((100, 100), bool)
    a[20:60, 30:80] = True
    assert boundary_f(a, a) == 1.0
    shifted = np.roll(a, 1, axis=1)
    assert 0.9 < boundary_f(shifted, a) <= 1.0  # within the 0.8%-of-diagonal tolerance
    far = np.roll(a, 10, axis=0)
    assert boundary_f(far, a) < 0.5
    empty = np.zeros_like(a)
    assert boundary_f(empty, empty) == 1.0 and boundary_f(empty, a) == 0.0


def test_needs_a_part(davis):
    with pytest.raises(ValueError, match="propagator"):
        evaluate_video(davis)


def test_cli_video_protocol(davis, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            str(davis),
            "--protocols",
            "video",
            "--tiny",
            "--max-images",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "video_report.json").read_text())
    assert set(report["metrics"]) >= {"J", "F", "J&F", "count_mae", "id_switches"}
    assert 0.0 <= report["metrics"]["J&F"] <= 1.0
    assert "J&F" in captured.out and (out / "video_report.md").is_file()
