"""textseg.io.folder: the output-folder contract (manifest, modes, lock)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from textseg.io.folder import (
    MANIFEST,
    FolderBusyError,
    OutputFolderError,
    claim_output,
    read_manifest,
)

OWNED = ("annotations.json", "counts.csv", "annotated")


def _fill(out: Path) -> None:
    (out / "annotations.json").write_text("{}")
    (out / "annotated").mkdir()
    (out / "annotated" / "a.jpg").write_bytes(b"x")


def test_a_new_folder_gets_a_manifest_before_anything_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with claim_output(out, "segment", owned=OWNED) as folder:
        assert folder.fresh
        manifest = json.loads((out / MANIFEST).read_text())
        assert manifest["command"] == "segment"
        assert manifest["owned"] == sorted(OWNED)
        assert manifest["complete"] is False
        folder.update(complete=True)
    assert read_manifest(out)["complete"] is True


def test_another_command_is_refused_in_one_line(tmp_path: Path) -> None:
    with claim_output(tmp_path, "segment", owned=OWNED):
        _fill(tmp_path)
    with pytest.raises(OutputFolderError, match=r"holds the output of `textseg segment`") as err:
        claim_output(tmp_path, "track", owned=("tracks.json", "counts.csv"), mode="overwrite")
    assert "\n" not in str(err.value)
    assert (tmp_path / "annotations.json").exists()  # nothing was deleted


def test_modes_new_overwrite_append(tmp_path: Path) -> None:
    with claim_output(tmp_path, "segment", owned=OWNED):
        _fill(tmp_path)
    with pytest.raises(OutputFolderError, match="--overwrite"):
        claim_output(tmp_path, "segment", owned=OWNED, mode="new")
    with claim_output(tmp_path, "segment", owned=OWNED, mode="append") as folder:
        assert not folder.fresh
        assert (tmp_path / "annotations.json").exists()
    (tmp_path / "mine.txt").write_text("the user's own file")
    with claim_output(tmp_path, "segment", owned=OWNED, mode="overwrite") as folder:
        assert folder.fresh
    assert not (tmp_path / "annotations.json").exists()
    assert not (tmp_path / "annotated").exists()
    assert (tmp_path / "mine.txt").read_text() == "the user's own file"


def test_what_the_manifest_owns_is_replaced_too(tmp_path: Path) -> None:
    with claim_output(tmp_path, "segment", owned=OWNED) as folder:
        folder.own(["yolo"])
        (tmp_path / "yolo").mkdir()
    with claim_output(tmp_path, "segment", owned=OWNED, mode="overwrite"):
        pass
    assert not (tmp_path / "yolo").exists()


def test_a_folder_from_before_the_manifest_is_the_commands_own(tmp_path: Path) -> None:
    _fill(tmp_path)
    with pytest.raises(OutputFolderError, match="already holds results"):
        claim_output(tmp_path, "segment", owned=OWNED)
    with claim_output(tmp_path, "segment", owned=OWNED, mode="resume") as folder:
        assert not folder.fresh


def test_a_corrupt_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("not json")
    with pytest.raises(OutputFolderError, match=r"\.textseg\.json is not a textseg manifest"):
        claim_output(tmp_path, "segment", owned=OWNED)


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    # The lock is a process-level flock: hold it from another process, deterministically.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from textseg.io.folder import claim_output
                folder = claim_output({str(tmp_path)!r}, "segment", owned=["a"], mode="append")
                print("held", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match="being written by another textseg run"):
            claim_output(tmp_path, "segment", owned=["a"], mode="append")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with claim_output(tmp_path, "segment", owned=["a"], mode="append"):
        pass  # free again once the holder has exited


def test_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode: expected one of"):
        claim_output(tmp_path, "segment", owned=OWNED, mode="replace")  # type: ignore[arg-type]
