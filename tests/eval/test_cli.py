"""``textseg eval``: all five protocols with the real tiny-test preset on coco-dev, and the
one-line errors, through ``textseg.cli.main`` (and once through a real ``python -m textseg.cli``
process)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from textseg.cli import main

from .._limits import HANG_S

PROTOCOL_KEYS = {
    "box": {"miou", "miou_class_mean"},
    "point": {"miou_top", "miou_oracle"},
    "text": {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100", "detections"},
    "label": {"accuracy", "unknown_rate", "accuracy_named"},
    "count": {"mae", "exact", "mae_present", "exact_present", "image_exact", "bias", "unknown"},
}


@pytest.fixture(scope="module")
def tiny_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """One real run: tiny-test preset, all protocols, the first 3 coco-dev images."""
    out = tmp_path_factory.mktemp("eval-out")
    argv = [
        "eval",
        str(data_dir / "coco-dev"),
        "--preset",
        "tiny-test",
        "--out",
        str(out),
        "--max-images",
        "3",
        "--no-progress",
    ]
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:  # the autouse offline fixture is function-scoped
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TEXTSEG_OFFLINE", "1")
        mp.delenv("TEXTSEG_WEIGHTS", raising=False)
        mp.setenv("TEXTSEG_CACHE", str(tmp_path_factory.mktemp("cache")))
        with contextlib.redirect_stdout(buffer):
            code = main(argv)
    return code, buffer.getvalue(), out


def test_tiny_preset_writes_every_file(tiny_run: tuple[int, str, Path]) -> None:
    code, stdout, out = tiny_run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".textseg.json",  # the output-folder manifest (textseg.io.folder) and its lock
        ".textseg.lock",
        "per_class.png",
        "report.json",
        "report.md",
        "text_results.json",
    ]
    lines = stdout.splitlines()
    assert lines[0].startswith("coco-dev (") and "3 images" in lines[0]
    assert [line.split(":")[0].strip() for line in lines[1:6]] == list(PROTOCOL_KEYS)
    assert lines[6].startswith("  pipeline, ms per image: encode ")
    assert "total" in lines[6]
    assert lines[7].startswith("  protocols, s: box ") and lines[7].count(",") == 5
    assert lines[-1].startswith("wrote report.json, report.md, text_results.json, per_class.png")
    with Image.open(out / "per_class.png") as im:
        assert im.format == "PNG"


def test_tiny_preset_report_structure(tiny_run: tuple[int, str, Path], data_dir: Path) -> None:
    _, _, out = tiny_run
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 3 and report["segmenter"] == "tiny-test"
    coco = json.loads((data_dir / "coco-dev" / "annotations.json").read_text())
    first = {im["id"] for im in coco["images"][:3]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    present = {names[a["category_id"]] for a in coco["annotations"] if a["image_id"] in first}
    assert set(report["classes"]) == present
    n_instances = sum(a["image_id"] in first for a in coco["annotations"])
    assert list(report["protocols"]) == list(PROTOCOL_KEYS)
    for name, keys in PROTOCOL_KEYS.items():
        proto = report["protocols"][name]
        assert set(proto["metrics"]) == keys, name
        assert set(proto["per_class"]) == present, name
        assert proto["instances"] == n_instances and proto["images"] == 3
        assert proto["timings"]["wall_s"] >= 0
    for key in ("miou", "miou_class_mean"):
        assert 0.0 <= report["protocols"]["box"]["metrics"][key] <= 1.0
    assert 0.0 <= report["protocols"]["text"]["metrics"]["ap"] <= 1.0
    stages = report["timings"]["pipeline_ms"]
    assert set(stages) == {"encode", "prompt", "decode", "label", "dedup", "total"}
    assert report["timings"]["sam_cache"]["misses"] == 3  # each image encoded once
    assert set(report["protocols"]["box"]["timings"]) == {"encode", "decode", "wall_s"}
    md = (out / "report.md").read_text()
    for name in PROTOCOL_KEYS:
        assert f"\n## {name}: " in md
    assert "\n| stage | pipeline | box | point | text | label | count |\n" in md
    assert "\n| encode (ms/img) | " in md and "\n| cocoeval (s) | " in md


def test_tiny_preset_results_load_in_pycocotools(
    tiny_run: tuple[int, str, Path], data_dir: Path
) -> None:
    from pycocotools.coco import COCO

    _, _, out = tiny_run
    results = json.loads((out / "text_results.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert len(results) == report["protocols"]["text"]["metrics"]["detections"]
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(data_dir / "coco-dev" / "annotations.json"))
            loaded = gt.loadRes(results)
        assert len(loaded.getAnnIds()) == len(results)


@pytest.mark.parametrize(
    ("argv", "error", "match"),
    [
        (
            ["eval", "{tmp}/nope", "--preset", "tiny-test"],
            FileNotFoundError,
            "dataset not found: {tmp}/nope",
        ),
        (
            ["eval", "{data}", "--protocols", "box,mask"],
            ValueError,
            "unknown protocol 'mask'. Valid protocols: box, point, text, label, count, specialist",
        ),
        (
            ["eval", "{tmp}", "--preset", "tiny-test"],
            FileNotFoundError,
            "{tmp} has no annotations.json; give the COCO file with --annotations FILE",
        ),
    ],
)
def test_cli_errors_are_one_line(
    argv: list[str],
    error: type,
    match: str,
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subst = {"tmp": str(tmp_path), "data": str(data_dir / "coco-dev")}
    argv = [a.format(**subst) for a in argv]
    message = match.format(**subst)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == f"textseg: error: {message}\n"
    assert captured.out == ""
    # TEXTSEG_DEBUG=1 shows the library's own error instead
    monkeypatch.setenv("TEXTSEG_DEBUG", "1")
    with pytest.raises(error) as info:
        main(argv)
    assert str(info.value) == message


def test_cli_error_in_a_real_process_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # Where a traceback would show: the interpreter, the entry module, stderr as a user sees it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TEXTSEG_OFFLINE": "1"}
    env.pop("TEXTSEG_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "textseg.cli", "eval", str(tmp_path), "--preset", "tiny-test"],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_S,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        f"textseg: error: {tmp_path} has no annotations.json; give the COCO file with "
        f"--annotations FILE\n"
    )
    assert proc.stdout == ""


def test_max_images_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["eval", "data", "--max-images", "0"])
    assert info.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err


def test_seed_makes_random_models_reproducible(data_dir: Path, tmp_path: Path) -> None:
    def miou(seed: int, out: str) -> float:
        argv = ["eval", str(data_dir / "coco-dev"), "--preset", "tiny-test", "--max-images", "1"]
        argv += ["--protocols", "box", "--no-plot", "--no-progress", "--seed", str(seed)]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*argv, "--out", str(tmp_path / out)]) == 0
        report = json.loads((tmp_path / out / "report.json").read_text())
        return report["protocols"]["box"]["metrics"]["miou"]

    first = miou(0, "a")
    assert miou(0, "b") == first
    assert miou(1, "c") != first  # other random weights


def test_eval_claims_its_folder_and_refuses_another_commands(tmp_path, capsys, data_dir) -> None:
    """The output-folder contract: eval's --out records `textseg eval`; a folder that
    `textseg segment` wrote is refused in one line, nothing in it replaced."""
    import json as _json

    from textseg.cli import main
    from textseg.io.folder import MANIFEST, claim_output

    with claim_output(tmp_path / "seg", "segment", owned=["annotations.json"]):
        (tmp_path / "seg" / "annotations.json").write_text("{}")
    code = main(
        [
            "eval",
            str(data_dir / "coco-dev"),
            "--preset",
            "tiny-test",
            "--out",
            str(tmp_path / "seg"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the output of `textseg segment`" in err[0], err
    assert (tmp_path / "seg" / "annotations.json").read_text() == "{}"
    assert _json.loads((tmp_path / "seg" / MANIFEST).read_text())["command"] == "segment"
