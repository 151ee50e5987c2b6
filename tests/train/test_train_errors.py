"""``textseg train`` on bad input: one line naming what is wrong, never a traceback, never a
silent default, never a claimed file that is not there."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from textseg.cli import main
from textseg.train import train_specialist

from .test_resume import killed_at
from .test_specialist import subset


@pytest.fixture(scope="module")
def killed(ann: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed after its first epoch's checkpoint and config."""
    out = tmp_path_factory.mktemp("killed") / "run"
    options = dict(tiny=True, epochs=2, images=data_dir / "coco-dev" / "images", progress=False)
    assert killed_at("config", train_specialist, ann, out, **options) == 137
    return out


@pytest.fixture(scope="module")
def ann(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return subset(data_dir, tmp_path_factory.mktemp("errors"), 3)


def train(ann: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(ann), "--images", str(data_dir / "coco-dev" / "images"),
            "--out", str(out), "--tiny", "--epochs", "1", "--quiet", *extra]  # fmt: skip


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


class Planted:
    """Unpickling it would run code (it never is: weights_only)."""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda p: torch.save({"x": argparse.Namespace(a=1)}, p), "not a checkpoint textseg"),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), "not a readable checkpoint"),
        (lambda p: p.write_bytes(b""), "not a readable checkpoint"),
        (lambda p: torch.save({"model": {}, "epoch": 1}, p), "net_settings"),
    ],
    ids=["pickled-object", "truncated-zip", "empty", "other-dict"],
)
def test_bad_checkpoint_is_named_in_one_line(
    content, expected, ann, killed, data_dir, tmp_path, capsys
):
    out = Path(shutil.copytree(killed, tmp_path / "run"))
    checkpoint = out / "checkpoints" / "last.pt"
    content(checkpoint)
    assert main(train(ann, data_dir, out, "--resume", "--epochs", "2")) != 0
    err = one_line(capsys)
    assert str(checkpoint) in err and expected in err, err
    assert "weights_only" not in err


def test_bad_config_is_named_in_one_line(ann, killed, data_dir, tmp_path, capsys):
    out = Path(shutil.copytree(killed, tmp_path / "run"))
    (out / "config.json").write_text("{not json")
    assert main(train(ann, data_dir, out, "--resume", "--epochs", "2")) != 0
    err = one_line(capsys)
    assert str(out / "config.json") in err, err


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--batch-size", "0", "positive integer"),
        ("--input-size", "0", "positive integer"),
        ("--input-size", "20000", "4096"),
        ("--epochs", "0", "positive integer"),
        ("--patience", "-1", "positive integer"),
        ("--lr", "nan", "finite"),
        ("--val-fraction", "1", "[0, 1)"),
    ],
)
def test_bad_numbers_are_refused(option, value, expected, ann, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(train(ann, data_dir, tmp_path / "out", option, value))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert option in err and expected in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"batch_size": 0}, ValueError, "batch_size: expected a positive integer"),
        ({"input_size": 0}, ValueError, "input_size: expected a positive integer"),
        ({"input_size": 20000}, ValueError, "4096"),
    ],
)
def test_bad_numbers_in_the_library(kwargs, error, expected, ann, data_dir, tmp_path):
    with pytest.raises(error, match=expected.replace("(", r"\(")):
        train_specialist(ann, tmp_path / "out", tiny=True, images=data_dir / "coco-dev" / "images",
                         **kwargs)  # fmt: skip


def test_unknown_arch_lists_the_specialists_only(ann, data_dir, tmp_path, capsys):
    assert main(train(ann, data_dir, tmp_path / "out", "--arch", "segformr-b0")) != 0
    err = one_line(capsys)
    assert "segformer-b0" in err and "maskrcnn-r50-fpn" in err, err
    assert "sam-vit-b" not in err and "clip" not in err, err


def test_dataset_without_annotations_is_refused(ann, data_dir, tmp_path, capsys):
    coco = json.loads(ann.read_text())
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**coco, "annotations": []}))
    assert main(train(empty, data_dir, tmp_path / "out")) != 0
    err = one_line(capsys)
    assert "no annotation" in err and str(empty) in err, err


def test_non_json_dataset_is_named(data_dir, tmp_path, capsys):
    bad = tmp_path / "notes.json"
    bad.write_text("this is not JSON")
    assert main(train(bad, data_dir, tmp_path / "out")) != 0
    err = one_line(capsys)
    assert str(bad) in err and "JSON" in err, err


def test_held_out_images_without_annotations_still_save_the_model(
    ann, data_dir, tmp_path, capsys, caplog
):
    coco = json.loads(ann.read_text())
    val = tmp_path / "val.json"
    val.write_text(json.dumps({**coco, "annotations": []}))
    out = tmp_path / "out"
    code = main(train(ann, data_dir, out, "--arch", "maskrcnn-r50-fpn", "--val", str(val),
                      "--val-images", str(data_dir / "coco-dev" / "images")))  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"saved {out / 'model.safetensors'}" in printed.out
    assert (out / "model.safetensors").is_file()
    assert "have no annotation" in caplog.text
