"""``textseg track``: files on disk, stable ids with an oracle detector, one-line errors."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest
from pycocotools.coco import COCO

from textseg.cli import main
from textseg.video import Tracker

CLASSES = ["truck", "person"]


def _counts(path) -> dict[str, int]:
    with open(path) as f:
        return {r["class"]: int(r["count"]) for r in csv.DictReader(f) if r["scope"] == "distinct"}


def test_oracle_detector_stable_ids_and_exact_counts(pan, oracle, tmp_path, monkeypatch, capsys):
    """The command with the pipeline and propagation replaced by oracles: tracks.json ids
    never switch objects, counts.csv's distinct counts are exact, annotated.mp4 is written."""
    frames = pan.write_frames(tmp_path / "frames")
    segmenter = oracle.Segmenter(pan, CLASSES)
    monkeypatch.setattr(
        "textseg.cli.track._tracker",
        lambda args: Tracker(segmenter, oracle.Propagator(pan), every=args.every),
    )
    out = tmp_path / "out"
    code = main(
        [
            "track",
            str(frames),
            "-c",
            "truck",
            "-c",
            "person",
            "--out",
            str(out),
            "--every",
            "5",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{len(pan)} frames tracked" in printed
    coco = COCO(str(out / "tracks.json"))
    owner: dict[int, int] = {}
    classes: dict[int, set[str]] = defaultdict(set)
    for image in coco.dataset["images"]:
        t = image["frame_index"]
        labels, anns, _ = pan.label_map(t)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            mask = coco.annToMask(a).astype(bool)
            k = np.bincount(labels[mask]).argmax()
            assert np.array_equal(mask, labels == k)
            assert owner.setdefault(a["track_id"], anns[k - 1]) == anns[k - 1]
            classes[a["track_id"]].add(coco.cats[a["category_id"]]["name"])
    assert len(set(owner.values())) == len(owner)  # one id per object
    assert all(len(c) == 1 for c in classes.values())  # one class per track
    expected = defaultdict(set)
    for t in segmenter.calls:
        gt = pan.ground_truth(t, CLASSES)
        for i, c, m in zip(gt.tracker_id, gt.class_id, gt.mask):
            if c >= 0 and m.sum() >= 50:
                expected[CLASSES[c]].add(int(i))
    assert _counts(out / "counts.csv") == {c: len(expected[c]) for c in CLASSES}
    assert (out / "annotated.mp4").stat().st_size > 0


def test_tiny_run_with_a_corrupt_frame(pan, tmp_path, capsys):
    """The real command (tiny random models): a corrupt frame in the middle is reported on
    stderr and skipped; the rest is tracked and written, MOT text included."""
    import av

    video = tmp_path / "clip.avi"
    pan.write_video(video)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size) for p in container.demux(stream) if p.size]
    data = bytearray(video.read_bytes())
    pos, size = packets[2]
    data[pos : pos + size] = bytes(size)
    video.write_bytes(bytes(data))
    out = tmp_path / "out"
    code = main(
        [
            "track",
            str(video),
            "-c",
            "truck",
            "-c",
            "person",
            "--tiny",
            "--out",
            str(out),
            "--every",
            "0",
            "--end",
            "4",
            "--format",
            "mot",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "textseg: warning: skipped frame 2" in captured.err
    data = json.loads((out / "tracks.json").read_text())
    assert [im["frame_index"] for im in data["images"]] == [0, 1, 3]
    assert data["videos"][0]["skipped_frames"][0]["frame_index"] == 2
    assert (out / "mot.txt").is_file() and (out / "annotated.mp4").is_file()
    assert set(_counts(out / "counts.csv")) == set(CLASSES)
    assert "3 frames tracked, 1 skipped" in captured.out


def test_memory_trades_reach_the_propagator_and_are_recorded(pan, tmp_path, monkeypatch):
    """--memory-frames N and --memory-stride S (opt-in trades) are given to SAM 2's propagator
    and written in tracks.json's info.models; without them nothing is recorded (exact)."""
    from textseg.cli import track

    built = []
    original = track._propagator

    def spy(args, segmenter):
        built.append(original(args, segmenter))
        return built[-1]

    monkeypatch.setattr(track, "_propagator", spy)
    frames = pan.write_frames(tmp_path / "frames")
    for extra, out in ((["--memory-frames", "2", "--memory-stride", "2"], "a"), ([], "b")):
        argv = ["track", str(frames), "-c", "truck", "--tiny", "--every", "0", "--end", "3"]
        code = main([*argv, *extra, "--out", str(tmp_path / out), "--no-video", "--no-progress"])
        assert code == 0
    assert [(p.memory_frames, p.memory_stride) for p in built] == [(2, 2), (6, 1)]
    info = [json.loads((tmp_path / o / "tracks.json").read_text())["info"] for o in "ab"]
    assert info[0]["models"]["memory_frames"] == 2
    assert info[0]["models"]["memory_stride"] == 2
    assert not {"memory_frames", "memory_stride"} & set(info[1]["models"])


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (None, ["missing.mp4", "-c", "car"], "video not found"),
        ("garbage", ["bad.mp4", "-c", "car"], "cannot read video"),
        ("empty", ["empty", "-c", "car"], "no frames"),
        ("broken", ["broken", "-c", "car", "--tiny"], "no frame could be decoded"),
        ("frames", ["frames"], "no classes given"),
        ("frames", ["frames", "-c", "car", "--start", "x"], "--start expects"),
        ("frames", ["frames", "-c", "car", "--tiny", "--sam", "sam-vit-b"], "SAM 2 video model"),
        (
            "frames",
            ["frames", "-c", "car", "--tiny", "--memory-frames", "7"],
            "memory_frames: expected at most 6",
        ),
        (
            "frames",
            ["frames", "-c", "car", "--tiny", "--preset", "sam3", "--memory-stride", "2"],
            "--memory-stride: expected SAM 2 propagation",
        ),
    ],
)
def test_errors_are_one_line(setup, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if setup == "garbage":
        (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    elif setup == "empty":
        (tmp_path / "empty").mkdir()
    elif setup == "broken":
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "0.jpg").write_bytes(b"not a jpeg")
        (tmp_path / "broken" / "1.jpg").write_bytes(b"not a jpeg either")
    elif setup == "frames":
        from PIL import Image

        (tmp_path / "frames").mkdir()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "frames" / "0.png")
    code = main(["track", *argv, "--out", "out", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    # Skipped frames are warned about as they come; the failure itself is one last line.
    errors = [line for line in err if line.startswith("textseg: error:")]
    assert len(errors) == 1 and err[-1] == errors[0] and message in errors[0], err
    assert all(line.startswith("textseg: warning: skipped") for line in err[:-1])
    assert not (tmp_path / "out" / "tracks.json").exists()
