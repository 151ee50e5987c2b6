"""Several presets in one call: the comparison report (``textseg eval --preset a,b,c``)."""

from __future__ import annotations

import json

import pytest

from textseg.cli import main
from textseg.eval.compare import compare_presets

from .conftest import OracleSegmenter


def _strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_each_preset_gets_its_own_metrics(synth, tmp_path) -> None:
    """Two stand-in presets: one answers with the ground truth, one misses every dog."""
    segmenters = {
        "tiny-test": OracleSegmenter(synth),
        "fast": OracleSegmenter(synth, drop="dog"),
    }
    comparison = compare_presets(
        synth,
        "tiny-test,fast",
        "box,text,count",
        build=segmenters.__getitem__,
        out_dir=tmp_path,
        progress=False,
    )
    assert comparison.presets == ["tiny-test", "fast"] and not comparison.errors
    perfect, missing = comparison.metrics["tiny-test"], comparison.metrics["fast"]
    assert perfect["box"]["miou"] == missing["box"]["miou"] == 1.0
    assert perfect["text"]["ap"] == pytest.approx(1.0)
    assert missing["text"]["ap"] < 0.9 and perfect["count"]["mae"] == 0.0 < missing["count"]["mae"]
    assert comparison.timings["fast"]["decode"] == 3.0  # the pipeline's own stage timings
    data = _strict((tmp_path / "compare.json").read_text())
    assert data["metrics"]["fast"]["text"]["ap"] == pytest.approx(missing["text"]["ap"])
    table = (tmp_path / "compare.md").read_text()
    assert "| tiny-test | 1.000 |" in table and "| fast |" in table
    assert (tmp_path / "compare.png").stat().st_size > 0
    for preset in ("tiny-test", "fast"):
        assert _strict((tmp_path / preset / "report.json").read_text())["segmenter"] == preset


def test_cli_compares_real_presets_with_refinement(synth_dir, tmp_path, capsys) -> None:
    """Tiny random models, offline: SAM 3 and Grounded HQ-SAM in one report; the box protocol
    with and without refinement where the SAM takes mask inputs."""
    out = tmp_path / "cmp"
    code = main(
        [
            "eval",
            str(synth_dir),
            "--preset",
            "sam3,grounded-sam-hq",
            "--tiny",
            "--refine",
            "1",
            "--max-images",
            "1",
            "--protocols",
            "box,text,count",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = _strict((out / "compare.json").read_text())
    assert data["presets"] == ["sam3", "grounded-sam-hq"]
    rows = data["metrics"]["grounded-sam-hq"]
    assert {"box", "box_refine", "text", "count"} <= set(rows)
    assert 0 <= rows["box_refine"]["miou"] <= 1
    assert "box_refine" not in data["metrics"]["sam3"]
    assert "256, 256" in data["skipped"]["sam3"]["box_refine"]
    assert {"box", "text", "count"} <= set(data["metrics"]["sam3"])
    assert data["timings"]["sam3"]["encode"] == 0.0  # SAM 3 cuts its own masks
    assert "sam3: box miou" in printed and "box_refine not run" in printed
    assert (out / "sam3" / "report.md").is_file()


def test_cli_unknown_preset_in_the_list(synth_dir, tmp_path, capsys) -> None:
    code = main(["eval", str(synth_dir), "--preset", "sam3,grounded-som", "--tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "unknown preset 'grounded-som'. Did you mean 'grounded-sam'?" in err[0]


def test_a_preset_that_cannot_be_built_is_reported_and_the_others_run(synth, tmp_path) -> None:
    """Missing weights for one preset: it is named with the reason, the others are evaluated."""
    from textseg._hub import WeightsNotFoundError

    def build(name: str):
        if name == "sam3":
            raise WeightsNotFoundError("weights for 'sam3' are missing (offline)")
        return OracleSegmenter(synth)

    comparison = compare_presets(
        synth, "sam3,fast", "count", build=build, out_dir=tmp_path, plot=False, progress=False
    )
    assert comparison.errors == {"sam3": "weights for 'sam3' are missing (offline)"}
    assert comparison.metrics["fast"]["count"]["mae"] == 0.0 and "sam3" not in comparison.metrics
    assert comparison.lines()[0] == "sam3: failed: weights for 'sam3' are missing (offline)"
    assert "- sam3: failed: weights for 'sam3' are missing" in (tmp_path / "compare.md").read_text()
