"""textseg's ML backend connected to a real Label Studio server: a project asks it for
pre-annotations and for an interactive (smart keypoint) answer, as the UI does.

Label Studio fetches nothing itself: it posts the tasks to the backend, which reads each image
back from Label Studio (``/data/local-files/?d=...`` with the user's token) and answers with
brush RLE and polygons that Label Studio stores as predictions.
"""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
from fastapi import FastAPI

from textseg._image import load_image
from textseg.serve.labelstudio import LabelStudioAccess, make_router
from textseg.vocab import Vocabulary

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
    yield from serve(app)


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
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.loads(response.read())
    (region,) = answer["data"]["result"]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["bowl"]
    h, w = region["original_height"], region["original_width"]
    assert (decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0).any()
