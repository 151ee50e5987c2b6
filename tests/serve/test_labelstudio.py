"""Label Studio's ML backend routes, called as Label Studio calls them (the real server's
round trip is test_labelstudio_server.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from textseg._image import load_image
from textseg.serve.labelstudio import LabelStudioAccess, make_router, parse_label_config
from textseg.vocab import Vocabulary

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image">
    <Label value="bowl" alias="dish" hint="plate, basin"/>
    <Label value="broccoli"/>
  </BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="bowl"/></PolygonLabels>
  <RectangleLabels name="box" toName="image"><Label value="broccoli"/></RectangleLabels>
  <KeyPointLabels name="point" toName="image" smart="true"><Label value="bowl"/></KeyPointLabels>
</View>"""
IMAGE = "000000000009.jpg"


def test_config_gives_classes_synonyms_and_prompt_tags():
    config = parse_label_config(CONFIG)
    assert config.images == {"image": "image"}
    assert [(c.name, c.kind, c.labels) for c in config.controls] == [
        ("brush", "brushlabels", ("bowl", "broccoli")),
        ("outline", "polygonlabels", ("bowl",)),
        ("box", "rectanglelabels", ("broccoli",)),
    ]
    assert [c.kind for c in config.prompts] == ["rectanglelabels", "keypointlabels"]
    vocab = config.vocabulary("image")
    assert vocab.names == ["bowl", "broccoli"]
    assert vocab.prompts == ["bowl", "dish", "plate", "basin", "broccoli"]


@pytest.mark.parametrize(
    ("xml", "error"),
    [
        ("<View>", "expected Label Studio's XML"),
        ("<View><Text name='t' value='$t'/></View>", "expected an <Image"),
    ],
)
def test_bad_configs_are_named(xml, error):
    with pytest.raises(ValueError, match=error):
        parse_label_config(xml)


@pytest.fixture(scope="module")
def client(tiny_service, data_dir):
    app = FastAPI()
    root = data_dir / "coco-dev"
    app.include_router(make_router(tiny_service, access=LabelStudioAccess(local_root=root)))
    return TestClient(app)


def _task() -> dict:
    return {"id": 7, "data": {"image": f"/data/local-files/?d=images/{IMAGE}"}}


def test_health_and_setup(client):
    assert client.get("/health").json()["status"] == "UP"
    answer = client.post("/setup", json={"project": "1.1", "schema": CONFIG})
    assert answer.json() == {"model_version": "textseg-tiny-test"}


def test_predict_writes_every_tag_of_each_class(client, tiny_service, data_dir):
    from label_studio_sdk.converter.brush import decode_rle

    body = {"tasks": [_task()], "project": "1.1", "label_config": CONFIG, "params": {}}
    (result,) = client.post("/predict", json=body).json()["results"]
    image = load_image(data_dir / "coco-dev" / "images" / IMAGE)
    vocab = Vocabulary(["bowl", "broccoli"], synonyms={"bowl": ["dish", "plate", "basin"]})
    want = tiny_service.segmenter.segment(image, vocab).detections
    assert len(want) > 0
    brushes = [r for r in result["result"] if r["from_name"] == "brush"]
    assert len(brushes) == len(want)
    for region, mask, name in zip(brushes, want.mask, want.data["class_name"]):
        h, w = region["original_height"], region["original_width"]
        layer = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0
        np.testing.assert_array_equal(layer, mask)
        assert region["value"]["brushlabels"] == [name]
    by_tag = {"outline": "bowl", "box": "broccoli"}
    for tag, label in by_tag.items():
        regions = [r for r in result["result"] if r["from_name"] == tag]
        assert {r["value"][f"{r['type']}"][0] for r in regions} <= {label}
        objects = {r["id"].split("_")[0] for r in regions}  # polygon parts share an object
        assert len(objects) == int((want.data["class_name"] == label).sum())
    assert result["model_version"] == "textseg-tiny-test"


