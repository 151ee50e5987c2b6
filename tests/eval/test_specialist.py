"""The specialist protocol: oracles score exactly 1.0 on every row, a specialist that finds
nothing scores 0, the report and its plot are written, and the split is the given
specialist's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv

from textseg.eval import EvalDataset, evaluate, parse_protocols
from textseg.eval.specialist import ROWS, eval_specialist


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train much faster on one thread than on two contended ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _key(image: np.ndarray) -> str:
    """The image key of the eval fakes (conftest is not importable under importlib mode)."""
    return hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)


class OraclePredictor:
    """A specialist stand-in whose ``predict`` returns the ground truth, class names included
    (or nothing, with ``empty``)."""

    def __init__(self, dataset: EvalDataset, empty: bool = False) -> None:
        self.gt = {_key(s.image): s.gt for s in dataset}
        self.empty = empty

    def predict(self, image: np.ndarray) -> sv.Detections:
        gt = self.gt[_key(image)]
        return gt[np.zeros(len(gt), bool)] if self.empty else gt


def test_oracles_score_one_on_every_row(synth: EvalDataset, fakes: SimpleNamespace) -> None:
    oracle = OraclePredictor(synth)
    result = eval_specialist(
        synth,
        fakes.OracleSam(synth),
        specialist=oracle,
        specialist_gt=oracle,
        val_fraction=0.5,
        seed=0,
    )
    assert result.name == "specialist" and result.images == 2
    for row in ROWS:
        assert result.metrics[f"miou_{row}"] == 1.0, row
        assert result.metrics[f"images_per_s_{row}"] > 0
    assert all(v == 1.0 for row in result.per_class.values() for v in row.values())
    assert "label_s" not in result.metrics  # nothing was labelled: absent, not a filler
    assert any(n.startswith("sam_gt_boxes: mIoU 1.0000") for n in result.notes)


def test_a_specialist_that_finds_nothing_scores_zero(
    synth: EvalDataset, fakes: SimpleNamespace
) -> None:
    result = eval_specialist(
        synth,
        fakes.OracleSam(synth),
        specialist=OraclePredictor(synth, empty=True),
        specialist_gt=OraclePredictor(synth),
        val_fraction=0.5,
    )
    assert result.metrics["miou_specialist_textseg"] == 0.0
    assert result.metrics["miou_specialist_gt"] == 1.0


def test_through_evaluate_with_report_and_plot(
    synth: EvalDataset, fakes: SimpleNamespace, tmp_path: Path
) -> None:
    oracle = OraclePredictor(synth)
    assert parse_protocols("specialist,box") == ["box", "specialist"]
    report = evaluate(
        synth,
        fakes.OracleSegmenter(synth),
        ["specialist"],
        out_dir=tmp_path,
        progress=False,
        specialist_options={"specialist": oracle, "specialist_gt": oracle, "val_fraction": 0.5},
    )
    assert list(report.protocols) == ["specialist"]
    saved = json.loads((tmp_path / "report.json").read_text())
    metrics = saved["protocols"]["specialist"]["metrics"]
    assert metrics["miou_sam_gt_boxes"] == metrics["miou_specialist_gt"] == 1.0
    assert (tmp_path / "per_class.png").stat().st_size > 1000
    assert (
        "| specialist | miou_specialist_textseg | 1.000 |" in (tmp_path / "report.md").read_text()
    )


def test_default_protocols_do_not_train(synth: EvalDataset, fakes: SimpleNamespace) -> None:
    seg = fakes.OracleSegmenter(synth, labeler=fakes.OracleLabeler(synth))
    report = evaluate(synth, seg, progress=False, plot=False)
    assert "specialist" not in report.protocols


def test_labels_and_trains_both_specialists_itself(
    synth: EvalDataset, fakes: SimpleNamespace, tmp_path: Path, one_thread: None
) -> None:
    """Without a given specialist the pipeline labels the training images (timed) and both
    specialists are trained here, on the same split; the work folder keeps them."""
    seg = fakes.OracleSegmenter(synth)
    result = eval_specialist(
        synth,
        fakes.OracleSam(synth),
        segmenter=seg,
        tiny=True,
        epochs=1,
        val_fraction=0.34,
        seed=1,  # holds out image 1 (a cat and a dog), trains on images 2 and 3
        work_dir=tmp_path,
        train_options={"val_fraction": 0.0, "input_size": 32},
    )
    assert result.metrics["miou_sam_gt_boxes"] == 1.0
    assert result.metrics["label_s"] >= 0 and result.metrics["train_s_specialist_gt"] > 0
    assert result.metrics["train_s_specialist_textseg"] > 0
    assert len(seg.vocabularies) == 2  # the two training images, labelled once each
    labels = json.loads((tmp_path / "textseg-labels" / "annotations.json").read_text())
    assert len(labels["images"]) == 2
    for name in ("specialist-gt", "specialist-textseg"):
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["arch"] == "segformer-tiny-test" and config["status"] == "done"


def test_without_segmenter_or_specialist_is_an_error(
    synth: EvalDataset, fakes: SimpleNamespace
) -> None:
    oracle = OraclePredictor(synth)
    with pytest.raises(ValueError, match="give a segmenter"):
        eval_specialist(synth, fakes.OracleSam(synth), specialist_gt=oracle, val_fraction=0.34)
