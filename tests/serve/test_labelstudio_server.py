"""textseg's ML backend connected to a real Label Studio server: a project asks it for
pre-annotations and for an interactive (smart keypoint) answer, as the UI does.

Label Studio fetches nothing itself: it posts the tasks to the backend, which reads each image
back from Label Studio (``/data/local-files/?d=...`` with the user's token) and answers with
brush RLE and polygons that Label Studio stores as predictions.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from fastapi import FastAPI

from textseg._image import load_image
from textseg.serve.labelstudio import LabelStudioAccess, make_router
from textseg.vocab import Vocabulary

from .._limits import HANG_S
from .conftest import serve

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image">
    <Label value="bowl" alias="dish"/>
    <Label value="broccoli"/>
  </BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="bowl"/></PolygonLabels>
  <KeyPointLabels name="point" toName="image" smart="true"><Label value="bowl"/></KeyPointLabels>
</View>"""
FILES = ["000000000009.jpg", "000000000030.jpg", "000000000036.jpg"]


@pytest.fixture(scope="module")
def backend(labelstudio_server, tiny_service):
    app = FastAPI()
    access = LabelStudioAccess(url=labelstudio_server.url, api_key=labelstudio_server.token)
    app.include_router(make_router(tiny_service, access=access))
    with serve(app) as url:
        yield url


