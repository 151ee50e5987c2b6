"""``textseg track`` killed after each of its writes (TEXTSEG_TEST_KILL_AFTER makes the process
end right there, as SIGKILL would: no cleanup runs): every file left in the folder is whole
(the same bytes a full run writes), and the folder is either refused with a one-line message
naming --overwrite or rerunnable, and --overwrite then gives the same files as a clean run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textseg.cli import main

from .._limits import HANG_S

#: A keyframe segmenter and a propagator without models (two fixed objects), defined once
#: and run both in this process and in the killed one.
FAKE = """
from types import SimpleNamespace

import numpy as np
import supervision as sv

from textseg.video import Tracker
from textseg.video.propagator import Propagated


class Segmenter:
    def segment(self, image, classes):
        h, w = image.shape[:2]
        m = np.zeros((2, h, w), bool)
        m[0, 2:10, 3:12] = True
        m[1, 12:20, 20:30] = True
        return SimpleNamespace(
            detections=sv.Detections(
                xyxy=np.zeros((2, 4), np.float32),
                mask=m,
                class_id=np.array([0, 1]),
                confidence=np.array([0.9, 0.8], np.float32),
            )
        )


class Propagator:
    def reset(self):
        self.masks = {}

    def propagate(self, frame, image, embedding=None):
        ids = sorted(self.masks)
        h, w = image.shape[:2]
        masks = np.stack([self.masks[i] for i in ids]) if ids else np.zeros((0, h, w), bool)
        return Propagated(np.array(ids, np.int64), masks, np.ones(len(ids), np.float32))

    def add(self, frame, ids, masks):
        for i, m in zip(ids, masks):
            self.masks[int(i)] = m
        return Propagated(np.array(ids, np.int64), masks, np.ones(len(ids), np.float32))

    def remove(self, ids):
        for i in ids:
            self.masks.pop(int(i))


def fake_tracker(args):
    return Tracker(Segmenter(), Propagator(), every=2, scene_cut=None)
"""

SCRIPT = (
    FAKE
    + """
import sys

import textseg.cli.track

textseg.cli.track._tracker = fake_tracker
from textseg.cli import main

sys.exit(main(sys.argv[1:]))
"""
)

#: track's writes, in order: the manifest (claim), the temporary files (after the first
#: frame), each result file moved into place, the manifest marked complete.
WRITES = [
    "manifest",
    "first-frame",
    "tracks.json",
    "counts.csv",
    "mot.txt",
    "mots.txt",
    "ytvis.json",
    "annotated.mp4",
    "complete",
]
RESULTS = ["tracks.json", "counts.csv", "mot.txt", "mots.txt", "ytvis.json", "annotated.mp4"]
FORMATS = ["--format", "mot", "--format", "mots", "--format", "ytvis"]


def _argv(frames: Path, out: Path, *extra: str) -> list[str]:
    return ["track", str(frames), "-c", "cup", "-c", "bowl", "--out", str(out), *FORMATS,
            "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The frames, and the folder a run that is not killed writes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("kill")
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for t in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(frames / f"{t}.png")
    out = root / "reference"
    assert _run_here(_argv(frames, out)) == 0
    return frames, out


def _run_here(argv: list[str]) -> int:
    import textseg.cli.track as track

    namespace: dict = {}
    exec(FAKE, namespace)
    saved = track._tracker
    track._tracker = namespace["fake_tracker"]
    try:
        return main(argv)
    finally:
        track._tracker = saved


def _same_results(out: Path, reference: Path, names: list[str]) -> None:
    for name in names:
        if name == "annotated.mp4":
            import av

            with av.open(str(out / name)) as a, av.open(str(reference / name)) as b:
                assert len(list(a.decode(video=0))) == len(list(b.decode(video=0)))
        else:
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name


#: Killed runs start a fresh interpreter (seconds each): two representative writes run by
#: default (temporary files only; some results moved into place, others not), all with -m slow.
FAST = ("first-frame", "counts.csv")


@pytest.mark.parametrize(
    "write", [w if w in FAST else pytest.param(w, marks=pytest.mark.slow) for w in WRITES]
)
def test_killed_after_each_write(write, reference, tmp_path, capsys):
    frames, ref = reference
    out = tmp_path / "out"
    env = {**os.environ, "TEXTSEG_TEST_KILL_AFTER": write, "PYTHONPATH": os.getcwd()}
    killed = subprocess.run(
        [sys.executable, "-c", SCRIPT, *_argv(frames, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert killed.returncode == 137, killed.stderr
    present = [n for n in RESULTS if (out / n).exists()]
    _same_results(out, ref, present)  # nothing half-written is readable
    code = _run_here(_argv(frames, out))
    err = capsys.readouterr().err.strip().splitlines()
    if present:
        assert code == 1 and len(err) == 1 and "--overwrite" in err[0], err
    else:
        assert code == 0, err  # nothing was written: the folder is simply reused
    assert _run_here(_argv(frames, out, "--overwrite")) == 0
    _same_results(out, ref, RESULTS)
    assert not list(out.glob(".textseg-tracks-*"))
