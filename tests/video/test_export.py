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

from .._clients import client

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


def _write(tracked, out, **options):
    with TrackWriter(out, CLASSES, video_name="pan", fps=10, annotated=False, **options) as w:
        for r in tracked:
            w.write(r, r.image)
    return [r for r in tracked if r.error is None]


def test_boxes_are_tobbox_and_mot_is_one_based(tracked, tmp_path):
    from pycocotools import mask as mask_utils

    good = _write(tracked, tmp_path, formats=("mot",))
    data = json.loads((tmp_path / "tracks.json").read_text())
    lines = [x.split(",") for x in (tmp_path / "mot.txt").read_text().splitlines()]
    assert len(lines) == len(data["annotations"])
    for ann, line in zip(data["annotations"], lines):
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        assert ann["bbox"] == pytest.approx(mask_utils.toBbox(rle).tolist())
        x, y, w, h = ann["bbox"]
        assert [float(v) for v in line[2:6]] == pytest.approx([x + 1, y + 1, w, h], abs=0.01)
    assert {int(x[0]) for x in lines} == {r.index + 1 for r in good if len(r)}


def test_tracks_json_loads_in_trackeval_tao(tracked, tmp_path):
    """tracks.json as TAO ground truth and its annotations as a TAO tracker result: TrackEval's
    TAO reader loads both as they are and scores the tracks against themselves perfectly."""
    _write(tracked, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "tracks.json").read_text())
    video = data["videos"][0]
    assert video["neg_category_ids"] == [] and video["not_exhaustive_category_ids"] == []
    assert all({"video_id", "frame_index"} <= set(im) for im in data["images"])
    assert all({"id", "category_id", "video_id"} <= set(t) for t in data["tracks"])
    assert all({"track_id", "video_id"} <= set(a) for a in data["annotations"])
    trackeval = client("trackeval")
    gt = tmp_path / "gt"
    trackers = tmp_path / "trackers" / "textseg" / "data"
    gt.mkdir()
    trackers.mkdir(parents=True)
    (gt / "gt.json").write_text(json.dumps(data))
    (trackers / "results.json").write_text(json.dumps(data["annotations"]))
    dataset = trackeval.datasets.TAO(
        {"GT_FOLDER": str(gt), "TRACKERS_FOLDER": str(tmp_path / "trackers"), "PRINT_CONFIG": False}
    )
    raw = dataset.get_raw_seq_data("textseg", "pan")
    assert sum(len(ids) for ids in raw["gt_ids"]) == len(data["annotations"])
    assert sum(len(ids) for ids in raw["tracker_ids"]) == len(data["annotations"])
    cls = dataset.class_list[0]
    seq = dataset.get_preprocessed_seq_data(raw, cls)
    hota = trackeval.metrics.HOTA().eval_sequence(seq)
    assert hota["HOTA"].mean() == pytest.approx(1.0)


def test_mots_lines_decode_to_the_masks(tracked, tmp_path):
    from pycocotools import mask as mask_utils

    good = _write(tracked, tmp_path, formats=("mots",))
    data = json.loads((tmp_path / "tracks.json").read_text())
    cats = {c["name"]: c["id"] for c in data["categories"]}
    lines = (tmp_path / "mots.txt").read_text().splitlines()
    expected = [
        (r.index + 1, int(i), cats[n], m)
        for r in good
        for i, n, m in zip(
            r.detections.tracker_id, r.detections.data["class_name"], r.detections.mask
        )
    ]
    assert len(lines) == len(expected)
    for line, (frame, tid, cat, mask) in zip(lines, expected):
        f, i, c, h, w, rle = line.split(" ")
        assert (int(f), int(i), int(c), int(h), int(w)) == (frame, tid, cat, *mask.shape)
        decoded = mask_utils.decode({"size": [int(h), int(w)], "counts": rle.encode()})
        assert np.array_equal(decoded.astype(bool), mask)


def test_ytvis_loads_and_masks_decode(tracked, tmp_path):
    from pycocotools import mask as mask_utils

    good = _write(tracked, tmp_path, formats=("ytvis",))
    data = _strict((tmp_path / "ytvis.json").read_text())
    (video,) = data["videos"]
    assert video["length"] == len(good) == len(video["file_names"])
    assert (video["height"], video["width"]) == good[0].image_size
    names = {c["id"]: c["name"] for c in data["categories"]}
    for ann in data["annotations"]:
        assert len(ann["segmentations"]) == len(ann["areas"]) == len(ann["bboxes"]) == len(good)
        for k, (seg, r) in enumerate(zip(ann["segmentations"], good)):
            dets = r.detections
            ids = list(dets.tracker_id)
            if seg is None:
                assert ann["id"] not in ids and ann["areas"][k] is None
                continue
            mask = mask_utils.decode(dict(seg, counts=seg["counts"].encode())).astype(bool)
            j = ids.index(ann["id"])
            assert np.array_equal(mask, dets.mask[j]) and ann["areas"][k] == mask.sum()
            assert names[ann["category_id"]] == dets.data["class_name"][j]


def test_user_category_ids_and_info(tracked, tmp_path):
    _write(tracked, tmp_path, category_ids=[8, 1], info={"models": {"sam": "x"}})
    coco = COCO(str(tmp_path / "tracks.json"))
    assert {c["name"]: c["id"] for c in coco.dataset["categories"]} == {"truck": 8, "person": 1}
    assert coco.dataset["info"]["models"] == {"sam": "x"}
    assert coco.dataset["info"]["complete"] is True
    assert {a["category_id"] for a in coco.dataset["annotations"]} <= {8, 1}
    with pytest.raises(ValueError, match="category_ids"):
        TrackWriter(tmp_path / "b", CLASSES, category_ids=[1])
