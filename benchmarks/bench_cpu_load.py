"""A predictable cost: CPU-seconds of the same command quiet and beside two busy processes.

    python benchmarks/bench_cpu_load.py [--frames 48] [--images 10] [--modes default,active,one]
        [--commands track,segment] [--timeout 900]

Each run is ``python -m textseg.cli ...`` in a fresh process; its CPU-seconds are the child's
own user + system time (``os.wait4``'s rusage), its wall time the clock around it:

- ``track``: ``textseg track`` of a ``--frames``-frame clip (a camera panning over a coco-dev
  photo, 320x360 PNG frames) with ``--preset tiny-test``, ``--no-video``;
- ``segment``: ``textseg segment --preset tiny-test`` on the first ``--images`` coco-dev images.

Each command runs *quiet* and *busy* (beside two ``python -c "while True: pass"`` processes
started just before it and killed after it), in three settings:

- ``default``: the CLI's defaults (it sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads, and
  sizes torch's thread pool to the cores it may use);
- ``active``: ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP threads spin while they wait);
- ``one``: ``OMP_NUM_THREADS=1``.

The ratio busy / quiet of CPU-seconds is what should stay near 1 (target <= 1.5x): the work
is the same, only the neighbours differ. The work is checked to be the same: the number of
tracks (``track``) or instances (``segment``) is printed beside each run. Other sessions may
load the machine, so the 1-minute load average at the start of each run is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, machine, table

ROOT = Path(__file__).resolve().parents[1]
PHOTO = "000000000257.jpg"
CLASSES = ["truck", "person", "car"]
MODES = {
    "default": {},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "one": {"OMP_NUM_THREADS": "1"},
}
MODE_LABEL = {
    "default": "CLI defaults",
    "active": "OMP_WAIT_POLICY=ACTIVE",
    "one": "OMP_NUM_THREADS=1",
}


def _inputs(folder: Path, frames: int, images: int) -> dict[str, list[str]]:
    """The arguments of each command (inputs written under ``folder``)."""
    from textseg.video.synthetic import from_coco

    clip = from_coco(
        DATA / "coco-dev" / "annotations.json", PHOTO, num_frames=frames, size=(360, 320)
    )
    video = clip.write_frames(folder / "frames")
    paths = sorted((DATA / "coco-dev" / "images").glob("*.jpg"))[:images]
    classes = [a for c in CLASSES for a in ("-c", c)]
    return {
        "track": ["track", str(video), *classes, "--preset", "tiny-test", "--no-video"],
        "segment": ["segment", *map(str, paths), *classes, "--preset", "tiny-test"],
    }


class Busy:
    """``n`` processes spinning in a Python loop, for the duration of a ``with`` block."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Busy:
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(1.0)  # let them take the cores
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def _work(command: str, out: Path, stdout: str) -> str:
    """What the run produced: tracks per class (track) or instances (segment)."""
    if command == "track":
        line = next((s for s in stdout.splitlines() if "distinct objects" in s), "")
        return line.split("distinct objects:", 1)[-1].strip() or "?"
    coco = out / "annotations.json"
    if not coco.exists():
        return "?"
    return f"{len(json.loads(coco.read_text())['annotations'])} instances"


def run_once(args: list[str], env_extra: dict[str, str], out: Path, timeout: float) -> dict:
    """One command in a fresh process; its own CPU-seconds (user + sys) and wall seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(env_extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "textseg.cli", *args, "--out", str(out), "--overwrite"]
    if args[0] == "track":
        cmd.append("--no-progress")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, env=env, stdout=so, stderr=se, text=True)
        deadline = start + timeout
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    timed_out = wall > timeout
    if proc.returncode != 0 and not timed_out:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}): {stderr[-800:]}")
    return {
        "cpu": usage.ru_utime + usage.ru_stime,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "wall": wall,
        "load": load,
        "work": "timed out" if timed_out else _work(args[0], out, stdout),
        "timed_out": timed_out,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--modes", default="default,active,one")
    p.add_argument("--commands", default="track,segment")
    p.add_argument("--busy", type=int, default=2, help="busy processes beside the busy runs")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run at most")
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    commands = [c for c in args.commands.split(",") if c]
    for m in modes:
        if m not in MODES:
            p.error(f"--modes: unknown mode {m!r}; choose from {', '.join(MODES)}")
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = _inputs(folder, args.frames, args.images)
        for command in commands:
            for mode in modes:
                got = {}
                for condition in ("quiet", "busy"):
                    out = folder / f"out-{command}-{mode}-{condition}"
                    if condition == "busy":
                        with Busy(args.busy):
                            got[condition] = run_once(
                                inputs[command], MODES[mode], out, args.timeout
                            )
                    else:
                        got[condition] = run_once(inputs[command], MODES[mode], out, args.timeout)
                    r = got[condition]
                    print(
                        f"  {command} {mode} {condition}: {r['cpu']:.1f} CPU-s "
                        f"(user {r['user']:.1f}, sys {r['sys']:.1f}), {r['wall']:.1f} s wall, "
                        f"load {r['load']:.2f}, {r['work']}",
                        file=sys.stderr,
                        flush=True,
                    )
                q, b = got["quiet"], got["busy"]
                what = (
                    f"track {args.frames} frames"
                    if command == "track"
                    else (f"segment {args.images} images")
                )
                rows.append(
                    (
                        what,
                        MODE_LABEL[mode],
                        f"{q['cpu']:.1f}",
                        f"{b['cpu']:.1f}" + (" (timed out)" if b["timed_out"] else ""),
                        f"**{b['cpu'] / q['cpu']:.2f}x**",
                        f"{q['wall']:.1f}",
                        f"{b['wall']:.1f}",
                        f"{q['load']:.2f} / {b['load']:.2f}",
                        q["work"] if q["work"] == b["work"] else f"{q['work']} / {b['work']}",
                    )
                )
    print(
        f"\nCPU-seconds (user + sys of the command's process) and wall seconds, quiet and beside "
        f"{args.busy} busy processes; --preset tiny-test, one fresh process per run\n"
    )
    print(
        table(
            (
                "command",
                "setting",
                "CPU-s quiet",
                f"CPU-s beside {args.busy} busy",
                "busy / quiet",
                "wall s quiet",
                "wall s busy",
                "load avg (1 min) quiet / busy",
                "work (quiet / busy)",
            ),
            rows,
        )
    )


if __name__ == "__main__":
    main()
