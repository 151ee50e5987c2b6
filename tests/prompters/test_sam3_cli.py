"""The new presets from the command line, offline with tiny models: ``sam3`` writes the same
files as the box presets; exemplars; ``textseg models`` shows SAM 3's licence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from textseg.cli import main


@pytest.fixture()
def image(data_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "dog.jpg"
    shutil.copy(data_dir / "demo" / "dog.jpg", target)
    return target


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _segment(image: Path, out: Path, preset: str, *extra: str) -> int:
    return main(
        [
            "segment",
            str(image),
            "-c",
            "dog",
            "-c",
            "red car",
            "--preset",
            preset,
            "--tiny",
            "--box-threshold",
            "0",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_sam3_writes_what_a_box_preset_writes(image, tmp_path) -> None:
    """The same command with sam3 and with a box preset (grounded-sam-hq, also new)."""
    for preset in ("grounded-sam-hq", "sam3"):
        assert _segment(image, tmp_path / preset, preset) == 0
        coco = COCO(str(tmp_path / preset / "annotations.json"))
        assert [c["name"] for c in coco.dataset["categories"]] == ["dog", "red car"]
        anns = coco.dataset["annotations"]
        assert anns and all(a["area"] > 0 and a["segmentation"]["counts"] for a in anns)
        assert all(coco.annToMask(a).sum() == a["area"] for a in anns)
        counts = json.loads((tmp_path / preset / "counts.json").read_text())
        assert counts["classes"] == ["dog", "red car"]
    assert _files(tmp_path / "sam3") == _files(tmp_path / "grounded-sam-hq")


def test_exemplar_option(image, tmp_path, capsys) -> None:
    out = tmp_path / "ex"
    code = _segment(
        image,
        out,
        "sam3",
        "--exemplar",
        "40,60,300,400:dog",
        "--exemplar",
        "neg:600,20,790,150:dog",
    )
    assert code == 0 and (out / "annotations.json").is_file()
    capsys.readouterr()
    assert _segment(image, tmp_path / "bad", "sam3", "--exemplar", "1,2,3") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "textseg: error: exemplar: expected [neg:]X0,Y0,X1,Y1[:CLASS] (pixels, e.g. "
        "10,20,200,220:dog), got '1,2,3'"
    ]
    assert _segment(image, tmp_path / "bad2", "tiny-test", "--exemplar", "1,2,30,40:dog") == 1
    assert "box exemplars are a SAM 3 prompt" in capsys.readouterr().err


def test_models_show_the_sam_licence(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("sam3", "sam3-tracker", "sam3-litetext-s0"):
        assert rows[name]["license"] == "SAM License", name
    for name in ("sam-hq-vit-b", "hf-sam-hq-vit-huge"):
        assert rows[name]["license"] == "Apache-2.0", name
    assert rows["sam3-tiny-test"]["status"] == "test"
