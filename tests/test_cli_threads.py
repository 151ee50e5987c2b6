"""The command caps its thread pools at a cgroup CPU quota below the CPUs it may run on, so a
container given 2 CPUs of a large host does not start a thread per host CPU."""

from __future__ import annotations

import pytest

from textseg.cli._threads import cpu_quota, thread_limits


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.cfs_quota_us": "300000\n", "cpu.cfs_period_us": "100000\n"}, 3.0),
        ({}, None),
        ({"cpu.max": "garbage\n"}, None),
    ],
)
def test_cpu_quota_from_cgroup_v1_and_v2(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == expected


@pytest.mark.parametrize(
    ("environ", "cpus", "quota", "expected"),
    [
        # 2 CPUs of a 64-CPU host: two threads, not 64.
        ({}, 64, 2.0, {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}),
        # Half a CPU: one thread.
        ({}, 64, 0.5, {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}),
        # 1.5 CPUs: rounded up.
        ({}, 8, 1.5, {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}),
        # No quota, or a quota of at least the CPUs: the libraries' own sizing.
        ({}, 8, None, {}),
        ({}, 2, 4.0, {}),
        ({}, 2, 2.0, {}),
        # The user's settings win.
        ({"OMP_NUM_THREADS": "8"}, 64, 2.0, {}),
        ({"OPENBLAS_NUM_THREADS": "4"}, 64, 2.0, {"OMP_NUM_THREADS": "2"}),
    ],
)
def test_thread_limits(environ, cpus, quota, expected):
    assert thread_limits(environ, cpus=cpus, quota=quota) == expected


def test_the_command_applies_the_cap(tmp_path):
    """``import textseg.cli`` (what the ``textseg`` command runs first) under a cgroup quota of
    one CPU: torch starts one intra-op thread, the command having capped the pools before
    torch loaded."""
    import os
    import subprocess
    import sys

    (tmp_path / "cpu.max").write_text("100000 100000\n")
    import textseg.cli._threads as threads_module

    # The module loaded on its own (importing it by name would run textseg.cli first), its
    # cgroup mount pointed at the fake one, then the command's package.
    code = (
        "import importlib.util, sys; from pathlib import Path; "
        "spec = importlib.util.spec_from_file_location('textseg.cli._threads', "
        f"{threads_module.__file__!r}); t = importlib.util.module_from_spec(spec); "
        "sys.modules[spec.name] = t; spec.loader.exec_module(t); "
        f"t.CGROUP_ROOT = Path({str(tmp_path)!r}); "
        "import textseg.cli, torch, os; "
        "print(torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS'), os.cpu_count())"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    threads, omp, cpus = out.stdout.split()
    assert threads == "1"
    assert omp == ("1" if len(os.sched_getaffinity(0)) > 1 else "None"), cpus
