"""YOLO-seg through ultralytics: everything stays in --out, a killed run resumes from the copy
textseg verified (a planted pickle is never loaded), a finished run is never handed back.

Tiny: the YOLO test variant, 4 images at 64 px, one or two epochs.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from textseg.train import load_specialist, train_specialist

from .test_resume import killed_at
from .test_specialist import subset

pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def ann(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return subset(data_dir, tmp_path_factory.mktemp("yolo"), 4)


def options(data_dir: Path, epochs: int = 2) -> dict:
    return dict(arch="yolo11n-seg", tiny=True, epochs=epochs, input_size=64, progress=False,
                images=data_dir / "coco-dev" / "images")  # fmt: skip


@pytest.fixture(scope="module")
def killed(ann: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch run killed after its first epoch was recorded."""
    out = tmp_path_factory.mktemp("killed") / "run"
    assert killed_at("config", train_specialist, ann, out, **options(data_dir)) == 137
    return out


class Planted:
    """Unpickling it creates ``marker``: code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "ema": Planted(marker)}, path)


def epochs_logged(out: Path) -> list[int]:
    with open(out / "ultralytics" / "results.csv", newline="") as f:
        return [int(float(r["epoch"])) for r in csv.DictReader(f, skipinitialspace=True)]


def test_relative_out_keeps_everything_in_it(ann, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = train_specialist(ann, "rel", **options(data_dir, epochs=1))
    out = tmp_path / "rel"
    assert report.epochs == 1 and (out / "model.safetensors").is_file()
    assert (out / "ultralytics" / "weights" / "last.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]  # no runs/ beside it
    load_specialist(out)
    # A finished run is never handed back to ultralytics (no COCO8 download, no runs/).
    again = train_specialist(ann, "rel", **options(data_dir, epochs=1), resume=True)
    assert again.epochs == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["rel"]
    with pytest.raises(ValueError, match="is finished"):
        train_specialist(ann, "rel", **options(data_dir, epochs=3), resume=True)


def test_a_planted_last_pt_is_never_loaded(killed, ann, data_dir, tmp_path):
    out = Path(shutil.copytree(killed, tmp_path / "run"))
    marker = tmp_path / "code-ran"
    plant(out / "ultralytics" / "weights" / "last.pt", marker)
    report = train_specialist(ann, out, **options(data_dir), resume=True)
    assert not marker.exists()
    assert report.epochs == 2 and report.resumed_from == 1
    assert epochs_logged(out) == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "done" and len(config["history"]["train_loss"]) == 2


def test_a_planted_checkpoint_copy_is_refused(killed, ann, data_dir, tmp_path):
    out = Path(shutil.copytree(killed, tmp_path / "run"))
    marker = tmp_path / "code-ran"
    record = json.loads((out / "config.json").read_text())["checkpoint"]
    plant(out / record["file"], marker)
    with pytest.raises(ValueError, match="sha256"):
        train_specialist(ann, out, **options(data_dir), resume=True)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["settings", "weights#2", "checkpoint#2", "final"])
def test_killed_after_each_write_resumes(point, ann, data_dir, tmp_path):
    out = tmp_path / "run"
    assert killed_at(point, train_specialist, ann, out, **options(data_dir)) == 137
    report = train_specialist(ann, out, **options(data_dir), resume=True)
    assert report.epochs == 2 and epochs_logged(out) == [1, 2]  # no epoch logged twice
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "done" and len(config["history"]["train_loss"]) == 2
    assert json.loads((out / ".textseg.json").read_text())["complete"] is True
    load_specialist(out)
