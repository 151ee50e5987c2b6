"""The files textseg writes, opened by the tools people open them with.

pycocotools (COCO, loadRes, COCOeval), supervision (from_coco, from_yolo; the latest here and the
floor version of pyproject in a subprocess), ultralytics (check_det_dataset, YOLODataset),
datumaro (coco_instances) and label-studio-sdk (labeling config validation, brush RLE decoding).
Each compares the masks it reads with the ground truth textseg wrote, and the class names.

Two sources: coco-dev's ground-truth masks written through the same exporter every command
uses (:func:`textseg.io.export.write_exports`), which shows the masks survive each format; and
a real ``textseg segment --tiny`` run with every format, which shows the files of the CLI open.

The clients are test extras; a missing one skips its test locally, and fails it in CI
(``TEXTSEG_REQUIRE_CLIENTS=1``), as the browser tests do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from textseg.cli import main
from textseg.io.coco import load_coco
from textseg.io.coco_writer import CocoWriter
from textseg.io.export import flat_names, write_exports

from .._clients import REQUIRED, client

REPO = Path(__file__).resolve().parents[2]
FILES = ["000000000009.jpg", "000000000030.jpg", "000000000036.jpg", "000000000049.jpg"]


def _strict_json(path: Path):
    def refuse(token: str):
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


# ---------------------------------------------------------------------- ground truth, exported
@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir: Path):
    """coco-dev's masks for FILES written through CocoWriter + write_exports (every format)."""
    out = tmp_path_factory.mktemp("exported")
    gt = load_coco(data_dir / "coco-dev" / "annotations.json")
    records = {im["file_name"]: im for im in gt.images}
    truth = {}
    with CocoWriter(out / "annotations.json", gt.classes) as writer:
        for name in FILES:
            im = records[name]
            dets = gt.detections[int(im["id"])]
            dets.confidence = np.linspace(0.9, 0.5, len(dets)).astype(np.float32)
            writer.add(name, int(im["width"]), int(im["height"]), dets)
            truth[name] = dets
    write_exports(
        out / "annotations.json",
        out,
        formats=["yolo", "png", "labelstudio", "cvat"],
        images_root=data_dir / "coco-dev" / "images",
        val_fraction=0.5,
    )
    return out, truth, gt.classes