def test_label_studio_pre_annotates_and_asks_for_clicks(
    labelstudio_server, backend, tiny_service, data_dir
):
    from label_studio_sdk.converter.brush import decode_rle

    server = labelstudio_server
    folder = server.files_root / "backend-test"
    folder.mkdir()
    for name in FILES:
        (folder / name).write_bytes((data_dir / "coco-dev" / "images" / name).read_bytes())
    client = server.client()
    project = client.projects.create(title="backend", label_config=CONFIG)
    client.import_storage.local.create(project=project.id, path=str(folder), title="images")
    tasks = [{"data": {"image": f"/data/local-files/?d=backend-test/{n}"}} for n in FILES]
    client.projects.import_tasks(id=project.id, request=tasks)
    ml = client.ml.create(url=backend, project=project.id, title="textseg", is_interactive=True)

    t0 = time.perf_counter()
    client.actions.create(
        id="retrieve_tasks_predictions",
        project=project.id,
        selected_items={"all": True, "excluded": []},
    )
    elapsed = time.perf_counter() - t0
    print(
        f"\nLabel Studio start-up {server.startup_s:.1f} s; {len(FILES)} tasks pre-annotated "
        f"through it in {elapsed:.1f} s"
    )

    vocab = Vocabulary(["bowl", "broccoli"], synonyms={"bowl": ["dish"]})
    found = 0
    by_name = {}
    for task in client.tasks.list(project=project.id, fields="all"):
        name = task.data["image"].rsplit("/", 1)[-1]
        by_name[name] = task.id
        (prediction,) = client.predictions.list(task=task.id)
        assert prediction.model_version == "textseg-tiny-test"
        want = tiny_service.segment(load_image(folder / name), vocab).detections
        brushes = [r for r in prediction.result if r["from_name"] == "brush"]
        assert len(brushes) == len(want)
        for region, mask, label in zip(brushes, want.mask, want.data["class_name"]):
            h, w = region["original_height"], region["original_width"]
            layer = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0
            np.testing.assert_array_equal(layer, mask)
            assert region["value"]["brushlabels"] == [label]
        outlines = {r["id"].split("_")[0] for r in prediction.result if r["from_name"] == "outline"}
        assert len(outlines) == int((want.data["class_name"] == "bowl").sum())
        found += len(want)
    assert len(by_name) == len(FILES) and found > 0

    # The smart keypoint: Label Studio posts the annotator's point as the context.
    keypoint = {
        "type": "keypointlabels",
        "from_name": "point",
        "to_name": "image",
        "original_width": 640,
        "original_height": 480,
        "is_positive": True,
        "value": {"x": 40.0, "y": 55.0, "width": 1, "keypointlabels": ["bowl"]},
    }
    request = urllib.request.Request(
        f"{server.url}/api/ml/{ml.id}/interactive-annotating",
        data=json.dumps({"task": by_name[FILES[0]], "context": {"result": [keypoint]}}).encode(),
        headers={"Authorization": f"Token {server.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=HANG_S) as response:
        answer = json.loads(response.read())
    (region,) = answer["data"]["result"]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["bowl"]
    h, w = region["original_height"], region["original_width"]
    assert (decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0).any()


def test_start_training_trains_a_specialist_on_the_annotations(
    labelstudio_server, tiny_service, data_dir, tmp_path
):
    """START_TRAINING (the webhook Label Studio posts): the project's annotations, fetched
    through its API, become a COCO dataset with provenance; `textseg train` runs on it and
    pre-annotation switches to the specialist."""
    from textseg.io.coco import load_coco
    from textseg.io.labelstudio import region

    from .conftest import TinyService

    server = labelstudio_server
    folder = server.files_root / "train-test"
    folder.mkdir()
    names = FILES[:2]
    for name in names:
        (folder / name).write_bytes((data_dir / "coco-dev" / "images" / name).read_bytes())
    client = server.client()
    project = client.projects.create(title="train", label_config=CONFIG)
    client.import_storage.local.create(project=project.id, path=str(folder), title="images")
    # Each task: a pre-annotated bowl (kept as is on the first, edited on the second) and a
    # broccoli drawn by hand.
    shapes = {n: load_image(folder / n).shape[:2] for n in names}

    def brush(name: str, label: str, rows: slice, cols: slice, **options) -> list[dict]:
        h, w = shapes[name]
        mask = np.zeros((h, w), bool)
        mask[rows, cols] = True
        return region("brushlabels", label, width=w, height=h, mask=mask, from_name="brush",
                      **options)  # fmt: skip

    bowl, edited = (slice(100, 200), slice(150, 300)), (slice(100, 200), slice(170, 320))
    tasks = [
        {
            "data": {"image": f"/data/local-files/?d=train-test/{n}"},
            "predictions": [{"model_version": "textseg-tiny", "result": brush(n, "bowl", *bowl)}],
        }
        for n in names
    ]
    client.projects.import_tasks(id=project.id, request=tasks)
    for task in client.tasks.list(project=project.id, fields="all"):
        name = task.data["image"].rsplit("/", 1)[-1]
        kept = brush(name, "bowl", *(bowl if name == names[0] else edited))
        drawn = brush(name, "broccoli", slice(300, 380), slice(400, 500), region_id="hand")
        client.annotations.create(id=task.id, result=kept + drawn)

    app = FastAPI()
    access = LabelStudioAccess(url=server.url, api_key=server.token)
    router = make_router(
        tiny_service,
        access=access,
        specialist=lambda out: TinyService(specialist=str(out)),
        work_dir=tmp_path / "work",
        train_args=["--tiny", "--epochs", "1", "--arch", "segformer-b0"],
    )
    app.include_router(router)
    with serve(app) as url:
        client.ml.create(url=url, project=project.id, title="textseg-train")
        body = {"action": "START_TRAINING", "project": {"id": project.id, "label_config": CONFIG}}
        request = urllib.request.Request(
            f"{url}/webhook",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HANG_S) as response:
                assert json.loads(response.read())["status"] == "training"
        except urllib.error.HTTPError as err:
            pytest.fail(f"webhook: {err.code} {err.read().decode()}")
        router.backend.trainer.wait()
        with urllib.request.urlopen(f"{url}/health", timeout=HANG_S) as response:
            health = json.loads(response.read())
        assert health["training"] == "done", health
        run = tmp_path / "work" / "run-1"
        coco = load_coco(run / "data" / "annotations.json")
        sources = sorted(
            (str(n), str(s))
            for im in coco.images
            for n, s in zip(
                coco.detections[int(im["id"])].data["class_name"],
                coco.detections[int(im["id"])].data["source"],
            )
        )
        assert sources == [
            ("bowl", "corrected"), ("bowl", "proposal"), ("broccoli", "manual"),
            ("broccoli", "manual"),
        ]  # fmt: skip
        config = json.loads((run / "specialist" / "config.json").read_text())
        # The training split's provenance (one of the two images may be held out for val).
        assert {"manual"} <= set(config["provenance"]) <= {"proposal", "corrected", "manual"}

        # Pre-annotation now comes from the specialist (a new model version).
        # Label Studio asks /setup for the model version before predicting.
        client.actions.create(
            id="retrieve_tasks_predictions",
            project=project.id,
            selected_items={"all": True, "excluded": []},
        )
        versions = {
            p.model_version
            for task in client.tasks.list(project=project.id, fields="all")
            for p in client.predictions.list(task=task.id)
        }
        assert f"specialist:{run / 'specialist'}" in versions
