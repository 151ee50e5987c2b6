"""Label Studio's ML backend protocol over a :class:`~textseg.serve.protocol.SegmentationService`.

Label Studio calls a connected ML backend at ``GET /health``, ``POST /setup`` (the project's
labeling config), ``POST /predict`` (tasks to pre-annotate, or one task with the annotator's
smart-tool region in ``params.context``) and ``POST /webhook`` (project events).
:func:`make_router` answers them:

- pre-annotation: each task's image is segmented once for every label value of the config's
  ``BrushLabels``, ``PolygonLabels`` and ``RectangleLabels`` tags (a label's ``alias`` and
  ``hint``, comma-separated, are extra prompts of its class), and each object is written for
  every tag that has its label: brush RLE, polygons, or a rectangle. The tasks of one request
  (Label Studio sends all the selected tasks in one) run concurrently, up to the service's
  ``max_batch`` at a time, so a batching service encodes and prompts their images together
  while the next images are read and the last answers written;
- interactive: a ``KeyPointLabels`` point (positive, or negative with ``is_positive`` false) or
  a ``RectangleLabels`` box in the context is a SAM prompt; ``service.click`` answers it from
  the image's cached embedding, as one brush region (the config's ``BrushLabels``, else its
  ``PolygonLabels``) with the prompt's label.
- training (``make_router(..., specialist=...)``): the ``START_TRAINING`` webhook fetches the
  project's annotations, writes them as COCO with their provenance and runs ``textseg train``
  in the background (:mod:`textseg.serve.labelstudio_train`); when it succeeds, the
  specialist pre-annotates (model version ``specialist:<folder>``) and SAM keeps the clicks.

Images: a task's URL ``/data/local-files/?d=P`` is read from ``LOCAL_FILES_DOCUMENT_ROOT/P``
when the backend has that root (the server beside Label Studio), else fetched from Label Studio
(``LABEL_STUDIO_URL``, authorised by ``LABEL_STUDIO_API_KEY``, or the host and token Label
Studio sent to ``/setup``), as ``/data/upload/...`` files are; ``http(s)://`` URLs are fetched.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image

from textseg.fields import CLASS_NAME
from textseg.io.labelstudio import LOCAL_FILES, prediction, region
from textseg.serve.protocol import SegmentationService
from textseg.vocab import Vocabulary, normalize_name

__all__ = ["LabelConfig", "LabelStudioAccess", "make_router", "parse_label_config"]

log = logging.getLogger(__name__)

#: Control tags whose labels are pre-annotated, by the result type Label Studio gives them.
OUTPUT_TAGS = {
    "brushlabels": "brushlabels",
    "polygonlabels": "polygonlabels",
    "rectanglelabels": "rectanglelabels",
}
#: Control tags whose regions are SAM prompts when they come in a request's context.
PROMPT_TAGS = ("keypointlabels", "rectanglelabels")
_SPLIT = re.compile(r"[,;]")


@dataclass(frozen=True)
class Control:
    """One labels tag of the config: its ``name``, the image it labels, its result type and
    label values."""

    name: str
    to_name: str
    kind: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelConfig:
    """What a project's labeling config asks for.

    Attributes:
        images: ``{image tag name: the task data key of its value}`` (``$image`` -> ``image``).
        controls: The output tags (brush, polygon, rectangle) in config order.
        prompts: The tags whose regions prompt SAM (keypoints, rectangles).
        synonyms: ``{label value: [extra prompts]}`` from the labels' ``alias`` and ``hint``.
    """

    images: dict[str, str]
    controls: tuple[Control, ...]
    prompts: tuple[Control, ...]
    synonyms: dict[str, list[str]] = field(default_factory=dict)

    def vocabulary(self, to_name: str) -> Vocabulary | None:
        """Every label value of the output tags on image ``to_name``, with synonyms; None when
        there is none."""
        classes: list[str] = []
        seen: set[str] = set()
        for control in self.controls:
            for label in control.labels if control.to_name == to_name else ():
                if normalize_name(label).casefold() not in seen:
                    seen.add(normalize_name(label).casefold())
                    classes.append(label)
        if not classes:
            return None
        synonyms: dict[str, list[str]] = {}
        for name in classes:
            for prompt in self.synonyms.get(name, []):
                key = normalize_name(prompt).casefold()
                if key and key not in seen:  # each prompt names one class only
                    seen.add(key)
                    synonyms.setdefault(name, []).append(prompt)
        return Vocabulary(classes, synonyms=synonyms)


def parse_label_config(xml: str) -> LabelConfig:
    """Read a Label Studio labeling config (XML).

    Raises:
        ValueError: Not XML, or no ``Image`` tag.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ValueError(
            f"label config: expected Label Studio's XML, got a parse error: {err}"
        ) from None
    images = {
        str(tag.get("name")): str(tag.get("value", "")).lstrip("$")
        for tag in root.iter()
        if tag.tag.lower() == "image" and tag.get("name")
    }
    if not images:
        raise ValueError("label config: expected an <Image name=... value=$...> tag, found none")
    controls, prompts = [], []
    synonyms: dict[str, list[str]] = {}
    for tag in root.iter():
        kind = tag.tag.lower()
        if kind not in OUTPUT_TAGS and kind not in PROMPT_TAGS:
            continue
        labels = []
        for label in tag:
            value = label.get("value")
            if label.tag.lower() != "label" or not value:
                continue
            labels.append(value)
            extra = [label.get("alias") or "", label.get("hint") or ""]
            words = [w.strip() for text in extra for w in _SPLIT.split(text) if w.strip()]
            if words:
                synonyms.setdefault(value, []).extend(words)
        control = Control(str(tag.get("name")), str(tag.get("toName")), kind, tuple(labels))
        if control.to_name not in images:
            continue  # labels another object (text, video): not ours
        if kind in OUTPUT_TAGS:
            controls.append(control)
        if kind in PROMPT_TAGS:
            prompts.append(control)
    return LabelConfig(images, tuple(controls), tuple(prompts), synonyms)


