"""How many threads the command's math libraries start, decided before torch loads.

OpenMP (torch, MKL, oneDNN) and OpenBLAS size their thread pools from the CPUs the process may
run on (its affinity mask), which is right on a bare machine or under ``taskset``. In a
container with a CPU *quota* (``docker run --cpus 2``, a Kubernetes CPU limit, many CI
runners) every CPU of the host is in the mask, so a 64-core host gives a 2-CPU job 64 threads
that the quota then throttles: each parallel region waits for threads the scheduler has
stopped, and the cost of the same command depends on what else runs on the host. The command
therefore caps the pools at the quota (rounded up), the way a bare machine of that size would
size them. A user's own ``OMP_NUM_THREADS`` wins; the library (``import textseg``) changes
nothing.

The thread count is not taken from the load average: the number of threads changes the order
of floating-point sums, and a run's results must not depend on its neighbours.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["cpu_quota", "thread_limits"]

#: Where the cgroup file system is mounted (v2 unified, or v1's ``cpu`` controller below it).
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(root: Path | None = None) -> float | None:
    """The CPUs this process's cgroup may use per second (e.g. 2.0, 0.5), or None without a
    quota (or where cgroups cannot be read); ``root`` is the cgroup mount (default
    :data:`CGROUP_ROOT`)."""
    root = CGROUP_ROOT if root is None else root
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" if (root / "cpu").is_dir() else root
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        period = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def thread_limits(
    environ: Mapping[str, str],
    *,
    cpus: int | None = None,
    quota: float | None = None,
    root: Path | None = None,
) -> dict[str, str]:
    """The environment variables that cap the thread pools at the cgroup CPU quota when it is
    below the CPUs of the affinity mask (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``);
    empty when there is nothing to cap or ``environ`` sets ``OMP_NUM_THREADS`` itself.

    Args:
        environ: The environment as it is.
        cpus: CPUs in the affinity mask (default: read).
        quota: The CPU quota (default: read from ``root``).
        root: The cgroup mount (default :data:`CGROUP_ROOT`).
    """
    if "OMP_NUM_THREADS" in environ:
        return {}
    cpus = _usable_cpus() if cpus is None else cpus
    quota = cpu_quota(root) if quota is None else quota
    if quota is None or math.ceil(quota) >= cpus:
        return {}
    threads = str(max(1, math.ceil(quota)))
    out = {"OMP_NUM_THREADS": threads}
    if "OPENBLAS_NUM_THREADS" not in environ:
        out["OPENBLAS_NUM_THREADS"] = threads
    return out
