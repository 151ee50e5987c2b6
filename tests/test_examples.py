"""The example scripts run as a user runs them (a fresh process, the tiny models) and write
what they say they write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from textseg.io import load_counts_csv

from ._limits import HANG_S

REPO = Path(__file__).resolve().parents[1]


def _example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_segment_and_annotate(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dog.jpg"
    image = str(data_dir / "demo" / "dog.jpg")
    proc = _example(
        "segment_and_annotate.py", image, "dog", "frisbee", "--preset", "tiny-test",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert out.stat().st_size > 0
    assert "'dog':" in proc.stdout and "total" in proc.stdout


def test_label_and_count_folder_resumes(data_dir: Path, tmp_path: Path) -> None:
    folder = data_dir / "coco-dev" / "images"
    out = tmp_path / "out"
    for limit in ("2", "3"):  # the second run labels one more image and keeps the first two
        proc = _example(
            "label_and_count_folder.py", str(folder), str(out), "person", "dog",
            "--preset", "tiny-test", "--limit", limit, cwd=tmp_path,
        )  # fmt: skip
    assert len(proc.stdout.splitlines()) == 1  # only the new image was segmented
    coco = json.loads((out / "annotations.json").read_text())
    names = sorted(p.name for p in folder.glob("*.jpg"))[:3]
    assert sorted(im["file_name"] for im in coco["images"]) == names
    assert [c["name"] for c in coco["categories"]] == ["person", "dog"]
    counts = load_counts_csv(out / "counts.csv")
    assert sorted(counts) == names
    per_image = {im["file_name"]: 0 for im in coco["images"]}
    by_id = {im["id"]: im["file_name"] for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[by_id[ann["image_id"]]] += 1
    assert {k: sum(v.values()) for k, v in counts.items()} == per_image


@pytest.mark.parametrize("model", ["sam-vit-tiny-test"])
def test_click_refinement(data_dir: Path, tmp_path: Path, model: str) -> None:
    image = str(data_dir / "demo" / "dog.jpg")
    proc = _example(
        "click_refinement.py", image, "300", "200", "420", "120", "--model", model, cwd=tmp_path
    )
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("encoded once")
    assert any(line.startswith("click 2:") for line in lines)
    assert "misses=1" in proc.stdout  # one encoder run for both clicks
