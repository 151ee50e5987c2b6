"""The app's exports go through the writer every command uses, in every format of the CLI, and
open in the tools people open them with (as in ``tests/io/test_clients.py``).

The folder holds ``a.jpg`` and ``a.png`` (one stem, two images): layouts without folders must
keep them apart. The masks are known squares (:class:`Squares`), so every reader can be held to
them exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from textseg.app import EXPORT_DIR, EXPORT_FORMATS, AnnotationSession
from textseg.io.counts import load_counts_csv
from textseg.io.export import FORMATS
from textseg.io.png import load_instance_masks

from .._clients import client
from .app_writes import BOXES, Squares, square_masks

TWINS = ("a.jpg", "a.png")
CLASS = {"a.jpg": "dog", "a.png": "cat"}
FLAT = {"a.jpg": "a_jpg.jpg", "a.png": "a_png.png"}


@pytest.fixture
def twins(tmp_path: Path, data_dir: Path, core) -> AnnotationSession:
    """A folder with ``a.jpg`` and ``a.png``, every square accepted on each (dog on the JPEG,
    cat on the PNG), through the session API."""
    folder = tmp_path / "images"
    folder.mkdir()
    source = data_dir / "coco-dev" / "images"
    Image.open(source / "000000000009.jpg").save(folder / "a.jpg")
    Image.open(source / "000000000030.jpg").save(folder / "a.png")
    session = AnnotationSession(folder, segmenter=core, proposer=Squares())
    for name in TWINS:
        session.open(name)
        assert session.find_all(CLASS[name]) == len(BOXES)
        session.accept_all()
    return session


def _truth(session: AnnotationSession, name: str) -> np.ndarray:
    h, w = np.asarray(Image.open(session.folder / name)).shape[:2]
    return square_masks(h, w)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """The same masks, but for a pixel at the edges (IoU >= 0.97 each)."""
    assert got.shape == want.shape
    for a, b in zip(got, want):
        assert (a & b).sum() / (a | b).sum() >= 0.97


def test_the_app_offers_every_format_of_the_cli():
    assert EXPORT_FORMATS == FORMATS


def test_every_format_of_twin_stems_opens_in_the_real_readers(
    twins: AnnotationSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = twins.export(list(EXPORT_FORMATS))
    assert out == twins.folder / EXPORT_DIR
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "annotations.json",
            "results.json",
            "counts.csv",
            "counts.json",
            "yolo",
            "masks",
            "labelstudio",
            "cvat",
        ]
    )
    # COCO (polygons, asked for with coco-polygons) and the results list: pycocotools.
    coco = COCO(str(out / "annotations.json"))
    results = coco.loadRes(str(out / "results.json"))
    for image in coco.dataset["images"]:
        truth = _truth(twins, image["file_name"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert all(isinstance(a["segmentation"], list) for a in anns)  # polygons
        np.testing.assert_array_equal(np.stack([coco.annToMask(a) for a in anns]) > 0, truth)
        res = results.loadAnns(results.getAnnIds(imgIds=[image["id"]]))
        np.testing.assert_array_equal(np.stack([results.annToMask(a) for a in res]) > 0, truth)
        names = {coco.loadCats(a["category_id"])[0]["name"] for a in anns}
        assert names == {CLASS[image["file_name"]]}
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == list(TWINS)

    # supervision reads the COCO file against the app's folder, and the YOLO dataset.
    ds = sv.DetectionDataset.from_coco(
        str(twins.folder), str(out / "annotations.json"), force_masks=True
    )
    assert len(ds) == 2
    for path, _, dets in ds:
        # OpenCV fills pixel-edge polygons about a pixel fatter than pycocotools.
        _close(dets.mask, _truth(twins, Path(path).name))
    yolo = sv.DetectionDataset.from_yolo(
        str(out / "yolo" / "images" / "train"),
        str(out / "yolo" / "labels" / "train"),
        str(out / "yolo" / "data.yaml"),
    )
    assert sorted(Path(p).name for p, _, _ in yolo) == sorted(FLAT.values())
    for path, _, dets in yolo:
        name = next(n for n, f in FLAT.items() if f == Path(path).name)
        _close(dets.mask, _truth(twins, name))
        assert [yolo.classes[k] for k in dets.class_id] == [CLASS[name]] * len(BOXES)

    # PNG: one instance file per mask, named by the flat stems, and the class index.
    for name, flat in FLAT.items():
        back = load_instance_masks(out / "masks" / "instances", stem=Path(flat).stem)
        np.testing.assert_array_equal(back.mask, _truth(twins, name))
        assert (out / "masks" / "index" / f"{Path(flat).stem}.png").is_file()

    # CVAT / datumaro layout: COCO polygons next to the copied images.
    cvat = COCO(str(out / "cvat" / "annotations" / "instances_default.json"))
    for image in cvat.dataset["images"]:
        assert (out / "cvat" / "images" / "default" / image["file_name"]).is_file()
        assert len(cvat.getAnnIds(imgIds=[image["id"]])) == len(BOXES)
    assert sorted(im["file_name"] for im in cvat.dataset["images"]) == sorted(FLAT.values())

    # Label Studio: one task per image, brush masks of each square; the local-files path
    # starts with the folder's name (document root: the folder's parent).
    tasks = json.loads((out / "labelstudio" / "tasks.json").read_text())
    assert sorted(t["data"]["image"].rsplit("=", 1)[-1] for t in tasks) == [
        f"{twins.folder.name}/{name}" for name in TWINS
    ]
    assert (out / "labelstudio" / "config.xml").is_file()

    counts = load_counts_csv(out / "counts.csv")
    assert counts["a.jpg"]["dog"] == 3 and counts["a.png"]["cat"] == 3

    # ultralytics takes the YOLO dataset as written.
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    client("ultralytics")
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(out / "yolo" / "data.yaml"))
    labels = YOLODataset(img_path=data["train"], data=data, task="segment").labels
    assert sorted(Path(label["im_file"]).name for label in labels) == sorted(FLAT.values())


def test_label_studio_masks_decode(twins: AnnotationSession):
    client("label_studio_sdk")
    from label_studio_sdk.converter.brush import decode_rle

    out = twins.export("labelstudio")
    for task in json.loads((out / "labelstudio" / "tasks.json").read_text()):
        name = task["data"]["image"].rsplit("=", 1)[-1].removeprefix(f"{twins.folder.name}/")
        (prediction,) = task["predictions"]
        for region, want in zip(prediction["result"], _truth(twins, name)):
            h, w = region["original_height"], region["original_width"]
            np.testing.assert_array_equal(
                decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0, want
            )


def test_an_export_replaces_the_last_one_whole(twins: AnnotationSession):
    out = twins.export(["coco", "yolo"])
    assert (out / "yolo").is_dir()
    twins.delete(twins.annotations()[0]["id"])
    out = twins.export("coco")
    assert not (out / "yolo").exists()  # a stale yolo/ would disagree with annotations.json
    data = json.loads((out / "annotations.json").read_text())
    assert len(data["annotations"]) == 2 * len(BOXES) - 1
    assert all(isinstance(a["segmentation"], dict) for a in data["annotations"])  # RLE
    rle = data["annotations"][0]["segmentation"]
    assert mask_utils.decode({**rle, "counts": rle["counts"].encode()}).any()
    assert [p.name for p in twins.folder.iterdir() if p.name.startswith(".")] == []


def test_images_missing_from_the_folder_are_not_exported(twins: AnnotationSession, core):
    (twins.folder / "a.png").unlink()
    again = AnnotationSession(twins.folder, segmenter=core)
    out = again.export(["yolo", "cvat"], twins.folder.parent / "elsewhere")
    assert out == twins.folder.parent / "elsewhere"
    coco = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.jpg"]
    assert len(json.loads(again.path.read_text())["images"]) == 2  # the store keeps it


@pytest.mark.parametrize("formats", ["voc", ["coco", "pdf"], []])
def test_unknown_formats(twins: AnnotationSession, formats):
    with pytest.raises(ValueError, match=r"export: expected formats among \('coco', "):
        twins.export(formats)