def test_interactive_keypoint_is_answered_from_the_cached_embedding(client, tiny_service):
    keypoint = {
        "type": "keypointlabels",
        "from_name": "point",
        "to_name": "image",
        "original_width": 640,
        "original_height": 480,
        "is_positive": True,
        "value": {"x": 50.0, "y": 60.0, "width": 1, "keypointlabels": ["bowl"]},
    }
    body = {
        "tasks": [_task()],
        "label_config": CONFIG,
        "params": {"context": {"result": [keypoint]}},
    }
    encodes = tiny_service.encodes
    for _ in range(2):
        (result,) = client.post("/predict", json=body).json()["results"]
        (region,) = result["result"]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["bowl"]
        assert len(region["value"]["rle"]) > 0
    assert tiny_service.encodes == encodes + 1  # the second click reused the embedding


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"tasks": "x", "label_config": CONFIG}, "expected a list of tasks"),
        ({"tasks": [], "project": "9.9"}, "expected a label_config, or a /setup"),
        (
            {"tasks": [{"id": 1, "data": {"image": "ftp://h/a.jpg"}}], "label_config": CONFIG},
            "expected a /data/... or http",
        ),
        (
            {"tasks": [{"id": 1, "data": {"img": "x"}}], "label_config": CONFIG},
            "expected data\\['image'\\]",
        ),
    ],
)
def test_bad_requests_get_one_line(client, body, error):
    answer = client.post("/predict", json=body)
    assert answer.status_code == 400
    assert re.search(error, answer.json()["error"])


def test_webhook_events_other_than_start_training_are_ignored(client):
    answer = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert answer.status_code == 201 and answer.json()["status"] == "ignored"
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert answer.status_code == 400
    assert "no specialist loader" in answer.json()["error"]


def test_annotated_regions_become_masks():
    from textseg.io.labelstudio import region
    from textseg.serve.labelstudio_train import region_mask

    mask = np.zeros((10, 20), bool)
    mask[2:6, 4:12] = True
    for kind in ("brushlabels", "polygonlabels"):
        (item,) = region(kind, "bowl", width=20, height=10, mask=mask)
        np.testing.assert_array_equal(region_mask(item), mask)
    (box,) = region("rectanglelabels", "bowl", width=20, height=10, mask=mask)
    assert region_mask(box) is None


def test_tasks_of_one_request_are_batched_in_order(kit, segmenter, data_dir):
    """Label Studio sends every selected task in one /predict: over a batching service the
    tasks run concurrently and their images are encoded together; each task gets the answer
    for its own image, in the order of the request."""
    from concurrent.futures import ThreadPoolExecutor

    from textseg.serve import BatchingService

    names = ["000000000009.jpg", "000000000030.jpg", "000000000036.jpg", "000000000049.jpg"]
    sizes = [load_image(data_dir / "coco-dev" / "images" / n).shape[1::-1] for n in names]
    assert len(set(sizes)) == len(names)  # a task's answer is known by its image's size
    gate = kit.Gate()
    service = BatchingService(segmenter, name="ls", max_batch=4, timeout_s=600, on_batch=gate)
    app = FastAPI()
    access = LabelStudioAccess(local_root=data_dir / "coco-dev")
    app.include_router(make_router(service, access=access))
    tasks = [
        {"id": i, "data": {"image": f"/data/local-files/?d=images/{name}"}}
        for i, name in enumerate(names)
    ]
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool, service:
        try:
            answer = pool.submit(c.post, "/predict", json={"tasks": tasks, "label_config": CONFIG})
            assert gate.entered.wait(600)  # the worker holds the first batch
            # The tasks it does not hold are queued at once (one by one, they would wait for
            # the held batch before the next one is sent).
            kit.wait_for(lambda: len(gate.batches[0]) + service.queue_depth == len(names))
        finally:
            gate.release()
        results = answer.result().json()["results"]
    sizes_run = [len(batch) for batch in gate.batches]
    assert sum(sizes_run) == len(names) and len(sizes_run) <= 2, sizes_run
    assert len(results) == len(names)
    for result, size in zip(results, sizes):
        assert {(r["original_width"], r["original_height"]) for r in result["result"]} <= {size}
    assert sum(len(result["result"]) for result in results) > 0