@dataclass
class LabelStudioAccess:
    """Where a task's image is read from.

    Attributes:
        url: Label Studio's address (``LABEL_STUDIO_URL``), for ``/data/...`` URLs.
        api_key: A legacy token or a personal access token (``LABEL_STUDIO_API_KEY``).
        local_root: ``LOCAL_FILES_DOCUMENT_ROOT``, where ``/data/local-files/?d=P`` is
            ``local_root/P`` (None: fetched from Label Studio).
    """

    url: str | None = None
    api_key: str | None = None
    local_root: Path | None = None
    _bearer: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LabelStudioAccess:
        env = os.environ if environ is None else environ
        root = env.get("LOCAL_FILES_DOCUMENT_ROOT")
        return cls(
            url=env.get("LABEL_STUDIO_URL") or None,
            api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            local_root=Path(root) if root else None,
        )

    def load(self, url: str) -> np.ndarray:
        """The image a task's URL names, ``(H, W, 3)`` uint8 RGB.

        Raises:
            ValueError: A URL that can be neither read nor fetched (named).
        """
        if url.startswith(LOCAL_FILES) and self.local_root is not None:
            rel = unquote(parse_qs(urlsplit(url).query).get("d", [""])[0])
            root = self.local_root.resolve()
            path = (root / rel).resolve()
            if path.is_relative_to(root) and path.is_file():
                return _rgb(path.read_bytes())
        if url.startswith("/"):
            if not self.url:
                raise ValueError(
                    f"image {url!r}: expected LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY) to "
                    f"fetch it from Label Studio, got neither"
                )
            return _rgb(self._get(self.url.rstrip("/") + url, auth=True))
        if url.startswith(("http://", "https://")):
            same = bool(self.url) and url.startswith(str(self.url).rstrip("/") + "/")
            return _rgb(self._get(url, auth=same))
        raise ValueError(f"image: expected a /data/... or http(s):// URL, got {url!r}")

    def _get(self, url: str, *, auth: bool) -> bytes:
        request = urllib.request.Request(url)
        if auth and self.api_key:
            request.add_header("Authorization", self.authorization())
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def authorization(self) -> str:
        """The ``Authorization`` header for Label Studio's API."""
        key = str(self.api_key)
        if key.count(".") != 2:
            return f"Token {key}"  # a legacy token
        if self._bearer is None:  # a personal access token (JWT): exchanged for an access one
            body = json.dumps({"refresh": key}).encode()
            request = urllib.request.Request(
                str(self.url).rstrip("/") + "/api/token/refresh",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                self._bearer = json.loads(response.read())["access"]
        return f"Bearer {self._bearer}"


def _rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class LabelStudioBackend:
    """The protocol's logic, apart from HTTP (:func:`make_router` routes to it)."""

    def __init__(
        self,
        service: SegmentationService,
        access: LabelStudioAccess,
        trainer: Any = None,
    ) -> None:
        self.service = service
        #: What pre-annotates: the service, or the specialist the last training run wrote.
        self.annotator: SegmentationService = service
        self.specialist: Path | None = None
        self.access = access
        self.trainer = trainer
        self.configs: dict[str, LabelConfig] = {}
        self._lock = threading.Lock()

    def model_version(self) -> str:
        if self.specialist is not None:
            return f"specialist:{self.specialist}"
        info = self.service.describe()
        return str(info.get("model_version") or info.get("preset") or "textseg")

    def health(self) -> dict[str, Any]:
        out = {"status": "UP", "model_class": "textseg", "model_version": self.model_version()}
        if self.trainer is not None:
            out["training"] = self.trainer.status
            if self.trainer.error:
                out["training_error"] = self.trainer.error
        return out

    def use_specialist(self, folder: Path, annotator: SegmentationService) -> None:
        """Pre-annotate with a trained specialist from now on (clicks stay with SAM)."""
        with self._lock:
            self.annotator, self.specialist = annotator, folder

    def webhook(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``START_TRAINING``: train a specialist on the project's annotations; other events
        are acknowledged and ignored (training on every annotation would never settle)."""
        from textseg.serve.labelstudio_train import annotations_to_coco, fetch_export

        action = body.get("action")
        if action != "START_TRAINING":
            return {"action": action, "status": "ignored"}
        if self.trainer is None:
            raise ValueError(
                "training: this backend has no specialist loader; serve it with "
                "make_router(service, specialist=...)"
            )
        project = body.get("project") or {}
        if not isinstance(project, Mapping) or "id" not in project:
            raise ValueError(f"webhook: expected project {{id, label_config}}, got {project!r}")
        config = parse_label_config(str(project.get("label_config") or ""))
        to_name = next(iter(config.images))
        vocab = config.vocabulary(to_name)
        if vocab is None:
            raise ValueError("training: the labeling config has no brush or polygon labels")
        if not self.access.url:
            raise ValueError("training: expected LABEL_STUDIO_URL to fetch the annotations")
        tasks, predictions = fetch_export(
            self.access.url, self.access.authorization(), int(project["id"])
        )
        run = self.trainer.start(
            lambda folder: annotations_to_coco(
                tasks, predictions, self.access.load, config.images[to_name], vocab.names, folder
            )
        )
        return {"action": action, "status": "training", "run": str(run)}

    def setup(self, body: Mapping[str, Any]) -> dict[str, Any]:
        schema = body.get("schema") or body.get("label_config")
        if schema:
            self.configs[str(body.get("project", ""))] = parse_label_config(str(schema))
        # Label Studio sends its host and the user's token: images can be fetched with them.
        if not self.access.url and body.get("hostname"):
            self.access.url = str(body["hostname"])
        if not self.access.api_key and body.get("access_token"):
            self.access.api_key = str(body["access_token"])
        return {"model_version": self.model_version()}

    def predict(self, body: Mapping[str, Any]) -> dict[str, Any]:
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise ValueError(f"predict: expected a list of tasks, got {type(tasks).__name__}")
        schema = body.get("label_config")
        config = (
            parse_label_config(str(schema))
            if schema
            else self.configs.get(str(body.get("project", "")))
        )
        if config is None:
            raise ValueError("predict: expected a label_config, or a /setup of this project first")
        params = body.get("params") or {}
        context = params.get("context") if isinstance(params, Mapping) else None
        version = self.model_version()
        with self._lock:  # one model: requests take turns
            if context and context.get("result"):
                return {
                    "results": [self._interactive(tasks[0], config, context, version)],
                    "model_version": version,
                }
            return {
                "results": self._each(lambda t: self._preannotate(t, config, version), tasks),
                "model_version": version,
            }

    def _each(self, job: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
        """``job`` of every task, in order: concurrently (up to the annotator's ``max_batch``)
        when the annotator batches concurrent calls, one by one otherwise."""
        width = min(len(tasks), int(getattr(self.annotator, "max_batch", 1)))
        if width <= 1:
            return [job(task) for task in tasks]
        with ThreadPoolExecutor(width, thread_name_prefix="textseg-ls") as pool:
            return list(pool.map(job, tasks))

    def _image(self, task: Mapping[str, Any], config: LabelConfig, to_name: str) -> np.ndarray:
        key = config.images[to_name]
        data = task.get("data") or {}
        if key not in data:
            raise ValueError(f"task {task.get('id')}: expected data[{key!r}], got {list(data)}")
        return self.access.load(str(data[key]))

    def _preannotate(
        self, task: Mapping[str, Any], config: LabelConfig, version: str
    ) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        scores: list[float | None] = []
        for to_name in config.images:
            vocab = config.vocabulary(to_name)
            if vocab is None:
                continue
            image = self._image(task, config, to_name)
            h, w = image.shape[:2]
            dets = self.annotator.segment(image, vocab).detections
            names = [str(n) for n in dets.data.get(CLASS_NAME, [])]
            conf = dets.confidence if dets.confidence is not None else [None] * len(dets)
            for k, (name, score) in enumerate(zip(names, conf)):
                score = None if score is None else float(score)
                for control in config.controls:
                    if control.to_name != to_name or name not in control.labels:
                        continue
                    results += region(
                        control.kind,
                        name,
                        width=w,
                        height=h,
                        mask=dets.mask[k],
                        score=score,
                        from_name=control.name,
                        to_name=to_name,
                        region_id=f"{control.name}-{k}",
                    )
                scores.append(score)
        return prediction(results, scores, version)

    def _interactive(
        self,
        task: Mapping[str, Any],
        config: LabelConfig,
        context: Mapping[str, Any],
        version: str,
    ) -> dict[str, Any]:
        items = [r for r in context["result"] if str(r.get("type", "")).lower() in PROMPT_TAGS]
        if not items:
            raise ValueError(
                f"predict: expected keypoint or rectangle regions in the context, got types "
                f"{sorted({str(r.get('type')) for r in context['result']})}"
            )
        to_name = str(items[0].get("to_name") or next(iter(config.images)))
        image = self._image(task, config, to_name)
        h, w = image.shape[:2]
        points, point_labels, box, label = [], [], None, None
        for item in items:
            value = item.get("value") or {}
            kind = str(item["type"]).lower()
            label = label or (value.get(kind) or [None])[0]
            sx, sy = w / 100.0, h / 100.0
            if kind == "keypointlabels":
                points.append([float(value["x"]) * sx, float(value["y"]) * sy])
                point_labels.append(0 if item.get("is_positive") is False else 1)
            else:
                x, y = float(value["x"]) * sx, float(value["y"]) * sy
                x1, y1 = x + float(value["width"]) * sx, y + float(value["height"]) * sy
                box = np.array([x, y, x1, y1], np.float32)
        dets = self.service.click(
            image,
            points=np.array(points, np.float32) if points else None,
            point_labels=np.array(point_labels, np.int64) if points else None,
            box=box,
        )
        # A click's answer is a mask: a brush region, else polygons.
        outputs = [
            c for c in config.controls if c.to_name == to_name and c.kind != "rectanglelabels"
        ]
        if not len(dets) or not outputs:
            return prediction([], [], version)
        control = next((c for c in outputs if c.kind == "brushlabels"), outputs[0])
        name = label if label in control.labels else (control.labels[0] if control.labels else "")
        score = float(dets.confidence[0]) if dets.confidence is not None else None
        results = region(
            control.kind,
            name,
            width=w,
            height=h,
            mask=dets.mask[0],
            score=score,
            from_name=control.name,
            to_name=to_name,
            region_id="interactive",
        )
        return prediction(results, [score], version)


def make_router(
    service: SegmentationService,
    *,
    access: LabelStudioAccess | None = None,
    specialist: Callable[[Path], SegmentationService] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    train_args: Sequence[str] = (),
) -> Any:
    """A FastAPI router with Label Studio's ML backend routes over ``service``.

    Mount it where Label Studio's project settings (Model -> Connect model) point:
    ``app.include_router(make_router(service))`` serves ``/health``, ``/setup``,
    ``/predict``, ``/webhook`` and ``/versions`` at the app's root.

    Args:
        service: Answers ``segment`` (pre-annotation) and ``click`` (smart tools).
        access: Where images are read from (default: :meth:`LabelStudioAccess.from_env`).
        specialist: Builds a service from a folder ``textseg train`` wrote; given, the
            ``START_TRAINING`` webhook trains one on the project's annotations and then
            pre-annotates with it.
        work_dir: Where training datasets and specialists are written (default: a new
            temporary folder).
        train_args: Extra ``textseg train`` options (``--arch``, ``--epochs``...).
    """
    from fastapi import APIRouter, Body
    from fastapi.responses import JSONResponse

    backend = LabelStudioBackend(service, access or LabelStudioAccess.from_env())
    if specialist is not None:
        import tempfile

        from textseg.serve.labelstudio_train import Trainer

        folder = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="textseg-ls-"))
        backend.trainer = Trainer(
            folder, train_args, lambda out: backend.use_specialist(out, specialist(out))
        )
    router = APIRouter()

    def answer(job: Any, body: Any, status: int = 200) -> Any:
        try:
            return JSONResponse(job(body if isinstance(body, Mapping) else {}), status)
        except ValueError as err:  # bad input: one line, as Label Studio shows it
            return JSONResponse({"error": str(err)}, status_code=400)

    @router.get("/")
    @router.get("/health")
    def health() -> dict[str, Any]:
        return backend.health()

    @router.post("/setup")
    def setup(body: dict = Body(default_factory=dict)) -> Any:  # noqa: B008
        return answer(backend.setup, body)

    @router.post("/predict")
    def predict(body: dict = Body(default_factory=dict)) -> Any:  # noqa: B008
        return answer(backend.predict, body)

    @router.post("/webhook")
    def webhook(body: dict = Body(default_factory=dict)) -> Any:  # noqa: B008
        return answer(backend.webhook, body, 201)

    @router.get("/versions")
    def versions() -> dict[str, Any]:
        return {"versions": [backend.model_version()]}

    router.backend = backend  # type: ignore[attr-defined]
    return router
