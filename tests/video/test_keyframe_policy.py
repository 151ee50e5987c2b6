"""The keyframe policy (every N, scene cuts, re-detection when a propagated object score
falls), through the tracker with a scripted segmenter and a scripted propagator: exact
keyframe indices, ids and counts for objects that fade, leave, come back, flicker and sit
inside other objects."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv

from textseg.video import Tracker
from textseg.video.keyframes import KeyframePolicy
from textseg.video.propagator import Propagated

H, W = 40, 60
FRAMES = 20
CLASSES = ["person", "bag", "dog"]


def _box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _scores(fn) -> list[float]:
    return [float(fn(t)) for t in range(FRAMES)]


#: The script: name -> (class id, mask, SAM 2's object score per frame, frames the
#: detector sees it on). A is a person; C a bag inside A (another class, nested); B a person
#: who leaves on frame 6 and comes back on frame 14; E a dog whose score flickers from frame
#: 10 on (0.3 on even frames, 0.9 on odd ones) although the detector always sees it.
OBJECTS = {
    "A": (0, _box(2, 2, 30, 25), _scores(lambda t: 0.95), range(FRAMES)),
    "C": (1, _box(10, 8, 18, 16), _scores(lambda t: 0.95), range(FRAMES)),
    "B": (
        0,
        _box(5, 30, 25, 40),
        _scores(lambda t: 0.9 if t < 6 or t >= 14 else 0.1),
        [t for t in range(FRAMES) if t < 6 or t >= 14],
    ),
    "E": (
        2,
        _box(30, 42, 38, 58),
        _scores(lambda t: 0.95 if t < 10 else (0.3 if t % 2 == 0 else 0.9)),
        range(FRAMES),
    ),
}
ORDER = ["A", "B", "C", "E"]  # detection order on a keyframe


def _frames() -> list[np.ndarray]:
    frames = []
    for t in range(FRAMES):
        image = np.zeros((H, W, 3), np.uint8)
        image[0, 0, 0] = t  # the scripted models read the frame index here
        frames.append(image)
    return frames


class ScriptedSegmenter:
    """Finds the objects the script shows on the frame (exact masks), in ``ORDER``."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def segment(self, image: np.ndarray, classes) -> SimpleNamespace:
        t = int(image[0, 0, 0])
        self.calls.append(t)
        names = [n for n in ORDER if t in OBJECTS[n][3]]
        masks = np.stack([OBJECTS[n][1] for n in names])
        class_id = np.array([OBJECTS[n][0] for n in names], int)
        return SimpleNamespace(
            detections=sv.Detections(
                xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
                mask=masks,
                confidence=np.full(len(names), 0.8, np.float32),
                class_id=class_id,
                data={"class_name": np.array([CLASSES[c] for c in class_id], object)},
            )
        )


