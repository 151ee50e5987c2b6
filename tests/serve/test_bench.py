"""benchmarks/bench_serve.py runs end to end with tiny models (its --quick smoke mode), in this
process (the imports and the tiny models are already paid for)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_serve_quick(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TEXTSEG_DATA", str(data_dir))
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its _common module
    spec = importlib.util.spec_from_file_location("bench_serve", BENCHMARKS / "bench_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| ratio server / loop |" in out and "| client round trip |" in out, out
    assert "detector keeps its 10 best boxes (both sides)" in out, out
    assert "masks kept 6" in out, out  # the first click and five more, all kept (bounded store)
    assert "memory over 20 /segment requests" in out and "| 20 |" in out, out
