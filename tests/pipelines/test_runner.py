"""The runner behind ``textseg segment`` and ``textseg label``: the output-folder contract
(lock, resume safety), kill safety after each write, ground truth with exports, up-front
checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from textseg.cli import main
from textseg.io.folder import claim_output
from textseg.pipelines import runner

from .._clients import client
from .._limits import HANG_S

FILES = ("000000000009.jpg", "000000000030.jpg", "000000000036.jpg")


@pytest.fixture()
def folder(data_dir: Path, tmp_path: Path) -> Path:
    """Three small coco-dev images (downscaled: the tiny models cost the same, the rest less)."""
    root = tmp_path / "imgs"
    root.mkdir()
    for name in FILES:
        with Image.open(data_dir / "coco-dev" / "images" / name) as im:
            im = im.convert("RGB")
            im.thumbnail((128, 128))
            im.save(root / name, quality=90)
    return root


def _label(folder: Path, out: Path, *extra: str) -> list[str]:
    argv = ["label", str(folder), "-c", "bowl", "-c", "vase", "--preset", "tiny-test"]
    argv += ["--box-threshold", "0", "--save-every", "0", "--quiet", "--out", str(out)]
    return [*argv, *extra]


# ---------------------------------------------------------------------- the output folder
def test_segment_append_while_another_run_holds_the_folder_is_refused(folder, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["segment", str(folder / FILES[0]), "-c", "bowl", "--tiny", "--out", str(out)]
    with claim_output(out, "segment", owned=runner.RUN_OWNED, mode="append"):
        assert main([*argv, "--append"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "being written by another textseg run" in err[0], err
    assert not (out / "annotations.json").exists()  # the refused run wrote nothing
    assert main([*argv, "--append"]) == 0  # the lock is free again


def test_label_into_another_folders_results_is_refused(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_label(folder, out)) == 0
    before = (out / "annotations.json").read_bytes()
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    assert main(_label(other, out)) == 1  # same file names, another folder
    assert "holds the results of images under" in capsys.readouterr().err
    # Same folder, but an image changed since it was labelled: not skipped as done.
    with Image.open(folder / FILES[1]) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / FILES[1], quality=90)
    assert main(_label(folder, out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{FILES[1]} is not the image labelled there" in err[0]
    assert (out / "annotations.json").read_bytes() == before
    assert main(_label(folder, out, "--overwrite")) == 0


# ---------------------------------------------------------------------- kill safety
#: label's writes, in order (runner module docstring); NAME:K is the K-th write of NAME.
KILL_POINTS = ("manifest", "annotations:2", "counts:3", "errors:4", "exports", "complete")


@pytest.fixture()
def reference(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "reference"
    assert main(_label(folder, out)) == 0
    return out


def _files(out: Path) -> dict[str, object]:
    """The run's files; JSON parsed with its floats approximate (the killed subprocess and this
    process may differ in the last bits of a score)."""
    files: dict[str, object] = {n: (out / n).read_bytes() for n in ("counts.csv", "errors.csv")}
    for name in ("annotations.json", "results.json", "counts.json"):
        files[name] = _approx(json.loads((out / name).read_text()))
    return files


def _approx(value: object) -> object:
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-4, abs=1e-5)
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return value


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_after_any_write_resumes_to_the_same_files(folder, reference, tmp_path, point):
    out = tmp_path / "out"
    env = {**os.environ, runner.KILL_AFTER_ENV: point, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "textseg.cli", *_label(folder, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert proc.returncode == 137, proc.stderr  # stopped where asked, as by SIGKILL
    assert main(_label(folder, out)) == 0
    assert _files(out) == _files(reference)
    manifest = json.loads((out / ".textseg.json").read_text())
    assert manifest["command"] == "label"


# ---------------------------------------------------------------------- ground truth
def _ground_truth(tmp_path: Path) -> Path:
    """A user's COCO file whose categories start at id 0 and whose names carry a trailing
    space and a full stop, as real files do."""
    gt = {
        "images": [
            {"id": 40 + i, "file_name": name, "width": 640, "height": 480}
            for i, name in enumerate(FILES[:2])
        ],
        "annotations": [],
        "categories": [
            {"id": 0, "name": "bowl"},
            {"id": 3, "name": "person "},
            {"id": 7, "name": "teddy bear."},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def test_segment_with_ground_truth_exports_yolo_and_cvat_with_their_images(
    folder, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    argv = [
        "segment",
        *(str(folder / n) for n in FILES[:2]),
        "--coco",
        str(_ground_truth(tmp_path)),
    ]
    argv += ["-c", "bowl", "-c", "person ", "-c", "teddy bear.", "--tiny", "--box-threshold", "0"]
    argv += ["--out", str(out), "--format", "yolo", "--format", "cvat"]
    assert main(argv) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(im["id"] for im in coco["images"]) == [40, 41]
    assert sorted(c["id"] for c in coco["categories"]) == [0, 3, 7]
    assert coco["info"]["image_root"] == str(folder.resolve())
    assert coco["annotations"]  # box threshold 0: the tiny model finds something

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    client("ultralytics")
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(out / "yolo" / "data.yaml"))
    assert len(YOLODataset(img_path=data["train"], data=data, task="segment").labels) == 2
    sv = client("supervision")
    yolo = sv.DetectionDataset.from_yolo(
        str(out / "yolo" / "images" / "train"),
        str(out / "yolo" / "labels" / "train"),
        str(out / "yolo" / "data.yaml"),
    )
    assert len(yolo) == 2

    datumaro = client("datumaro")
    dataset = datumaro.Dataset.import_from(str(out / "cvat"), "coco_instances")
    assert len(dataset) == 2
    annotations = [a for item in dataset for a in item.annotations]
    assert len(annotations) >= len(coco["annotations"])
    assert all(a.label is not None for a in annotations)  # category id 0 kept its label
    with zipfile.ZipFile(out / "cvat" / "coco-1.0.zip") as archive:
        names = set(archive.namelist())
    assert "annotations/instances_default.json" in names
    assert {f"images/default/{n}" for n in FILES[:2]} <= names


def test_specialist_with_ground_truth_takes_the_classes_it_knows(
    folder, tmp_path, monkeypatch, capsys
):
    from textseg.train import specialist

    model = tmp_path / "specialist"
    model.mkdir()
    config = {"format": specialist.CONFIG_FORMAT, "classes": ["bowl", "teddy bear", "cat"]}
    (model / specialist.CONFIG).write_text(json.dumps(config))
    (model / specialist.WEIGHTS).write_bytes(b"")
    seen = {}

    def fake_run(plan, out, spec, **kwargs):
        seen["classes"] = plan.vocab.names
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_plan", fake_run)
    argv = ["segment", str(folder / FILES[0]), "--specialist", str(model)]
    argv += ["--coco", str(_ground_truth(tmp_path)), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main(argv)
    assert seen["classes"] == ["bowl", "teddy bear"]
    assert "dropped, the specialist does not know them: person" in capsys.readouterr().err


# ---------------------------------------------------------------------- up-front checks
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-c", "bowl", "--exemplar", "1,2,30,40:zebra"], "class 'zebra' is not one of"),
        (["-c", " ".join(["word"] * 80)], "more than CLIP's 77"),
    ],
)
def test_request_errors_fail_once_before_any_image(folder, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = ["segment", *(str(folder / n) for n in FILES), "--tiny", "--out", str(out), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (out / "annotations.json").exists()


def test_min_area_is_refused_with_one_line(folder, capsys):
    with pytest.raises(SystemExit) as info:
        main(["count", str(folder / FILES[0]), "-c", "bowl", "--tiny", "--min-area", "1.5"])
    assert info.value.code == 2
    assert "--min-area: expected an integer, got '1.5'" in capsys.readouterr().err
    from textseg.pipelines import TextSegmenter

    segmenter = TextSegmenter.from_preset("tiny-test")
    with pytest.raises(ValueError, match=r"min_area: expected an integer >= 0, got -1"):
        segmenter.segment(str(folder / FILES[0]), ["bowl"], min_area=-1)


# ---------------------------------------------------------------------- memory
def _live_tensor_bytes() -> int:
    import gc

    import torch

    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            try:
                storage = obj.untyped_storage()
            except (NotImplementedError, RuntimeError):
                continue
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def test_label_memory_does_not_grow_per_image(tmp_path: Path) -> None:
    import tracemalloc

    import numpy as np

    from textseg.pipelines import TextSegmenter
    from textseg.pipelines.labeling import label_folder
    from textseg.sam.cache import EmbeddingCache

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):  # traced allocations make each image slow: 20 are enough to see a trend
        blocks = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        Image.fromarray(np.kron(blocks, np.ones((16, 16, 1), np.uint8))).save(images / f"{i}.png")
    seen: list[tuple[int, int]] = []
    budget = 6 * 2**20  # a few tiny-model entries, embedding and decoder state together

    def factory() -> TextSegmenter:
        segmenter = TextSegmenter.from_preset("tiny-test", box_threshold=0.0)
        segmenter.sam.cache = EmbeddingCache(budget)
        segment = segmenter.segment

        def measured(*args, **kwargs):
            seen.append((tracemalloc.get_traced_memory()[0], _live_tensor_bytes()))
            return segment(*args, **kwargs)

        segmenter.segment = measured  # type: ignore[method-assign]
        return segmenter

    tracemalloc.start()
    try:
        report = label_folder(
            images, ["bowl"], tmp_path / "out", segmenter_factory=factory, progress=False
        )
    finally:
        tracemalloc.stop()
    assert report.labelled == 20 and len(seen) == 20
    python_growth = (seen[-1][0] - seen[5][0]) / 14
    assert python_growth < 40_000  # bytes per image: the writer's RLE records, no images
    tensors = [t for _, t in seen[1:]]
    assert max(tensors) - tensors[0] <= budget  # the cache's budget, not per image
