"""The ML backend's training webhook: Label Studio's annotations -> COCO -> ``textseg train``.

On ``START_TRAINING`` the backend fetches the project's annotations through Label Studio's API
(the latest submitted, not skipped, annotation of each task), writes them as a COCO dataset
(brush and polygon regions as masks, each with its provenance ``source``: ``proposal`` when a
pre-annotation was kept unchanged, ``corrected`` when it was edited, ``manual`` when drawn by
hand, as the annotation app records it), and runs ``textseg train`` on it in the background.
When the run succeeds, pre-annotation switches to the specialist it wrote.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image

from textseg.fields import CLASS_NAME
from textseg.io.labelstudio import decode_brush

__all__ = ["Trainer", "annotations_to_coco", "region_mask"]

log = logging.getLogger(__name__)


def region_mask(item: Mapping[str, Any]) -> np.ndarray | None:
    """The ``(H, W)`` bool mask of a brush or polygon result item; None for other types."""
    kind = str(item.get("type", "")).lower()
    h, w = int(item["original_height"]), int(item["original_width"])
    value = item.get("value") or {}
    if kind == "brushlabels" and value.get("format", "rle") == "rle":
        return decode_brush(value["rle"], h, w)
    if kind == "polygonlabels":
        from textseg.io.polygons import polygons_to_mask

        xy = np.asarray(value["points"], float).reshape(-1, 2) * [w / 100.0, h / 100.0]
        return polygons_to_mask([xy.ravel().tolist()], h, w)
    return None


def _source(item: Mapping[str, Any], predicted: Mapping[str, Mapping[str, Any]]) -> str:
    before = predicted.get(str(item.get("id")))
    if before is None:
        return "manual"
    return "proposal" if before.get("value") == item.get("value") else "corrected"


def annotations_to_coco(
    tasks: Sequence[Mapping[str, Any]],
    predictions: Mapping[int, Sequence[Mapping[str, Any]]],
    load_image: Callable[[str], np.ndarray],
    image_key: str,
    classes: Sequence[str],
    out: Path,
) -> Path:
    """Write Label Studio's exported tasks as ``out/annotations.json`` + ``out/images/``.

    Args:
        tasks: Label Studio's JSON export (each task with its ``annotations``).
        predictions: ``{task id: [prediction]}``: what the annotators were shown.
        load_image: Reads a task's image URL as ``(H, W, 3)`` uint8 RGB.
        image_key: The task data key of the image.
        classes: The class names (the labeling config's label values).
        out: The dataset folder.

    Returns:
        The COCO file.
    """
    from textseg.io.coco_writer import CocoWriter

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    with CocoWriter(out / "annotations.json", list(classes), resume=False) as writer:
        for task in tasks:
            done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
            if not done:
                continue
            annotation = max(done, key=lambda a: str(a.get("updated_at") or a.get("id")))
            # The export lists prediction ids; the predictions come from their own endpoint.
            predicted = {
                str(r.get("id")): r
                for p in predictions.get(int(task["id"]), [])
                for r in p.get("result") or []
            }
            masks, names, sources = [], [], []
            for item in annotation.get("result") or []:
                mask = region_mask(item)
                labels = (item.get("value") or {}).get(str(item.get("type")), [])
                if mask is None or not mask.any() or not labels or labels[0] not in classes:
                    continue
                masks.append(mask)
                names.append(labels[0])
                sources.append(_source(item, predicted))
            image = load_image(str(task["data"][image_key]))
            name = f"task-{task['id']}.png"
            Image.fromarray(image).save(images / name)
            h, w = image.shape[:2]
            mask = np.stack(masks) if masks else np.zeros((0, h, w), bool)
            dets = sv.Detections(
                xyxy=sv.mask_to_xyxy(mask).astype(np.float32) if masks else np.zeros((0, 4)),
                mask=mask,
                class_id=np.array([list(classes).index(n) for n in names], int),
                data={CLASS_NAME: np.array(names, str), "source": np.array(sources, str)},
            )
            writer.add(name, w, h, dets)
    return out / "annotations.json"


class Trainer:
    """Runs ``textseg train`` in the background, one run at a time.

    Args:
        work_dir: Where datasets and specialists are written (``run-N/``).
        train_args: Extra ``textseg train`` options (e.g. ``["--tiny", "--epochs", "1"]``).
        on_done: Called with the specialist folder when a run succeeds.
    """

    def __init__(
        self,
        work_dir: Path,
        train_args: Sequence[str],
        on_done: Callable[[Path], None],
    ) -> None:
        self.work_dir = Path(work_dir)
        self.train_args = list(train_args)
        self.on_done = on_done
        self.runs = 0
        self.status = "idle"
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, prepare: Callable[[Path], Path]) -> Path:
        """Write the dataset with ``prepare(folder) -> COCO file`` and start training on it.

        Raises:
            ValueError: A run is still going.
        """
        with self._lock:
            if self.busy():
                raise ValueError("training: a run is still going; wait for it to finish")
            self.runs += 1
            run = self.work_dir / f"run-{self.runs}"
            coco = prepare(run / "data")
            self.status, self.error = "training", None
            self._thread = threading.Thread(target=self._train, args=(run, coco), daemon=True)
            self._thread.start()
            return run

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _train(self, run: Path, coco: Path) -> None:
        out = run / "specialist"
        command = [sys.executable, "-m", "textseg.cli", "train", str(coco), "--out", str(out)]
        command += ["--images", str(coco.parent / "images"), "--quiet", *self.train_args]
        with open(run / "train.log", "wb") as log_file:
            rc = subprocess.call(command, stdout=log_file, stderr=subprocess.STDOUT)
        if rc != 0:
            tail = (run / "train.log").read_text(errors="replace").strip().splitlines()[-1:]
            self.status, self.error = "failed", f"textseg train exited {rc}: {' '.join(tail)}"
            log.error(self.error)
            return
        try:
            self.on_done(out)
        except Exception as err:  # reported through /health, the backend keeps its model
            self.status, self.error = "failed", f"loading the specialist: {err}"
            log.exception("loading the specialist %s", out)
            return
        self.status = "done"


def fetch_export(
    url: str, authorization: str, project: int
) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """A project's tasks with their annotations (Label Studio's JSON export), and its
    predictions by task id."""

    def get(path: str) -> Any:
        request = urllib.request.Request(
            url.rstrip("/") + path, headers={"Authorization": authorization}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    tasks = get(f"/api/projects/{int(project)}/export?exportType=JSON")
    predictions: dict[int, list[dict[str, Any]]] = {}
    for item in get(f"/api/predictions/?project={int(project)}"):
        predictions.setdefault(int(item["task"]), []).append(item)
    return tasks, predictions
