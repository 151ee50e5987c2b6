"""benchmarks/gpu.sh runs end to end on the CPU with tiny models (its smoke mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_sh_smoke_on_cpu(data_dir: Path) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "TEXTSEG_DATA": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "TEXTSEG_OFFLINE": "1",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    cases = [line.split("|")[1].strip() for line in lines[1:]]
    assert len(cases) == 4, proc.stdout
    for prefix in ("encoder, images/s", "4 boxes on one embedding", "automatic 2x2", "grounded"):
        assert any(case.startswith(prefix) for case in cases), (prefix, cases)
    for line in lines[1:]:
        speed_up = line.split("|")[4].strip()
        assert speed_up.endswith("x") and float(speed_up[:-1]) > 0, line
