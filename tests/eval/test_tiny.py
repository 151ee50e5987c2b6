"""``--tiny`` reaches every model the evaluation builds: the labeler of the label protocol
(a preset without one), in one evaluation and in a comparison of presets."""

from __future__ import annotations

import json
from pathlib import Path

from textseg.cli import main


def test_eval_default_protocols_with_tiny_build_a_tiny_labeler(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    """grounded-sam has no labeler: the label protocol builds CLIP's, tiny with --tiny."""
    out = tmp_path / "e"
    argv = ["eval", str(data_dir / "coco-dev"), "--preset", "grounded-sam", "--tiny"]
    code = main([*argv, "--max-images", "2", "--no-progress", "--no-plot", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    assert list(report["protocols"]) == ["box", "point", "text", "label", "count"]
    assert report["protocols"]["label"]["instances"] > 0


def test_compare_presets_with_tiny(data_dir: Path, tmp_path: Path, capsys) -> None:
    """The README's comparison, offline: every preset is built and labelled tiny."""
    out = tmp_path / "c"
    argv = ["eval", str(data_dir / "coco-dev"), "--preset", "grounded-sam,owlv2-sam", "--tiny"]
    argv += ["--protocols", "label,count", "--max-images", "1", "--no-progress", "--no-plot"]
    code = main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    data = json.loads((out / "compare.json").read_text())
    assert "errors" not in data or not data["errors"], data.get("errors")
    for preset in ("grounded-sam", "owlv2-sam"):
        assert "label" in data["metrics"][preset] and "count" in data["metrics"][preset]
