"""A killed app loses nothing it saved: a kill right after each of its writes (the manifest,
every save of the store, each step of an export) leaves an output folder the next session
opens with every annotation accepted up to the last completed save.

The writes run in a child process (``app_writes.py``), forked from a server that has imported
textseg once; ``TEXTSEG_TEST_KILL_AFTER`` ends it with ``os._exit`` right after the named write
(:func:`textseg.app.store.written`): no ``finally``, no flush, as SIGKILL. Deterministic: no
timing, the kill point is a name.
"""

from __future__ import annotations

import json
import multiprocessing
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

from textseg.app import EXPORT_DIR, AnnotationSession
from textseg.io.coco import load_coco
from textseg.io.folder import read_manifest

from .._limits import HANG_S
from .app_writes import BOXES, Squares, square_masks
from .conftest import IMAGES

CHILD = Path(__file__).with_name("app_writes.py")

#: Kill point -> annotations saved by then (the child accepts 3 squares on the first image,
#: exports, then accepts 1 on the second); None: the child runs to its end.
CASES = {
    "manifest": 0,
    "store": 1,
    "store:2": 2,
    "store:3": 3,
    "export-coco": 3,
    "export-files": 3,
    "export": 3,
    "export-manifest": 3,
    "store:4": 4,
    None: 4,
}


@pytest.fixture(scope="module")
def forkserver():
    """A multiprocessing context whose children fork from one process that imported textseg
    (one import for every case, and no thread of this process is copied)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["textseg.app", "textseg.sam"])
    return ctx


def _run_child(ctx, folder: Path, out: Path, kill: str | None) -> int:
    child = ctx.Process(
        target=runpy.run_path,
        args=(str(CHILD),),
        kwargs={
            "init_globals": {"folder": str(folder), "out": str(out), "kill": kill},
            "run_name": "__main__",
        },
    )
    child.start()
    child.join(timeout=HANG_S)
    return child.exitcode


@pytest.mark.parametrize("kill", list(CASES), ids=[str(k) for k in CASES])
def test_a_kill_after_any_write_keeps_every_saved_annotation(
    kill, forkserver, tmp_path: Path, data_dir: Path, core
):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in IMAGES[:2]:
        shutil.copy(data_dir / "coco-dev" / "images" / name, folder / name)
    out = tmp_path / "out"
    code = _run_child(forkserver, folder, out, kill)
    assert code == (0 if kill is None else 137), f"the child ended with {code}"

    # The folder is the app's, and opens again (its lock died with the process).
    assert read_manifest(out)["command"] == "app"
    with AnnotationSession(
        folder, out=out, claim=True, segmenter=core, proposer=Squares()
    ) as again:
        saved = CASES[kill]
        anns = [a for name in IMAGES[:2] for a in again.annotations(name)]
        assert [a["id"] for a in anns] == list(range(1, saved + 1))
        on_first = min(saved, len(BOXES))
        np.testing.assert_array_equal(
            again.detections(IMAGES[0]).mask, square_masks(480, 640)[:on_first]
        )
        classes = [again.class_of(a) for a in anns]
        assert classes == ["dog"] * on_first + ["cat"] * (saved - on_first)
        # An export is either absent (killed before it landed) or whole.
        export = out / EXPORT_DIR
        landed = kill in ("export", "export-manifest", "store:4", None)
        assert export.is_dir() == landed
        if landed:
            coco = load_coco(export / "annotations.json")
            assert sum(len(coco.detections[int(im["id"])]) for im in coco.images) == len(BOXES)
            assert (export / "yolo" / "data.yaml").is_file()
            assert json.loads((export / "results.json").read_text())
        # Work goes on: the next accept gets the next id, and an export lands.
        if on_first < len(BOXES):
            assert again.find_all("dog") == len(BOXES) - on_first
            assert again.accept()["id"] == saved + 1
        assert again.export("coco").is_dir()
    assert read_manifest(out)["exported"] == ["coco"]
