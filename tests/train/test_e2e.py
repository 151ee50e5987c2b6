"""The data engine end to end, offline with tiny models, through the command line:
``textseg label DIR --out L --review-queue && textseg train L --out M && textseg eval DATASET
--specialist M``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from textseg.cli import main


def test_label_train_eval(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    full = json.loads((data_dir / "coco-dev" / "annotations.json").read_text())
    images = full["images"][:8]
    ids = {im["id"] for im in images}
    dataset = tmp_path / "dataset.json"
    dataset.write_text(
        json.dumps(
            {**full, "images": images, "annotations": [
                a for a in full["annotations"] if a["image_id"] in ids
            ]}
        )
    )  # fmt: skip
    folder = tmp_path / "photos"
    folder.mkdir()
    for im in images[:6]:
        shutil.copy(data_dir / "coco-dev" / "images" / im["file_name"], folder)
    labels, model, report = tmp_path / "L", tmp_path / "M", tmp_path / "E"

    assert main(["label", str(folder), "-c", "person", "-c", "dog", "-c", "giraffe", "--tiny",
                 "--out", str(labels), "--quiet", "--review-queue"]) == 0  # fmt: skip
    with open(labels / "review_queue.csv", newline="") as f:
        queue = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in queue] == list(range(1, 7))
    scored = [float(r["uncertainty"]) for r in queue if r["uncertainty"]]
    assert scored == sorted(scored, reverse=True)

    # No --images: the label run recorded the folder it labelled (info.image_root).
    assert main(["train", str(labels), "--arch", "segformer-b0",
                 "--tiny", "--epochs", "2", "--val-fraction", "0.34", "--out", str(model),
                 "--quiet"]) == 0  # fmt: skip
    config = json.loads((model / "config.json").read_text())
    assert config["classes"] == ["person", "dog", "giraffe"] and len(config["history"]["val_miou"])
    assert set(config["provenance"]) <= {"unreviewed"}  # machine labels: nobody reviewed them
    capsys.readouterr()

    assert main(["eval", str(dataset), "--images", str(data_dir / "coco-dev" / "images"),
                 "--specialist", str(model), "--tiny", "--out", str(report),
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    for row in ("sam_gt_boxes", "specialist_gt", "specialist_textseg"):
        assert f"{row}: mIoU" in out
    saved = json.loads((report / "report.json").read_text())["protocols"]["specialist"]
    assert saved["images"] == len(config["settings"]["val_files"]) == 2
    assert set(saved["per_class"]) <= {c["name"] for c in full["categories"]}
    assert saved["metrics"]["train_s_specialist_gt"] > 0
    assert (report / "per_class.png").is_file() and (report / "report.md").is_file()
