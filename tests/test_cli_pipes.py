"""The CLI under a shell: ``python -m textseg`` is the command, and output piped into a reader
that stops early (``| head``) ends quietly with exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._limits import HANG_S

REPO = Path(__file__).resolve().parents[1]


def _run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m textseg ARGS`` with stdout a pipe whose reader is already gone (what
    ``head`` leaves after its last line): every write to stdout fails with EPIPE, from the
    first byte on, whatever the machine's speed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "textseg", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=HANG_S,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["models"],
        ["models", "--json"],
        ["--help"],
        ["count", "{img}", "-c", "dog", "--preset", "tiny-test"],
    ],
    ids=["models", "models-json", "help", "count"],
)
def test_output_into_a_closed_pipe_ends_quietly(args, data_dir):
    img = str(data_dir / "demo" / "dog.jpg")
    proc = _run_into_closed_pipe(*(a.replace("{img}", img) for a in args))
    assert proc.returncode == 0, proc.stderr
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_python_m_textseg_is_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "textseg", "models", "--task", "sam"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["name", "task"]
    assert "sam-vit-b" in proc.stdout
