"""Every route of the real server (uvicorn on 127.0.0.1, tiny preset) through httpx: answers,
bad input (4xx with one JSON error), limits, local paths, the token."""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from textseg.io.rle import decode_masks
from textseg.serve._store import image_id

from .._limits import HANG_S


@pytest.fixture(scope="module")
def client(served: Any) -> httpx.Client:
    with httpx.Client(base_url=served.url, timeout=HANG_S) as c:
        yield c


def _b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_health_and_models(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "UP"
    models = client.get("/models").json()["models"]
    assert models[0]["model"] == "grounded-sam"
    assert models[0]["sam"] == "sam-vit-tiny-test"
    assert models[0]["queue_size"] >= 1
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/segment", "/count", "/click", "/health", "/models"} <= set(paths)
    body = paths["/segment"]["post"]["requestBody"]["content"]
    assert "classes" in body["application/json"]["schema"]["properties"]


def test_segment_upload_answers_instances_counts_timings(kit: Any, client: httpx.Client) -> None:
    image = kit.small_image(1)
    r = client.post(
        "/segment",
        files={"image": ("a.png", kit.png(image), "image/png")},
        data={"classes": ["cat", "dog"], "negatives": "toy dog", "min_area": "0"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image_id"] == image_id(image)
    assert (body["width"], body["height"]) == (64, 48)
    assert body["classes"] == ["cat", "dog"]
    assert set(body["counts"]) == {"cat", "dog"}
    assert sum(body["counts"].values()) == len(body["instances"])
    assert {"encode", "prompt", "decode", "total", "request"} <= set(body["timings"])
    for inst in body["instances"]:
        assert inst["class_name"] in ("cat", "dog")
        assert inst["class_id"] == ["cat", "dog"].index(inst["class_name"])
        mask = decode_masks([inst["mask"]], 48, 64)[0]
        assert mask.sum() == inst["area"] > 0
        ys, xs = np.nonzero(mask)
        assert inst["xyxy"] == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert np.isfinite(inst["score"])


def test_segment_base64_polygons_and_count(kit: Any, client: httpx.Client) -> None:
    image = kit.small_image(2)
    payload = {
        "image": _b64(image),
        "classes": ["cat"],
        "synonyms": {"cat": ["kitten"]},
        "thresholds": {"cat": 0.0},
        "box_threshold": 0.0,
        "masks": "polygons",
    }
    body = client.post("/segment", json=payload).json()
    assert body["counts"]["cat"] == len(body["instances"]) > 0
    assert all("polygons" in i and "mask" not in i for i in body["instances"])
    count = client.post("/count", json={**payload, "masks": "rle"}).json()
    assert count["counts"] == body["counts"]
    assert "instances" not in count


@pytest.mark.parametrize(
    ("payload", "status", "expected"),
    [
        ({"classes": ["cat"]}, 400, "image: expected one of"),
        ({"image": "%%%", "classes": ["cat"]}, 400, "invalid base64"),
        (
            {"image": base64.b64encode(b"GIF89a broken").decode(), "classes": ["cat"]},
            400,
            "unreadable data",
        ),
        ({"image": "", "classes": []}, 400, "classes: expected a list of class names"),
        ({"image": "", "classes": ["cat", "Cat"]}, 400, "classes"),
        ({"image": "", "classes": ["cat"], "box_threshold": 2}, 400, "box_threshold: expected"),
        ({"image": "", "classes": ["cat"], "masks": "png"}, 400, "masks: expected one of"),
        ({"image": "", "classes": ["cat"], "colour": 1}, 400, "unknown ['colour']"),
    ],
)
def test_segment_bad_input_is_400_json(
    kit: Any, client: httpx.Client, payload: dict, status: int, expected: str
) -> None:
    if payload.get("image") == "":
        payload["image"] = _b64(kit.small_image(3))
    r = client.post("/segment", json=payload)
    assert r.status_code == status, r.text
    assert expected in r.json()["error"]


def test_corrupt_upload_is_400_and_server_goes_on(kit: Any, client: httpx.Client) -> None:
    data = kit.png(kit.small_image(4))[:60]  # a truncated PNG
    r = client.post(
        "/segment", files={"image": ("a.png", data, "image/png")}, data={"classes": "cat"}
    )
    assert r.status_code == 400
    assert r.json()["error"].startswith("image: expected a PNG/JPEG")
    r = client.post("/segment", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]
    r = client.post("/segment", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert client.get("/nope").json()["error"].startswith("route: expected one of")
    assert client.get("/health").status_code == 200


def test_oversized_request_and_image_are_413(kit: Any, client: httpx.Client, served: Any) -> None:
    big = client.post(
        "/segment", content=b"0" * (3 << 20), headers={"content-type": "application/json"}
    )
    assert big.status_code == 413
    assert "expected at most" in big.json()["error"]

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(3):
            yield b" " * (1 << 20)

    streamed = client.post(
        "/segment", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    # 1100 x 1000 pixels > max_pixels (1 << 20), refused from the header: a small PNG
    wide = kit.png(np.zeros((1000, 1100, 3), np.uint8))
    r = client.post(
        "/segment", files={"image": ("w.png", wide, "image/png")}, data={"classes": "a"}
    )
    assert r.status_code == 413
    assert "pixels" in r.json()["error"]


def test_local_path_under_root_and_traversal_refused(
    kit: Any, client: httpx.Client, served: Any
) -> None:
    root = served.root
    image = kit.small_image(5)
    (root / "sub").mkdir(exist_ok=True)
    Image.fromarray(image).save(root / "sub" / "ok.png")
    outside = root.parent / "secret.png"
    Image.fromarray(image).save(outside)
    link = root / "link.png"
    if not link.exists():
        os.symlink(outside, link)
    r = client.post("/segment", json={"image_path": "sub/ok.png", "classes": ["cat"]})
    assert r.status_code == 200, r.text
    assert r.json()["image_id"] == image_id(image)
    for path in ("../secret.png", "sub/../../secret.png", str(outside), "link.png"):
        r = client.post("/segment", json={"image_path": path, "classes": ["cat"]})
        assert r.status_code == 403, (path, r.text)
        assert "outside" in r.json()["error"]
    r = client.post("/segment", json={"image_path": "missing.png", "classes": ["cat"]})
    assert r.status_code == 404


def test_click_encodes_once_then_reuses_and_refines(kit: Any, client: httpx.Client) -> None:
    image = kit.small_image(6)
    first = client.post(
        "/click",
        files={"image": ("c.png", kit.png(image), "image/png")},
        data={"points": "[[20, 10]]", "labels": "1", "multimask": "true"},
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["cached"] is False
    assert body["image_id"] == image_id(image)
    scores = [m["score"] for m in body["masks"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    again = client.post(
        "/click",
        json={
            "image_id": body["image_id"],
            "points": [[20, 10], [5, 5]],
            "labels": [1, 0],
            "mask_id": body["masks"][0]["mask_id"],
        },
    ).json()
    assert again["cached"] is True
    assert len(again["masks"]) == 1
    mask = decode_masks([again["masks"][0]["mask"]], 48, 64)[0]
    assert mask.shape == (48, 64)
    box = client.post("/click", json={"image_id": body["image_id"], "box": [2, 2, 40, 30]})
    assert box.status_code == 200 and box.json()["cached"] is True


@pytest.mark.parametrize(
    ("payload", "status", "expected"),
    [
        ({"image_id": "nope", "points": [[1, 1]]}, 404, "image_id: expected an id"),
        ({"image_id": "x", "points": [[1, 1]], "mask_id": "mask-0"}, 404, "mask_id: expected"),
        ({"image_id": "x"}, 400, "click: expected points"),
        ({"image_id": "x", "points": [1, 2]}, 400, "points: expected [[x, y], ...]"),
        ({"image_id": "x", "points": [[1, 2]], "labels": [3]}, 400, "labels: expected one 1"),
        ({"image_id": "x", "box": [5, 5, 1, 1]}, 400, "box: expected [x0, y0, x1, y1]"),
        ({"image_id": "x", "box": [0, 0, "a", 1]}, 400, "box: expected"),
        ({"image_id": "x", "points": [[1, 1]], "multimask": "yes"}, 400, "multimask: expected"),
    ],
)
def test_click_bad_input(client: httpx.Client, payload: dict, status: int, expected: str) -> None:
    r = client.post("/click", json=payload)
    assert r.status_code == status, r.text
    assert expected in r.json()["error"]


def test_exception_in_one_request_is_500_for_it_only(kit: Any, segmenter: Any) -> None:
    from textseg.serve import BatchingService, create_app

    class Broken(BatchingService):
        def click(self, image: np.ndarray, **prompt: Any) -> Any:
            raise RuntimeError("boom")

    service = Broken(segmenter, name="broken")
    with kit.LiveServer(create_app(service)) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/click", json={"image": _b64(kit.small_image(7)), "points": [[1, 1]]})
        assert r.status_code == 500
        assert "RuntimeError: boom" in r.json()["error"]
        assert c.get("/health").json()["status"] == "UP"


def test_token_required_except_health(kit: Any, segmenter: Any) -> None:
    from textseg.serve import BatchingService, create_app

    with BatchingService(segmenter, name="t") as service:
        app = create_app(service, token="s3cret")  # the app closes the service on shutdown
        with kit.LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=HANG_S) as c:
            assert c.get("/health").status_code == 200
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = c.get("/models", headers=headers)
                assert r.status_code == 401, headers
                assert r.json()["error"].startswith("authorization: expected")
                assert r.headers["www-authenticate"] == "Bearer"
            r = c.post("/count", json={"classes": ["a"]})  # refused before the body is read
            assert r.status_code == 401
            assert c.get("/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
            basic = base64.b64encode(b"labelstudio:s3cret").decode()
            assert c.get("/models", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_label_studio_router_included_when_present(
    kit: Any, segmenter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    from fastapi import APIRouter

    import textseg.serve
    from textseg.serve import BatchingService, create_app

    seen = []

    def make_router(service: Any) -> APIRouter:
        seen.append(service)
        router = APIRouter()
        router.add_api_route("/setup", lambda: {"model_version": "x"}, methods=["POST"])
        return router

    fake = types.ModuleType("textseg.serve.labelstudio")
    fake.make_router = make_router
    monkeypatch.setitem(sys.modules, "textseg.serve.labelstudio", fake)
    monkeypatch.setattr(textseg.serve, "labelstudio", fake, raising=False)
    service = BatchingService(segmenter, name="ls")
    with kit.LiveServer(create_app(service, token="t")) as server:
        r = httpx.post(f"{server.url}/setup", headers={"Authorization": "Bearer t"})
        assert r.json() == {"model_version": "x"}
        assert httpx.post(f"{server.url}/setup").status_code == 401  # the token guards it too
    assert seen == [service]
