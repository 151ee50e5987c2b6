"""Label Studio pre-annotation through ``textseg serve``: a real Label Studio server, ``textseg
serve`` connected as its ML backend, ``--tasks`` coco-dev tasks pre-annotated, timed.

    python benchmarks/bench_serve_labelstudio.py [--preset grounded-sam] [--tasks 20]
                                                 [--real-size] [--max-batch 8]

Label Studio (the ``label-studio`` package, its own venv: ``make clients``; or
``TEXTSEG_LABEL_STUDIO=/path/to/label-studio``) is started as the test suite starts it
(``tests/_labelstudio_server.py``: SQLite, a temp data folder, a known user and token, from the
migrated database the suite keeps in ``.pytest_cache`` when there is one). ``textseg serve
--preset P --tiny`` (or ``--random-weights``: the real sizes, ``--real-size``) runs as a
subprocess, the way a user starts it, with ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` so
it reads each task's image back from Label Studio. A project with a brush and a polygon control
imports ``--tasks`` coco-dev images from local storage; the timed step is the data manager's
"Retrieve predictions" action on all of them (one ``/predict`` request with every task, as Label
Studio sends it), until Label Studio has stored every prediction.

Prints a Markdown table, the backend's own counters (requests, batches) and the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _common import DATA, machine, table

REPO = Path(__file__).resolve().parents[1]
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image">
    <Label value="person"/><Label value="dog"/><Label value="car"/><Label value="bowl"/>
  </BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="person"/></PolygonLabels>
</View>"""


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="grounded-sam")
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument(
        "--real-size", action="store_true", help="real model sizes, random weights (not --tiny)"
    )
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--template", type=Path, default=None, help="a migrated Label Studio DB")
    return p.parse_args(argv)


def _labelstudio_module() -> Any:
    """tests/_labelstudio_server.py, the one place that knows how to start Label Studio."""
    path = REPO / "tests" / "_labelstudio_server.py"
    spec = importlib.util.spec_from_file_location("_labelstudio_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _template(command: Path) -> Path:
    """The suite's migrated database for this Label Studio install (conftest's cache key)."""
    stamp = command.resolve().stat()
    key = f"label-studio-{stamp.st_ino}-{stamp.st_mtime_ns}"
    return REPO / ".pytest_cache" / "d" / key / "migrated.sqlite3"


def _get(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _start_backend(args: argparse.Namespace, ls: Any, server: Any, log: Path) -> tuple:
    port = ls.free_port()
    size = ["--random-weights"] if args.real_size else ["--tiny"]
    command = [sys.executable, "-m", "textseg", "serve", "--preset", args.preset, *size]
    command += ["--port", str(port), "--max-batch", str(args.max_batch), "--timeout", "3600"]
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": server.url,
        "LABEL_STUDIO_API_KEY": server.token,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"textseg serve exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if _get(f"{url}/health").get("status") == "UP":
                return proc, url, time.perf_counter() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    ls = _labelstudio_module()
    command = ls.executable()
    if command is None:
        print("label-studio is not installed (make clients, or TEXTSEG_LABEL_STUDIO)")
        return 2
    images = sorted((DATA / "coco-dev" / "images").glob("*.jpg"))[: args.tasks]
    if len(images) < args.tasks:
        raise SystemExit(f"--tasks {args.tasks}: coco-dev has {len(images)} images")
    work = Path(tempfile.mkdtemp(prefix="bench-ls-"))
    load = f"{os.getloadavg()[0]:.1f}"
    server = ls.start(command, work / "ls", template=args.template or _template(command))
    backend = None
    try:
        folder = server.files_root / "bench"
        folder.mkdir()
        for path in images:
            shutil.copyfile(path, folder / path.name)
        backend, url, backend_s = _start_backend(args, ls, server, work / "serve.log")
        from label_studio_sdk import LabelStudio

        client = LabelStudio(base_url=server.url, api_key=server.token, timeout=3600)
        project = client.projects.create(title="bench", label_config=CONFIG)
        client.import_storage.local.create(project=project.id, path=str(folder), title="images")
        tasks = [{"data": {"image": f"/data/local-files/?d=bench/{p.name}"}} for p in images]
        client.projects.import_tasks(id=project.id, request=tasks)
        t0 = time.perf_counter()
        client.ml.create(url=url, project=project.id, title="textseg")
        connect_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.actions.create(
            id="retrieve_tasks_predictions",
            project=project.id,
            selected_items={"all": True, "excluded": []},
        )
        predict_s = time.perf_counter() - t0
        predicted = regions = 0
        for task in client.tasks.list(project=project.id, fields="all"):
            found = client.predictions.list(task=task.id)
            predicted += bool(found)
            regions += sum(len(p.result) for p in found)
        counters = _get(f"{url}/models")["models"][0]
    finally:
        if backend is not None:
            backend.terminate()
            try:
                backend.wait(60)
            except subprocess.TimeoutExpired:  # still inside a request
                backend.kill()
                backend.wait()
        server.stop()
    size = "real sizes, random weights" if args.real_size else "tiny models"
    print(f"machine: {machine()}")
    print(f"load average (1 min) before {load}, after {os.getloadavg()[0]:.1f}")
    print()
    print(
        f"Label Studio pre-annotation: textseg serve --preset {args.preset} ({size}), "
        f"max batch {args.max_batch}; {args.tasks} coco-dev tasks, brush (4 labels) + polygon"
    )
    print()
    rows = [
        ("Label Studio start (migrated DB copied)", f"{server.startup_s:.1f}"),
        ("textseg serve start (models built)", f"{backend_s:.1f}"),
        ("connect ML backend (/health, /setup)", f"{connect_s:.1f}"),
        (f"pre-annotate {args.tasks} tasks (Retrieve predictions)", f"{predict_s:.1f}"),
        ("  per task", f"{predict_s / args.tasks:.2f}"),
    ]
    print(table(("step", "s"), rows))
    print()
    print(
        f"tasks with a prediction: {predicted}/{args.tasks}; regions stored {regions}; backend "
        f"counters: {counters['requests']} segment requests in {counters['batches']} batches"
    )
    return 0 if predicted == args.tasks else 1


if __name__ == "__main__":
    raise SystemExit(main())
