"""The textseg command line: outputs on disk and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from textseg.cli import main

from ._limits import HANG_S


@pytest.fixture()
def images(data_dir: Path, tmp_path: Path) -> list[Path]:
    src = data_dir / "coco-dev" / "images"
    folder = tmp_path / "imgs"
    folder.mkdir()
    out = []
    for name in ("000000000009.jpg", "000000000030.jpg"):
        shutil.copy(src / name, folder / name)
        out.append(folder / name)
    return out


def test_segment_writes_coco_counts_and_annotated_images(images, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            *map(str, images),
            "-c",
            "bowl",
            "-c",
            "vase",
            "--preset",
            "tiny-test",
            "--box-threshold",
            "0",
            "--out",
            str(out),
            "--format",
            "yolo",
        ]
    )
    assert code == 0
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.dataset["images"]) == 2
    assert [c["name"] for c in coco.dataset["categories"]] == ["bowl", "vase"]
    for ann in coco.dataset["annotations"]:
        assert ann["segmentation"]["counts"] and ann["area"] > 0
    header = (out / "counts.csv").read_text().splitlines()[0]
    assert header.startswith("image")
    assert json.loads((out / "counts.json").read_text())["classes"] == ["bowl", "vase"]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(p.name for p in images)
    assert (out / "yolo" / "data.yaml").is_file()
    assert "encode" in capsys.readouterr().out


def test_count_table_and_json(images, capsys):
    assert main(["count", str(images[0]), "-c", "bowl", "--preset", "tiny-test", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table["images"]) == {str(images[0])} and "bowl" in table["totals"]
    assert main(["count", str(images[0]), "-c", "bowl", "--preset", "tiny-test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "bowl"] and lines[-1].startswith("total")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "textseg.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["segment", "missing.jpg", "-c", "dog", "--preset", "tiny-test"], "image not found"),
        (["segment", "{img}", "--preset", "tiny-test"], "no classes given"),
        (["segment", "{img}", "-c", "dog", "--preset", "nope"], "unknown preset 'nope'"),
        (
            ["segment", "{bad}", "-c", "dog", "--preset", "tiny-test", "--out", "{tmp}/o"],
            "no image could be segmented",
        ),
        (
            ["segment", "{img}", "-c", "dog", "--preset", "tiny-test", "--out", "{file}"],
            "CocoWriter|not a directory|Not a directory|exists|is a file",
        ),
        (["segment", "{img}", "-c", " ", "--preset", "tiny-test"], "classes\\[0\\]"),
    ],
)
def test_errors_are_one_line_and_nonzero(args, message, images, tmp_path):
    import re

    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(images[0].read_bytes()[:2000])
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = [a.format(img=images[0], bad=truncated, tmp=tmp_path, file=blocker) for a in args]
    proc = _run(*args, cwd=tmp_path)
    assert proc.returncode != 0
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("textseg: error")]
    assert len(err_lines) == 1, proc.stderr
    assert re.search(message, err_lines[0]), err_lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_image_in_a_batch_is_skipped(images, tmp_path, capsys):
    truncated = tmp_path / "imgs" / "truncated.jpg"
    truncated.write_bytes(images[0].read_bytes()[:2000])
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(images[0]),
            str(truncated),
            "-c",
            "bowl",
            "--preset",
            "tiny-test",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "skipped" in capsys.readouterr().err
    assert len(COCO(str(out / "annotations.json")).dataset["images"]) == 1


def test_models_lists_every_model(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sam-vit-tiny-test"]["present"] is True
    assert rows["sam-vit-tiny-test"]["status"] == "test"
    assert rows["sam-vit-b"]["present"] is False and rows["sam-vit-b"]["status"] == "published"
    assert rows["sam-vit-b"]["resolves_from"].startswith("not present; offline")
    adapter = rows["sam-vit-b+clip-vit-b-32-text-adapter"]
    assert adapter["status"] == "unpublished" and adapter["present"] is False
    assert "no published weights" in adapter["resolves_from"]


def test_models_says_a_file_with_the_wrong_checksum_will_be_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"a fine-tuned SAM, not the official one")
    monkeypatch.setenv("TEXTSEG_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TEXTSEG_CACHE", str(tmp_path / "cache"))
    assert main(["models", "--task", "sam", "--json"]) == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["sam-vit-b"]
    assert row["present"] is False
    assert "sha256 differs" in row["resolves_from"] and "refused" in row["resolves_from"]


def test_offline_default_preset_names_missing_files(images, tmp_path):
    proc = _run("segment", str(images[0]), "-c", "dog", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "sam_vit_b_01ec64.pth" in proc.stderr and "TEXTSEG_WEIGHTS" in proc.stderr


# ---------------------------------------------------------------------- re-runs, names, modes
def _segment(images, out, *extra: str) -> int:
    argv = ["segment", *map(str, images), "-c", "bowl", "--tiny", "--box-threshold", "0"]
    return main([*argv, "--out", str(out), *extra])


def test_append_replaces_an_image_and_overwrite_starts_again(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(images[:1], out) == 0
    assert _segment(images[:1], out) == 1  # neither --append nor --overwrite: refused
    assert "--overwrite" in capsys.readouterr().err
    assert _segment(images, out, "--append") == 0  # the first image again, and a second one
    coco = COCO(str(out / "annotations.json"))
    names = [im["file_name"] for im in coco.dataset["images"]]
    assert sorted(names) == sorted(p.name for p in images)  # replaced, never doubled
    ids = {a["id"] for a in coco.dataset["annotations"]}
    assert len(ids) == len(coco.dataset["annotations"])
    counts = (out / "counts.csv").read_text()
    assert all(p.name in counts for p in images)  # counts follow the COCO file, not the run
    coco.loadRes(str(out / "results.json"))
    assert _segment(images[1:], out, "--overwrite") == 0
    coco = COCO(str(out / "annotations.json"))
    assert [im["file_name"] for im in coco.dataset["images"]] == [images[1].name]


def test_images_sharing_a_stem_keep_their_own_files(images, tmp_path):
    from PIL import Image

    png = images[0].with_suffix(".png")
    Image.open(images[0]).save(png)
    out = tmp_path / "out"
    assert _segment([images[0], png], out, "--format", "png", "--format", "yolo") == 0
    annotated = sorted(p.name for p in (out / "annotated").iterdir())
    assert annotated == sorted([images[0].name, png.name])
    labels = sorted(p.name for p in (out / "yolo" / "labels" / "train").iterdir())
    assert len(labels) == 2 and len(set(labels)) == 2
    index = sorted(p.name for p in (out / "masks" / "index").iterdir())
    assert len(index) == 2


def test_count_reports_a_bad_image_and_counts_the_others(images, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    argv = ["count", str(images[0]), str(bad), str(images[1]), "-c", "bowl", "--tiny", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    table = json.loads(captured.out)
    assert set(table["images"]) == {str(images[0]), str(images[1])}
    assert str(bad) in table["errors"] and f"skipped {bad}" in captured.err


def test_tiny_runs_are_the_same_every_time(images, capsys):
    argv = ["count", str(images[0]), "-c", "bowl", "-c", "person", "--tiny", "--json"]
    argv += ["--box-threshold", "0.2"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == first


def test_output_files_get_the_usual_mode(images, tmp_path):
    import os
    import stat

    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert _segment(images[:1], out) == 0
    finally:
        os.umask(old)
    for name in ("annotations.json", "results.json", "counts.csv", "errors.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_sam_checkpoint_loads_fine_tuned_weights_strictly(images, tmp_path, capsys):
    import torch

    from textseg._hub import create_model

    torch.manual_seed(5)
    tuned = create_model("sam-vit-tiny-test", pretrained=False)
    path = tmp_path / "medsam-like.pt"
    torch.save(tuned.state_dict(), path)
    argv = ["--sam", "sam-vit-tiny-test", "--sam-checkpoint", str(path)]
    assert _segment(images[:1], tmp_path / "a", *argv) == 0
    broken = {k: v for k, v in tuned.state_dict().items() if "mask_decoder" not in k}
    torch.save(broken, tmp_path / "broken.pt")
    argv = ["--sam", "sam-vit-tiny-test", "--sam-checkpoint", str(tmp_path / "broken.pt")]
    assert _segment(images[:1], tmp_path / "b", *argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing keys: mask_decoder" in err[0]


def test_help_and_usage_errors_do_not_load_torch():
    """The command line parses before it loads models: ``--help``, a usage error and the
    modules every command imports stay free of torch (5 s of imports on this machine), and
    the OpenMP wait policy is set before anything could load it."""
    code = (
        "import sys, textseg.cli as cli\n"
        "try:\n"
        "    cli.main(['segment', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "try:\n"
        "    cli.main(['eval', 'x', '--protocols'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import os\n"
        "loaded = sorted(m for m in ('torch', 'supervision', 'cv2') if m in sys.modules)\n"
        "print('LOADED', loaded, os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S, env=env
    )
    assert "LOADED [] PASSIVE" in out.stdout, out.stdout + out.stderr