class ScriptedPropagator:
    """Answers each tracked object's scripted mask and score (an object that left: an empty
    mask and its low score)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.objects: dict[int, str] = {}
        self.frame = -1

    def _answer(self, ids) -> Propagated:
        names = [self.objects[int(i)] for i in ids]
        masks = (
            np.stack(
                [
                    OBJECTS[n][1] if self.frame in OBJECTS[n][3] else np.zeros((H, W), bool)
                    for n in names
                ]
            )
            if names
            else np.zeros((0, H, W), bool)
        )
        scores = np.array([OBJECTS[n][2][self.frame] for n in names], np.float32)
        return Propagated(np.asarray(ids, np.int64), masks, scores)

    def propagate(self, frame: int, image: np.ndarray, embedding=None) -> Propagated:
        self.frame = frame
        return self._answer(sorted(self.objects))

    def add(self, frame: int, ids, masks: np.ndarray) -> Propagated:
        for obj, mask in zip(ids, masks):
            self.objects[int(obj)] = next(n for n in ORDER if np.array_equal(OBJECTS[n][1], mask))
        return self._answer(list(ids))

    def remove(self, ids) -> None:
        for i in ids:
            del self.objects[int(i)]


def _run(**options):
    segmenter = ScriptedSegmenter()
    options = {"scene_cut": None, "patience": 4, **options}
    tracker = Tracker(segmenter, ScriptedPropagator(), **options)
    results = list(tracker.track(_frames(), CLASSES))
    return segmenter, results


@pytest.mark.parametrize(
    ("every", "redetect", "gap", "keyframes", "redetects"),
    [
        # No re-detection: the first frame only, or every 5 frames.
        (0, None, 3, [0], []),
        (5, None, 3, [0, 5, 10, 15], []),
        # B falls on 6 -> 7; E falls on 10 -> 11, on 12 -> 14 (gap 3 after 11), its low
        # score on keyframe 14 does not count, falls on 16 -> 17, on 18 -> (19 is too close).
        (0, 0.5, 3, [0, 7, 11, 14, 17], [7, 11, 14, 17]),
        # Gap 1: every fall is re-detected on the next frame.
        (0, 0.5, 1, [0, 7, 11, 13, 15, 17, 19], [7, 11, 13, 15, 17, 19]),
        # With keyframes every 5: B's fall on 6 waits for 8 (gap 3 after 5); the interval
        # counts from the latest keyframe, so re-detections push the next regular one.
        (5, 0.5, 3, [0, 5, 8, 11, 14, 17], [8, 11, 14, 17]),
        # A threshold no score falls below: as without re-detection.
        (0, 0.05, 1, [0], []),
    ],
)
def test_keyframes_are_exactly_the_policy(every, redetect, gap, keyframes, redetects):
    segmenter, results = _run(every=every, redetect=redetect, redetect_gap=gap)
    assert segmenter.calls == keyframes
    assert [r.index for r in results if r.keyframe] == keyframes
    assert [r.index for r in results if r.redetect] == redetects


@pytest.mark.parametrize(
    ("gap", "comeback"),
    [(3, 14), (1, 15)],
)
def test_ids_and_counts_with_redetection(gap, comeback):
    """Ids 1-4 from frame 0 in detection order (the bag inside the person is its own
    object); B leaves on 6 and its track ends after 4 unseen frames (frame 9); it comes back
    on 14 and gets id 5 on the first keyframe that sees it; the flickering dog keeps id 4 and
    is reported only on its visible frames."""
    _, results = _run(every=0, redetect=0.5, redetect_gap=gap)
    assert results[0].new_tracks == (1, 2, 3, 4)
    births = {r.index: r.new_tracks for r in results if r.new_tracks}
    assert births == {0: (1, 2, 3, 4), comeback: (5,)}
    assert {r.index: r.ended_tracks for r in results if r.ended_tracks} == {9: (2,)}
    for r in results:
        ids = r.detections.tracker_id.tolist()
        expected = [1, 3]
        if r.index < 6:
            expected.append(2)
        if r.index < 10 or r.index % 2 == 1:
            expected.append(4)
        if r.index >= comeback:
            expected.append(5)
        assert ids == sorted(expected), r.index
        names = dict(zip(ids, r.detections.data["class_name"]))
        assert names == {i: CLASSES[[0, 0, 1, 2, 0][i - 1]] for i in ids}
    names = {}
    for r in results:
        names.update(zip(r.detections.tracker_id.tolist(), r.detections.data["class_name"]))
    distinct = Counter(names.values())
    assert distinct == {"person": 3, "bag": 1, "dog": 1}


def test_object_leaving_the_view_triggers_once():
    """An object that stays away (score low on every frame) asks for one re-detection, not
    one every ``redetect_gap`` frames; it re-arms only when its score is back."""
    policy = KeyframePolicy(every=0, redetect=0.5, redetect_gap=2)
    keyframes = []
    for t in range(12):
        if policy.decide(t):
            keyframes.append(t)
        score = 0.9 if t < 3 or t >= 8 else 0.2  # away on frames 3-7, back from 8
        policy.observe({7: score, 8: 0.9}, keyframe=bool(keyframes and keyframes[-1] == t))
    assert keyframes == [0, 4]
    policy.observe({7: 0.2}, keyframe=False)  # falls again after coming back
    assert policy.decide(12) == "redetect"
    # A forgotten object (its track ended) does not trigger.
    policy.observe({8: 0.9}, keyframe=False)
    policy.observe({7: 0.1, 8: 0.9}, keyframe=False)
    assert policy.decide(20) is None


def test_policy_info_and_bad_options():
    assert KeyframePolicy(5).info() == {"every": 5}
    assert KeyframePolicy(0, 0.6, 2).info() == {"every": 0, "redetect": 0.6, "redetect_gap": 2}
    tracker = Tracker(ScriptedSegmenter(), ScriptedPropagator(), every=5, redetect=0.4)
    assert tracker.keyframe_info() == {
        "every": 5,
        "redetect": 0.4,
        "redetect_gap": 3,
        "scene_cut": 0.5,
    }
    for kwargs, error, match in (
        (dict(redetect=0), ValueError, r"redetect: expected a number in \(0, 1\]"),
        (dict(redetect=1.5), ValueError, r"redetect: expected a number in \[0, 1\]"),
        (dict(redetect="high"), TypeError, "redetect"),
        (dict(redetect=0.5, redetect_gap=0), ValueError, "redetect_gap"),
        (dict(every=-1), ValueError, "every"),
    ):
        with pytest.raises(error, match=match):
            Tracker(ScriptedSegmenter(), ScriptedPropagator(), **kwargs)


def test_cli_redetect_keyframes_and_tracks_json_info(tmp_path, monkeypatch, capsys):
    """``textseg track --redetect 0.5 --redetect-gap 3`` (scripted models behind the real
    command): the keyframes of the policy, and the policy recorded in tracks.json's info."""
    import json

    from PIL import Image

    from textseg.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for t, image in enumerate(_frames()):
        Image.fromarray(image).save(folder / f"{t:05d}.png")
    segmenter = ScriptedSegmenter()
    monkeypatch.setattr("textseg.cli.track._segmenter", lambda args: segmenter)
    monkeypatch.setattr("textseg.cli.track._propagator", lambda args, seg: ScriptedPropagator())
    out = tmp_path / "out"
    args = ["track", str(folder), "--out", str(out), "--no-video", "--no-progress"]
    args += [a for c in CLASSES for a in ("-c", c)]
    args += ["--every", "0", "--redetect", "0.5", "--redetect-gap", "3", "--patience", "4"]
    code = main(args)
    assert code == 0, capsys.readouterr().err
    assert segmenter.calls == [0, 7, 11, 14, 17]
    info = json.loads((out / "tracks.json").read_text())["info"]
    assert info["keyframes"] == {
        "every": 0,
        "redetect": 0.5,
        "redetect_gap": 3,
        "scene_cut": 0.5,
    }
    assert "distinct objects: person 3, bag 1, dog 1" in capsys.readouterr().out
