"""benchmarks/bench_serve.py runs end to end with tiny models (its --quick smoke mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_serve_quick(data_dir: Path) -> None:
    env = {**os.environ, "TEXTSEG_DATA": str(data_dir), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_serve.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| ratio |" in out and "| client round trip |" in out, out
    assert "masks kept" in out, out
