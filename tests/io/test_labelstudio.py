"""Label Studio tasks name their images where Label Studio serves them (files only; the real
server's round trip is tests/io/test_labelstudio_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from textseg.cli import main
from textseg.io.coco import load_coco
from textseg.io.coco_writer import CocoWriter
from textseg.io.export import write_exports
from textseg.io.labelstudio import image_urls, region

FILES = ["000000000009.jpg", "000000000030.jpg"]


@pytest.fixture
def labelled(tmp_path: Path, data_dir: Path) -> Path:
    """A COCO file of two coco-dev images whose folder is tmp/photos/set."""
    folder = tmp_path / "photos" / "set"
    folder.mkdir(parents=True)
    gt = load_coco(data_dir / "coco-dev" / "annotations.json")
    records = {im["file_name"]: im for im in gt.images}
    with CocoWriter(tmp_path / "out" / "annotations.json", gt.classes) as writer:
        for name in FILES:
            im = records[name]
            (folder / name).write_bytes((data_dir / "coco-dev" / "images" / name).read_bytes())
            writer.add(name, int(im["width"]), int(im["height"]), gt.detections[int(im["id"])])
    return tmp_path


def _images(out: Path) -> list[str]:
    tasks = json.loads((out / "labelstudio" / "tasks.json").read_text())
    return [t["data"]["image"] for t in tasks]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "/data/local-files/?d=set/{}"),  # the folder's parent is the document root
        ({"labelstudio_root": "photos/.."}, "/data/local-files/?d=photos/set/{}"),
        ({"image_url_prefix": "http://images.example/a b/"}, "http://images.example/a b/{}"),
    ],
)
def test_tasks_name_images_under_the_document_root(labelled, options, expected):
    options = {k: str(labelled / v) if k == "labelstudio_root" else v for k, v in options.items()}
    write_exports(
        labelled / "out" / "annotations.json",
        labelled / "out",
        formats=["labelstudio"],
        images_root=labelled / "photos" / "set",
        **options,
    )
    assert _images(labelled / "out") == [expected.format(n) for n in FILES]


def test_cli_options_reach_the_tasks(labelled, monkeypatch):
    monkeypatch.chdir(labelled)
    folder = labelled / "photos" / "set"
    common = ["segment", *[str(folder / n) for n in FILES], "-c", "dog", "--preset", "tiny-test"]
    common += ["--format", "labelstudio"]
    assert main([*common, "--out", "a", "--labelstudio-root", str(labelled)]) == 0
    assert _images(labelled / "a") == [f"/data/local-files/?d=photos/set/{n}" for n in FILES]
    assert main([*common, "--out", "b", "--image-url-prefix", "https://h/x/"]) == 0
    assert _images(labelled / "b") == [f"https://h/x/{n}" for n in FILES]


def test_file_names_are_url_quoted():
    urls = image_urls(["a b/c#1.jpg"], images_root=None)
    assert urls == {"a b/c#1.jpg": "/data/local-files/?d=a%20b/c%231.jpg"}


@pytest.mark.parametrize(
    ("root", "prefix", "error"),
    [
        ("set", None, "expected a folder above the images' folder"),  # the folder itself
        ("elsewhere", None, "expected a folder above the images' folder"),
        ("photos", "http://h/", "expected a document root or a URL prefix, got both"),
    ],
)
def test_bad_roots_are_refused(tmp_path, root, prefix, error):
    folder = tmp_path / "photos" / "set"
    folder.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    root_path = folder if root == "set" else tmp_path / root
    with pytest.raises(ValueError, match=error):
        image_urls(["a.jpg"], images_root=folder, document_root=root_path, url_prefix=prefix)


def test_regions_in_label_studio_units():
    mask = np.zeros((10, 20), bool)
    mask[2:4, 5:9] = True
    mask[7:9, 15:17] = True  # a second part: two polygons, one brush region
    (brush,) = region("brushlabels", "cat", width=20, height=10, mask=mask, score=0.5)
    assert brush["value"]["brushlabels"] == ["cat"] and brush["score"] == 0.5
    polygons = region("polygonlabels", "cat", width=20, height=10, mask=mask)
    assert [p["value"]["points"] for p in polygons] == [
        [[25.0, 20.0], [25.0, 40.0], [45.0, 40.0], [45.0, 20.0]],
        [[75.0, 70.0], [75.0, 90.0], [85.0, 90.0], [85.0, 70.0]],
    ]
    (box,) = region("rectanglelabels", "cat", width=20, height=10, mask=mask)
    assert {k: box["value"][k] for k in ("x", "y", "width", "height")} == {
        "x": 25.0,
        "y": 20.0,
        "width": 60.0,
        "height": 70.0,
    }
    with pytest.raises(ValueError, match="expected brushlabels, polygonlabels or rect"):
        region("ellipselabels", "cat", width=20, height=10, mask=mask)


def test_brush_decoder_reads_label_studios_own_code():
    from label_studio_sdk.converter.brush import mask2rle

    from textseg.io.labelstudio import decode_brush, encode_brush

    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6  # short runs: Label Studio writes literal chunks
    np.testing.assert_array_equal(decode_brush(mask2rle(mask.astype(np.uint8) * 255), 37, 53), mask)
    np.testing.assert_array_equal(decode_brush(encode_brush(mask), 37, 53), mask)
    with pytest.raises(ValueError, match="expected 10x53x4 = 2120 values"):
        decode_brush(encode_brush(mask), 10, 53)
