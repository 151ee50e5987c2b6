"""Track files, opened with the tools people use: pycocotools for tracks.json, csv for
counts.csv, PyAV for annotated.mp4, MOTChallenge's comma format for mot.txt."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
from pycocotools.coco import COCO

from textseg.video import FrameResult, Tracker
from textseg.video.export import TrackWriter, VideoWriter

CLASSES = ["truck", "person"]


@pytest.fixture()
def tracked(pan, oracle):
    tracker = Tracker(oracle.Segmenter(pan, CLASSES), oracle.Propagator(pan), every=5)
    results = list(tracker.track(list(pan), CLASSES, with_images=True))
    # A frame that could not be decoded, as the tracker reports it.
    results.insert(3, FrameResult(99, None, (0, 0), error="frame 99: corrupt"))
    return results


def _strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_files_written_and_readable(tracked, pan, tmp_path):
    with TrackWriter(tmp_path, CLASSES, video_name="pan", fps=10, mot=True) as writer:
        for r in tracked:
            writer.write(r, r.image)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "annotated.mp4",
        "counts.csv",
        "mot.txt",
        "tracks.json",
    ]
    good = [r for r in tracked if r.error is None]

    # tracks.json: strict JSON, COCO-readable, masks exact.
    data = _strict((tmp_path / "tracks.json").read_text())
    assert data["videos"][0]["skipped_frames"] == [
        {"frame_index": 99, "error": "frame 99: corrupt"}
    ]
    assert data["videos"][0]["length"] == len(good) and data["videos"][0]["fps"] == 10
    coco = COCO(str(tmp_path / "tracks.json"))
    assert [c["name"] for c in coco.dataset["categories"]] == CLASSES
    images = coco.dataset["images"]
    assert [im["frame_index"] for im in images] == [r.index for r in good]
    for im, r in zip(images, good):
        dets = r.detections
        anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
        assert sorted(a["track_id"] for a in anns) == sorted(dets.tracker_id.tolist())
        for a in anns:
            k = list(dets.tracker_id).index(a["track_id"])
            assert np.array_equal(coco.annToMask(a).astype(bool), dets.mask[k])
            assert a["area"] == int(dets.mask[k].sum())
            assert coco.cats[a["category_id"]]["name"] == dets.data["class_name"][k]
    tracks = {t["id"]: t for t in data["tracks"]}
    seen = Counter(i for r in good for i in r.detections.tracker_id.tolist())
    assert {i: t["frames"] for i, t in tracks.items()} == dict(seen)

    # counts.csv: distinct tracks per class first, then per-frame counts.
    rows = list(csv.DictReader((tmp_path / "counts.csv").open()))
    distinct = {r["class"]: int(r["count"]) for r in rows if r["scope"] == "distinct"}
    per_track = Counter(coco.cats[t["category_id"]]["name"] for t in data["tracks"])
    assert distinct == {c: per_track.get(c, 0) for c in CLASSES}
    frames = [r for r in rows if r["scope"] == "frame"]
    assert len(frames) == len(good) * len(CLASSES)
    for r in good:
        here = {x["class"]: int(x["count"]) for x in frames if int(x["frame"]) == r.index}
        assert here == {c: r.counts.get(c, 0) for c in CLASSES}

    # annotated.mp4: every tracked frame, at the frame size.
    import av

    with av.open(str(tmp_path / "annotated.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(good)
    assert decoded[0].shape == (*pan.size, 3)
    assert not np.array_equal(decoded[0], good[0].image)  # something was drawn

    # mot.txt: 1-based frames, one line per instance.
    lines = [line.split(",") for line in (tmp_path / "mot.txt").read_text().splitlines()]
    assert len(lines) == sum(len(r) for r in good)
    assert {int(float(x[0])) for x in lines} <= {r.index + 1 for r in good}
    assert all(len(x) == 10 and x[7:] == ["-1", "-1", "-1"] for x in lines)


def test_writer_refuses_and_cleans_up(tracked, tmp_path):
    with TrackWriter(tmp_path, CLASSES, annotated=False) as writer:
        writer.write(tracked[0])
    with pytest.raises(FileExistsError, match=r"tracks\.json exists"):
        TrackWriter(tmp_path, CLASSES)
    writer = TrackWriter(tmp_path / "b", CLASSES)
    with pytest.raises(ValueError, match="needs each frame's image"):
        writer.write(tracked[0])
    with pytest.raises(RuntimeError), TrackWriter(tmp_path / "c", CLASSES, annotated=False) as w:
        w.write(tracked[0])
        raise RuntimeError("interrupted")
    assert list((tmp_path / "c").iterdir()) == []  # nothing half-written
    empty = TrackWriter(tmp_path / "d", CLASSES, annotated=False)
    with pytest.raises(ValueError, match="no frame was tracked"):
        empty.close()


def test_video_writer_pads_odd_sizes(tmp_path):
    with VideoWriter(tmp_path / "odd.mp4", fps=5) as writer:
        for t in range(3):
            writer.write(np.full((31, 45, 3), 40 * t, np.uint8))
    import av

    with av.open(str(tmp_path / "odd.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 3 and (frames[0].height, frames[0].width) == (32, 46)
    with pytest.raises(ValueError, match="cannot write"):
        VideoWriter(tmp_path / "x.gif", fps=5)
