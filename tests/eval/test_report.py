"""EvalReport: JSON (NaN -> null), Markdown tables, summary lines and the PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textseg.eval import EvalReport, ProtocolResult


def _report() -> EvalReport:
    box = ProtocolResult(
        "box",
        {"miou": 0.75, "miou_class_mean": float("nan")},
        {"cat": {"n": 2, "miou": 0.75}, "dog": {"n": 0, "miou": None}},
        {"encode": 10.0, "decode": np.float64(5.5), "wall_s": 0.5},
        images=2,
        instances=2,
        notes=["a note"],
    )
    count = ProtocolResult(
        "count",
        {"mae": 0.5, "exact": np.float32(0.5), "mae_present": 1.0, "exact_present": 0.0},
        {
            "cat": {"gt": 2, "pred": 1, "mae": 0.5, "exact": 0.5, "bias": -0.5},
            "dog": {"gt": 0, "pred": 0, "mae": 0.0, "exact": 1.0, "bias": 0.0},
        },
        {"total": 12.0, "wall_s": 0.1},
        images=2,
        instances=2,
    )
    return EvalReport(
        dataset="toy (toy/annotations.json)",
        segmenter="oracle",
        device="cpu",
        images=2,
        classes=["cat", "dog"],
        protocols={"box": box, "count": count},
        timings={"wall_s": 1.5, "ms_per_image": 750.0, "pipeline_ms": {"total": 12.0}},
    )


def test_to_dict_is_json_with_nan_as_null() -> None:
    d = json.loads(json.dumps(_report().to_dict(), allow_nan=False))
    assert d["protocols"]["box"]["metrics"] == {"miou": 0.75, "miou_class_mean": None}
    assert d["protocols"]["box"]["per_class"]["dog"] == {"n": 0, "miou": None}
    assert d["protocols"]["box"]["timings"]["decode"] == 5.5
    assert d["protocols"]["count"]["metrics"]["exact"] == 0.5
    assert d["protocols"]["box"]["title"].startswith("box prompts")
    assert d["classes"] == ["cat", "dog"] and d["images"] == 2


def test_markdown_has_summary_per_class_tables_and_timings() -> None:
    md = _report().to_markdown()
    assert md.startswith("# textseg evaluation: toy")
    assert "| box | miou | 0.750 |" in md
    assert "| box | miou_class_mean | - |" in md  # NaN shown as "-"
    assert "| class | n | miou |" in md
    assert "| cat | 2 | 0.750 |" in md and "| dog | 0 | - |" in md
    assert "| class | gt | pred | mae | exact | bias |" in md
    assert "encode 10.0 ms/img" in md and "wall_s 0.5 s" in md
    assert "> a note" in md
    assert "- wall time: 1.5 s (750 ms per image)" in md


def test_summary_lines() -> None:
    assert _report().summary() == [
        "box: miou 0.750, miou_class_mean - (2 instances, 2 images)",
        "count: mae 0.500, exact 0.500, mae_present 1.000, exact_present 0.000 "
        "(2 instances, 2 images)",
    ]


def test_save_writes_json_markdown_and_png(tmp_path: Path) -> None:
    paths = _report().save(tmp_path / "out")
    assert set(paths) == {"json", "markdown", "plot"}  # no text protocol: no results file
    assert json.loads(paths["json"].read_text())["segmenter"] == "oracle"
    with Image.open(paths["plot"]) as im:
        assert im.format == "PNG" and im.width >= 800


def test_save_without_plot(tmp_path: Path) -> None:
    paths = _report().save(tmp_path, plot=False)
    assert set(paths) == {"json", "markdown"}
    assert not (tmp_path / "per_class.png").exists()


def test_unknown_protocol_lookup() -> None:
    with pytest.raises(KeyError, match="protocol 'text' was not run; ran: box, count"):
        _report()["text"]


def test_nan_metrics_stay_nan_in_memory() -> None:
    assert math.isnan(_report()["box"].metrics["miou_class_mean"])


def test_timing_lines() -> None:
    assert _report().timing_lines() == [
        "pipeline, ms per image: total 12.0",
        "protocols, s: box 0.5, count 0.1",
    ]
    assert "- pipeline, ms per image: total 12.0" in _report().to_markdown()


def test_markdown_timings_table() -> None:
    # Stages as rows; the pipeline's column holds its stages once (count, scored on the
    # pipeline's results, only adds its own time); 12 ms x 2 images = 0.024 s.
    md = _report().to_markdown()
    table = md[md.index("## Timings") :].split("\n\n")[1].splitlines()
    assert table == [
        "| stage | pipeline | box | count |",
        "|---|---:|---:|---:|",
        "| total (ms/img) | 12.0 | - | - |",
        "| encode (ms/img) | - | 10.0 | - |",
        "| decode (ms/img) | - | 5.5 | - |",
        "| time (s) | 0.0 | 0.5 | 0.1 |",
    ]