def test_pycocotools_reads_annotations_and_results(exported):
    out, truth, _classes = exported
    coco = COCO(str(out / "annotations.json"))
    results = coco.loadRes(str(out / "results.json"))
    ev = COCOeval(coco, results, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the results are the annotations themselves
    for image in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        np.testing.assert_array_equal(masks, truth[image["file_name"]].mask)


@pytest.mark.parametrize("split_source", ["coco", "yolo"])
def test_supervision_latest_reads_coco_and_yolo(exported, data_dir, split_source):
    out, truth, classes = exported
    if split_source == "coco":
        ds = sv.DetectionDataset.from_coco(
            str(data_dir / "coco-dev" / "images"), str(out / "annotations.json"), force_masks=True
        )
        assert ds.classes == classes
        for path, _, dets in ds:
            want = truth[Path(path).name]
            np.testing.assert_array_equal(dets.mask, want.mask)
            assert [ds.classes[k] for k in dets.class_id] == list(want.data["class_name"])
        assert len(ds) == len(FILES)
        return
    flat = flat_names(FILES)
    seen = 0
    for split in ("train", "val"):
        images = out / "yolo" / "images" / split
        if not images.is_dir() or not any(images.iterdir()):
            continue
        ds = sv.DetectionDataset.from_yolo(
            str(images), str(out / "yolo" / "labels" / split), str(out / "yolo" / "data.yaml")
        )
        assert ds.classes == classes
        for path, _, dets in ds:
            name = next(n for n in FILES if flat[n] == Path(path).name)
            want = truth[name]
            ious = [_iou(a, b) for a, b in zip(dets.mask, want.mask)]
            assert len(ious) == len(want) and np.mean(ious) >= 0.97 and min(ious) >= 0.8
            seen += 1
    assert seen == len(FILES)


def test_ultralytics_checks_and_reads_the_yolo_dataset(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    client("ultralytics")
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset, polygon2mask

    out, truth, classes = exported
    moved = tmp_path / "moved"
    shutil.copytree(out / "yolo", moved)  # relative paths: a moved dataset stays whole
    data = check_det_dataset(str(moved / "data.yaml"))
    assert [data["names"][k] for k in range(len(classes))] == classes
    flat = flat_names(FILES)
    seen = 0
    for split in ("train", "val"):
        ds = YOLODataset(img_path=data[split], data=data, task="segment", augment=False)
        for label in ds.labels:
            name = next(n for n in FILES if flat[n] == Path(label["im_file"]).name)
            assert Path(label["im_file"]).is_relative_to(moved)
            want = truth[name]
            h, w = label["shape"]
            masks = [
                polygon2mask((h, w), [s * [w, h]], color=1).astype(bool) for s in label["segments"]
            ]
            ious = [_iou(a, b) for a, b in zip(masks, want.mask)]
            assert len(ious) == len(want) and np.mean(ious) >= 0.97
            assert [classes[int(k)] for k in label["cls"].ravel()] == list(want.data["class_name"])
            seen += 1
    assert seen == len(FILES)


def test_datumaro_imports_the_cvat_layout(exported):
    datumaro = client("datumaro")
    out, truth, _classes = exported
    dataset = datumaro.Dataset.import_from(str(out / "cvat"), "coco_instances")
    labels = dataset.categories()[datumaro.AnnotationType.label]
    flat = flat_names(FILES)
    items = list(dataset)
    assert len(items) == len(FILES)
    for item in items:
        name = next(n for n in FILES if Path(flat[n]).stem == Path(item.id).name)
        assert Path(item.media.path).is_file()
        want = truth[name]
        h, w = want.mask.shape[1:]
        polygons = [a for a in item.annotations if a.type == datumaro.AnnotationType.polygon]
        # One annotation (group) per instance: parts of one object share a group.
        by_group: dict[int, list] = {}
        for a in polygons:
            by_group.setdefault(a.group or a.id, []).append(a)
        assert len(by_group) == len(want)
        # Groups are the COCO annotation ids, written in the instances' order.
        groups = [by_group[k] for k in sorted(by_group)]
        for parts, mask, name_ in zip(groups, want.mask, want.data["class_name"]):
            rles = mask_utils.frPyObjects([list(map(float, p.points)) for p in parts], h, w)
            got = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
            assert _iou(got, mask) >= 0.99
            assert labels[parts[0].label].name == name_


def test_label_studio_sdk_validates_and_decodes_the_tasks(exported):
    client("label_studio_sdk")
    from label_studio_sdk.converter.brush import decode_rle
    from label_studio_sdk.label_interface import LabelInterface

    out, truth, _classes = exported
    interface = LabelInterface((out / "labelstudio" / "config.xml").read_text())
    tasks = _strict_json(out / "labelstudio" / "tasks.json")
    assert len(tasks) == len(FILES)
    for task in tasks:
        # /data/local-files/?d=images/<file_name>: the path names the labelled folder.
        name = task["data"]["image"].removeprefix("/data/local-files/?d=images/")
        want = truth[name]
        (prediction,) = task["predictions"]
        assert interface.validate_prediction(prediction, return_errors=True) == []
        assert len(prediction["result"]) == len(want)  # one region per object, parts and all
        for region, mask, name_ in zip(prediction["result"], want.mask, want.data["class_name"]):
            h, w = region["original_height"], region["original_width"]
            layer = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0
            np.testing.assert_array_equal(layer, mask)
            assert region["value"]["brushlabels"] == [name_]


def test_png_masks_and_class_index(exported):
    from textseg.io.png import load_index_png, load_instance_masks

    out, truth, _classes = exported
    flat = flat_names(FILES)
    for name in FILES:
        stem = Path(flat[name]).stem
        back = load_instance_masks(out / "masks" / "instances", stem=stem)
        np.testing.assert_array_equal(back.mask, truth[name].mask)
        index = load_index_png(out / "masks" / "index" / f"{stem}.png")
        # Pixel = class id + 1; a class hidden under others has no pixel left.
        assert set(index.data["class_name"]) <= set(truth[name].data["class_name"])
        assert index.mask.any(axis=(1, 2)).all()
    # The index PNGs are in their own folder: a <stem>_*.png glob finds instances only.
    assert not list((out / "masks" / "instances").glob("*index*"))


# ---------------------------------------------------------------------- supervision's floor
SV_FLOOR = "0.30.0"


def _floor_path() -> Path | None:
    """Where `make clients` installs supervision's floor version (pip --target)."""
    path = REPO / ".venv" / f"supervision-{SV_FLOOR}"
    return path if (path / "supervision").is_dir() else None


def test_supervision_floor_version_reads_coco_and_yolo(exported, data_dir):
    floor = _floor_path()
    if floor is None:
        if REQUIRED:
            pytest.fail(f"supervision {SV_FLOOR} not installed in {REPO / '.venv'}: make clients")
        pytest.skip(f"supervision {SV_FLOOR} not installed: make clients")
    out, truth, _classes = exported
    expected = {name: len(truth[name]) for name in FILES}
    flat = flat_names(FILES)
    code = f"""
import json, sys
import supervision as sv
assert sv.__version__ == {SV_FLOOR!r}, sv.__version__
ds = sv.DetectionDataset.from_coco({str(data_dir / "coco-dev" / "images")!r},
                                   {str(out / "annotations.json")!r}, force_masks=True)
coco = {{p.rsplit("/", 1)[-1]: int(d.mask.sum()) for p, _, d in ds}}
yolo = {{}}
for split in ("train", "val"):
    ds = sv.DetectionDataset.from_yolo({str(out / "yolo" / "images")!r} + "/" + split,
                                       {str(out / "yolo" / "labels")!r} + "/" + split,
                                       {str(out / "yolo" / "data.yaml")!r})
    yolo.update({{p.rsplit("/", 1)[-1]: len(d) for p, _, d in ds}})
print(json.dumps({{"coco": coco, "yolo": yolo}}))
"""
    env = {**os.environ, "PYTHONPATH": str(floor)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["coco"] == {n: int(truth[n].mask.sum()) for n in FILES}
    assert got["yolo"] == {flat[n]: expected[n] for n in FILES}


# ---------------------------------------------------------------------- the CLI's own files
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, data_dir: Path):
    """``textseg segment --tiny`` with every format on coco-dev images, two of them sharing a
    file name in different folders."""
    work = tmp_path_factory.mktemp("cli")
    images = []
    for sub, name in (("a", FILES[0]), ("b", FILES[1]), ("c", FILES[2])):
        (work / "in" / sub).mkdir(parents=True)
        target = work / "in" / sub / ("x.jpg" if sub != "c" else name)
        shutil.copyfile(data_dir / "coco-dev" / "images" / name, target)
        images.append(target)
    out = work / "out"
    argv = ["segment", *map(str, images), "-c", "bowl", "-c", "person", "--tiny"]
    argv += ["--box-threshold", "0", "--out", str(out), "--val-fraction", "0.5"]
    for fmt in ("coco-polygons", "yolo", "png", "labelstudio", "cvat"):
        argv += ["--format", fmt]
    assert main(argv) == 0
    return work, out, images


def test_every_json_the_cli_writes_is_strict(cli_run):
    _, out, _ = cli_run
    files = list(out.rglob("*.json"))
    assert {f.name for f in files} >= {
        "annotations.json",
        "results.json",
        "counts.json",
        "tasks.json",
        "instances_default.json",
    }
    for path in files:
        _strict_json(path)


def test_cli_files_name_existing_distinct_images(cli_run):
    work, out, _images = cli_run
    coco = COCO(str(out / "annotations.json"))
    names = sorted(im["file_name"] for im in coco.dataset["images"])
    assert names == sorted(["a/x.jpg", "b/x.jpg", f"c/{FILES[2]}"])
    for name in names:
        assert (work / "in" / name).is_file()
        assert (out / "annotated" / name).is_file()
    # supervision finds every image from the common folder of the inputs.
    ds = sv.DetectionDataset.from_coco(
        str(work / "in"), str(out / "annotations.json"), force_masks=True
    )
    assert len(ds) == 3
    coco.loadRes(str(out / "results.json"))


def test_cli_yolo_trains_as_written(cli_run, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    client("ultralytics")
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    _, out, _ = cli_run
    data = check_det_dataset(str(out / "yolo" / "data.yaml"))
    total = 0
    for split in ("train", "val"):
        total += len(YOLODataset(img_path=data[split], data=data, task="segment").labels)
    assert total == 3
    coco = load_coco(out / "annotations.json")
    assert sum(len(coco.detections[int(im["id"])]) for im in coco.images) > 0


def test_rerun_into_the_same_folder_must_say_how(cli_run, capsys):
    _work, out, images = cli_run
    before = _strict_json(out / "annotations.json")
    argv = ["segment", str(images[0]), "-c", "bowl", "-c", "person", "--tiny", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and "--append" in err[0]
    assert _strict_json(out / "annotations.json") == before
