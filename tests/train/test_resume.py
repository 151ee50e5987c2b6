"""A run killed after any one of its writes resumes to the state of a run never interrupted.

The kill is deterministic: the test hook ``TEXTSEG_TEST_KILL_AFTER=NAME[#N]``
(:func:`textseg.train.output.written`) ends a forked training process with ``os._exit(137)``
right after that write, as a SIGKILL landing there would.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from textseg._registry import _REGISTERING_MODULES
from textseg.cli import main
from textseg.train import train_specialist
from textseg.train.output import KILL_ENV

from .test_specialist import subset

#: Every write of a two-epoch run without validation, in order.
KILL_POINTS = [
    "manifest",
    "settings",
    "weights",
    "checkpoint",
    "config",
    "weights#2",
    "checkpoint#2",
    "config#2",
    "final",
    "complete",
]
#: The states `make test` covers; the others run with the slow tests (`make test-all`).
FAST = {"settings", "checkpoint", "weights#2", "final"}


# Kills run in processes forked from a fork server, which imported torch but ran nothing: a
# fork of the test process itself can hang once a thread pool ran in it (ultralytics, OpenMP).
_PROCESSES = multiprocessing.get_context("forkserver")
_PROCESSES.set_forkserver_preload(
    ["torch", "transformers", __name__, *_REGISTERING_MODULES, "textseg.specialists.nets"]
)


_REPO = str(Path(__file__).resolve().parents[2])


def _killed_child(point: str, train, args: tuple, kwargs: dict) -> None:
    os.environ[KILL_ENV] = point
    torch.set_num_threads(1)
    torch.manual_seed(0)  # random-init tiny models built outside the trainer's own seeding
    train(*args, **kwargs)


def killed_at(point: str, train, *args, **kwargs) -> int:
    """Run ``train(*args, **kwargs)`` in a child process killed right after the write
    ``point``; returns its exit code (137: killed there; 0: it never made that write)."""
    # The child unpickles ``_killed_child`` by its module name (``tests.train.test_resume``):
    # the repository root must be on the sys.path the child is prepared with, whatever the
    # working directory is when the fork server starts (a relative '' entry is not enough).
    if _REPO not in sys.path:
        sys.path.append(_REPO)
    child = _PROCESSES.Process(target=_killed_child, args=(point, train, args, kwargs))
    child.start()
    child.join()
    return child.exitcode


@pytest.fixture(scope="module")
def run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("resume")
    ann = subset(data_dir, root / "data", 4)
    options = dict(
        tiny=True, epochs=2, images=data_dir / "coco-dev" / "images", val_fraction=0.0,
        progress=False,
    )  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = train_specialist(ann, root / "whole", **options)
    finally:
        torch.set_num_threads(before)
    return ann, options, whole, root


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    assert ca["history"] == cb["history"] and ca["settings"] == cb["settings"]
    assert cb["status"] == "done" and cb["best_epoch"] == ca["best_epoch"]
    assert json.loads((b / ".textseg.json").read_text())["complete"] is True


@pytest.mark.parametrize(
    "point", [p if p in FAST else pytest.param(p, marks=pytest.mark.slow) for p in KILL_POINTS]
)
def test_killed_after_each_write_resumes_to_the_same_state(point, run, tmp_path):
    ann, options, whole, root = run
    out = tmp_path / "killed"
    assert killed_at(point, train_specialist, ann, out, **options) == 137
    resumed = train_specialist(ann, out, **options, resume=True)
    assert resumed.epochs == whole.epochs == 2
    assert_same_run(root / "whole", out)


def test_a_run_is_not_overwritten_without_resume(run, tmp_path, capsys):
    ann, options, _, _ = run
    out = tmp_path / "killed"
    assert killed_at("checkpoint", train_specialist, ann, out, **options) == 137
    code = main(["train", str(ann), "--images", str(options["images"]), "--out", str(out),
                 "--tiny", "--epochs", "2", "--val-fraction", "0", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err and "--resume" in err, err
    with pytest.raises(ValueError, match="settings differ"):
        train_specialist(ann, out, **{**options, "epochs": 3}, resume=True)


def test_resume_without_a_run_is_an_error(run, tmp_path):
    ann, options, _, _ = run
    with pytest.raises(ValueError, match="no training run to resume"):
        train_specialist(ann, tmp_path / "none", **options, resume=True)


def test_another_commands_folder_is_refused(run, tmp_path):
    ann, options, _, _ = run
    out = tmp_path / "seg"
    out.mkdir()
    (out / ".textseg.json").write_text(json.dumps({"command": "segment", "owned": []}))
    with pytest.raises(ValueError, match="textseg segment"):
        train_specialist(ann, out, **options)
