"""``textseg track`` and its output folder: the folder contract (another command's folder is
refused, --overwrite replaces only track's files), what is written when the source fails or
the user presses Ctrl-C, the ground truth's category ids, the models recorded, --seed, and
bad --start values. The pipeline and propagation are oracles unless models are the point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from textseg.cli import main
from textseg.video import Tracker

CLASSES = ["truck", "person"]


@pytest.fixture()
def small(oracle, data_dir):
    """6 frames of trucks and people, written as PNG frames."""
    return oracle.clip(data_dir, num_frames=6, size=(160, 200))


@pytest.fixture()
def oracle_track(small, oracle, monkeypatch):
    """Run ``textseg track`` with oracle components; returns (code, stderr lines)."""

    def run(argv: list[str], capsys, segmenter=None):
        seg = segmenter or oracle.Segmenter(small, CLASSES)
        monkeypatch.setattr(
            "textseg.cli.track._tracker",
            lambda args: Tracker(seg, oracle.Propagator(small), every=2, scene_cut=None),
        )
        code = main(["track", *argv, "--no-progress"])
        captured = capsys.readouterr()
        return code, captured.err.strip().splitlines()

    return run


def _frames(small, tmp_path: Path) -> str:
    return str(small.write_frames(tmp_path / "frames"))


def test_track_refuses_a_segment_folder(small, oracle_track, tmp_path, capsys, data_dir):
    """`textseg track --out out/` after `textseg segment --out out/`: one line, segment's
    counts.csv untouched, with or without --overwrite."""
    photo = data_dir / "demo" / sorted(p.name for p in (data_dir / "demo").iterdir())[0]
    out = tmp_path / "out"
    assert main(["segment", str(photo), "-c", "cat", "--tiny", "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "counts.csv").read_bytes()
    frames = _frames(small, tmp_path)
    for extra in ([], ["--overwrite"]):
        code, err = oracle_track([frames, *CLASSES_ARGS, "--out", str(out), *extra], capsys)
        assert code == 1 and len(err) == 1, err
        assert err[0].startswith("textseg: error:") and "choose another --out" in err[0]
        assert (out / "counts.csv").read_bytes() == before
        assert not (out / "tracks.json").exists()


CLASSES_ARGS = ["-c", "truck", "-c", "person"]


def test_overwrite_replaces_every_file_of_the_previous_run(small, oracle_track, tmp_path, capsys):
    frames = _frames(small, tmp_path)
    out = tmp_path / "out"
    code, _ = oracle_track([frames, *CLASSES_ARGS, "--out", str(out), "--format", "mot"], capsys)
    assert code == 0 and (out / "annotated.mp4").exists() and (out / "mot.txt").exists()
    code, err = oracle_track([frames, *CLASSES_ARGS, "--out", str(out)], capsys)
    assert code == 1 and "--overwrite" in err[-1]
    args = [frames, *CLASSES_ARGS, "--out", str(out), "--overwrite", "--no-video"]
    code, _ = oracle_track(args, capsys)
    assert code == 0
    assert not (out / "annotated.mp4").exists() and not (out / "mot.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        ".textseg.json",
        ".textseg.lock",
        "counts.csv",
        "tracks.json",
    ]


def test_source_failure_mid_video_writes_the_frames_so_far(
    small, oracle_track, tmp_path, capsys, monkeypatch
):
    """The demuxer fails after 3 frames (PyAV's false "[Errno 12] Cannot allocate memory"):
    the 3 frames are written, marked incomplete, the failure listed, one warning line."""
    import textseg.video.sources as sources
    from textseg.video.sources import Frame

    video = small.write_video(tmp_path / "clip.avi")

    def failing(av, path, start, end):
        for t in range(3):
            yield Frame(t, small.frame(t), t / 10)
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(sources, "_decode", failing)
    out = tmp_path / "out"
    code, err = oracle_track([str(video), *CLASSES_ARGS, "--out", str(out)], capsys)
    assert code == 0
    assert len(err) == 1 and err[0].startswith("textseg: warning:") and "frame 3" in err[0]
    data = json.loads((out / "tracks.json").read_text())
    assert [im["frame_index"] for im in data["images"]] == [0, 1, 2]
    assert data["info"]["complete"] is False
    (skipped,) = data["videos"][0]["skipped_frames"]
    assert skipped["frame_index"] == 3 and "Cannot allocate memory" in skipped["error"]
    assert json.loads((out / ".textseg.json").read_text())["complete"] is False
    assert not list(out.glob(".textseg-tracks-*"))


def test_ctrl_c_writes_what_was_tracked_and_exits_130(
    small, oracle, oracle_track, tmp_path, capsys
):
    segmenter = oracle.Segmenter(small, CLASSES)
    segment = segmenter.segment

    def interrupted(image, classes):
        if len(segmenter.calls) == 2:  # the third keyframe (frame 4)
            raise KeyboardInterrupt
        return segment(image, classes)

    segmenter.segment = interrupted
    out = tmp_path / "out"
    code, err = oracle_track(
        [_frames(small, tmp_path), *CLASSES_ARGS, "--out", str(out)], capsys, segmenter
    )
    assert code == 130 and "interrupted" in err[-1]
    data = json.loads((out / "tracks.json").read_text())
    assert [im["frame_index"] for im in data["images"]] == [0, 1, 2, 3]
    assert data["info"]["complete"] is False and data["annotations"]
    assert not list(out.glob(".textseg-tracks-*"))


def test_ground_truth_category_ids_and_models_recorded(
    small, oracle_track, tmp_path, capsys, data_dir
):
    gt = data_dir / "coco-dev" / "annotations.json"
    cats = {c["name"]: c["id"] for c in json.loads(gt.read_text())["categories"]}
    out = tmp_path / "out"
    argv = [_frames(small, tmp_path), *CLASSES_ARGS, "--coco", str(gt), "--out", str(out)]
    code, _ = oracle_track([*argv, "--tiny"], capsys)
    assert code == 0
    data = json.loads((out / "tracks.json").read_text())
    assert {c["name"]: c["id"] for c in data["categories"]} == {c: cats[c] for c in CLASSES}
    assert {a["category_id"] for a in data["annotations"]} <= {cats[c] for c in CLASSES}
    assert data["info"]["models"] == {
        "preset": "grounded-sam",
        "tiny": True,
        "detector": "grounding-dino-tiny-test",
        "sam": "sam2.1-tiny-test",
        "propagator": "sam2:sam2.1-tiny-test",
    }
    assert data["info"]["complete"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "10"], "--start 10: past the end of the video (6 frames"),
        (["--start", "infs"], "--start expects"),
        (["--start", "nans"], "--start expects"),
        (["--specialist", "nowhere"], "nowhere"),
    ],
)
def test_bad_start_and_specialist_errors(small, argv, message, tmp_path, capsys):
    video = small.write_video(tmp_path / "clip.avi")
    code = main(["track", str(video), "-c", "car", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message in err[0], err
    assert "drop sam" not in err[0] and "unreadable" not in err[0]


def test_seed_makes_tiny_runs_identical(tmp_path, capsys):
    """Two runs with the same --seed (tiny random models) write the same tracks."""
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for t in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(frames / f"{t}.png")
    runs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        argv = ["track", str(frames), "-c", "car", "--tiny", "--out", str(out), "--no-video"]
        assert main([*argv, "--every", "0", "--seed", "3", "--no-progress"]) == 0
        runs.append(json.loads((out / "tracks.json").read_text())["annotations"])
    assert runs[0] == runs[1] and runs[0]
