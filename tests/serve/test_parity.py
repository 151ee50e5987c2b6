"""/segment answers exactly what ``textseg segment`` writes (same preset, --tiny, seed, image,
classes): the same COCO RLEs, classes and scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from textseg.cli import main

from .._limits import HANG_S

IMAGE = "000000000009.jpg"
CLASSES = ["bowl", "broccoli"]


def test_segment_route_equals_cli(served: Any, data_dir: Path, tmp_path: Path) -> None:
    image = data_dir / "coco-dev" / "images" / IMAGE
    out = tmp_path / "out"
    argv = ["segment", str(image), "--preset", "grounded-sam", "--tiny", "--seed", "0"]
    assert main([*argv, *(a for c in CLASSES for a in ("-c", c)), "--out", str(out)]) == 0
    cli = json.loads((out / "annotations.json").read_text())["annotations"]
    with httpx.Client(base_url=served.url, timeout=HANG_S) as c:
        r = c.post(
            "/segment",
            files={"image": (IMAGE, image.read_bytes(), "image/jpeg")},
            data={"classes": CLASSES},
        )
    assert r.status_code == 200, r.text
    served_instances = r.json()["instances"]
    assert len(cli) == len(served_instances) > 0
    for ann, inst in zip(cli, served_instances):
        assert inst["mask"] == ann["segmentation"]
        assert inst["class_name"] == CLASSES[ann["category_id"] - 1]
        assert inst["bbox"] == ann["bbox"]
        assert inst["score"] == pytest.approx(ann["score"], abs=1e-6)
