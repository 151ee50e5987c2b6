"""The five protocols with ORACLE stand-ins (perfect scores) and with known, hand-checkable
errors; and evaluate()'s argument checks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from textseg.eval import (
    EvalDataset,
    eval_box_prompts,
    eval_counting,
    eval_labeling,
    eval_point_prompts,
    eval_text_prompts,
    evaluate,
    load_dataset,
    parse_protocols,
)


def test_oracle_scores_perfectly_on_every_protocol(
    synth: EvalDataset, fakes: SimpleNamespace
) -> None:
    sam = fakes.OracleSam(synth)
    seg = fakes.OracleSegmenter(synth, sam=sam, labeler=fakes.OracleLabeler(synth))
    report = evaluate(synth, seg, progress=False)
    assert list(report.protocols) == ["box", "point", "text", "label", "count"]
    assert report.classes == ["cat", "dog"]  # bird has no instance: not prompted
    assert report["box"].metrics["miou"] == pytest.approx(1.0)
    assert report["box"].per_class == {"cat": {"n": 3, "miou": 1.0}, "dog": {"n": 1, "miou": 1.0}}
    assert report["point"].metrics == {"miou_top": 1.0, "miou_oracle": 1.0}
    assert report["text"].metrics["ap"] == pytest.approx(1.0)
    assert report["text"].metrics["ap50"] == pytest.approx(1.0)
    assert report["text"].per_class["dog"]["ap"] == pytest.approx(1.0)  # crowd dog ignored
    assert report["label"].metrics["accuracy"] == 1.0
    assert report["label"].metrics["unknown_rate"] == 0.0
    assert report["count"].metrics["mae"] == 0.0 and report["count"].metrics["exact"] == 1.0
    # one batched SAM call per image with instances, every instance at once
    assert sam.calls == [("box", 2), ("point", 2), ("box", 2), ("point", 2)]
    assert seg.vocabularies == [["cat", "dog"]] * 3  # the pipeline ran once per image
    assert report["box"].instances == 4 and report["box"].images == 3
    assert report.timings["pipeline_ms"]["total"] == pytest.approx(6.0)


def test_oracle_on_coco_dev(data_dir: Path, fakes: SimpleNamespace) -> None:
    # All 63 images and 427 instances, tiny and overlapping ones included: every protocol must
    # find the ground truth it is given perfect.
    data = load_dataset(data_dir / "coco-dev")
    seg = fakes.OracleSegmenter(data, labeler=fakes.OracleLabeler(data))
    report = evaluate(data, seg, progress=False)
    total = int(data.gt_counts().sum())
    assert len(data) == 63 and total == 427
    for name in ("box", "point", "text", "label", "count"):
        assert report[name].instances == total
    assert report["box"].metrics["miou"] == pytest.approx(1.0)
    assert all(r["miou"] == pytest.approx(1.0) for r in report["box"].per_class.values())
    assert report["point"].metrics["miou_top"] == pytest.approx(1.0)
    assert report["point"].metrics["miou_oracle"] == pytest.approx(1.0)
    assert report["text"].metrics["ap"] == pytest.approx(1.0)
    assert report["text"].metrics["ap50"] == pytest.approx(1.0)
    assert all(r["ap"] == pytest.approx(1.0) for r in report["text"].per_class.values())
    assert report["label"].metrics["accuracy"] == 1.0
    assert report["count"].metrics["exact"] == 1.0 and report["count"].metrics["mae"] == 0.0


def test_point_protocol_top_versus_oracle(synth: EvalDataset, fakes: SimpleNamespace) -> None:
    # The SAM stand-in ranks the top half of each mask first; the true mask is second.
    result = eval_point_prompts(synth, fakes.OracleSam(synth, top="half"), progress=False)
    masks = [m for s in synth for m in s.gt.mask]
    expected = np.mean([fakes.top_half(m).sum() / m.sum() for m in masks])
    assert result.metrics["miou_top"] == pytest.approx(expected)
    assert result.metrics["miou_top"] < 0.75
    assert result.metrics["miou_oracle"] == pytest.approx(1.0)


def test_missed_class_lowers_ap_and_counts(synth: EvalDataset, fakes: SimpleNamespace) -> None:
    seg = fakes.OracleSegmenter(synth, drop="dog")
    text = eval_text_prompts(synth, seg, progress=False)
    assert text.per_class["dog"] == {"gt": 1, "pred": 0, "ap": 0.0, "ap50": 0.0}
    assert text.per_class["cat"]["ap"] == pytest.approx(1.0)
    assert text.metrics["ap"] == pytest.approx(0.5)  # mean over the two classes
    assert len(text.predictions) == 3
    assert set(text.predictions[0]) == {"image_id", "category_id", "segmentation", "bbox", "score"}
    count = eval_counting(synth, seg, progress=False)
    # 3 images x 2 classes; only (image 1, dog) is wrong, by one
    assert count.metrics["mae"] == pytest.approx(1 / 6)
    assert count.metrics["exact"] == pytest.approx(5 / 6)
    assert count.metrics["image_exact"] == pytest.approx(2 / 3)
    assert count.per_class["dog"]["pred"] == 0 and count.per_class["dog"]["gt"] == 1


def test_labeler_that_never_names_is_all_unknown(
    synth: EvalDataset, fakes: SimpleNamespace
) -> None:
    result = eval_labeling(synth, fakes.OracleLabeler(synth, answer="unknown"), progress=False)
    assert result.metrics["accuracy"] == 0.0
    assert result.metrics["unknown_rate"] == 1.0
    assert np.isnan(result.metrics["accuracy_named"])
    assert result.per_class["cat"] == {
        "n": 3,
        "accuracy": 0.0,
        "unknown_rate": 1.0,
        "confused_with": None,
    }


def test_box_protocol_alone(synth_dir: Path, fakes: SimpleNamespace) -> None:
    data = load_dataset(synth_dir)
    sam = fakes.OracleSam(data)
    result = eval_box_prompts(synth_dir, sam, max_images=1, progress=False)
    assert result.images == 1 and result.instances == 2
    assert sam.calls == [("box", 2)]
    assert set(result.timings) == {"encode", "decode", "wall_s"}


@pytest.mark.parametrize(
    ("protocols", "expected"),
    [
        ("box", ["box"]),
        ("count, box", ["box", "count"]),
        (["TEXT", "label"], ["text", "label"]),
        ("box,,point,", ["box", "point"]),
    ],
)
def test_parse_protocols(protocols, expected) -> None:
    assert parse_protocols(protocols) == expected


@pytest.mark.parametrize(
    ("protocols", "match"),
    [
        ("boxes", r"unknown protocol 'boxes'. Did you mean 'box'\? Valid protocols: box, point"),
        (
            "",
            "protocols: expected one or more of box, point, text, label, count, specialist, "
            "got none",
        ),
        ("xyz", r"unknown protocol 'xyz'. Valid protocols"),
    ],
)
def test_parse_protocols_errors(protocols, match) -> None:
    with pytest.raises(ValueError, match=match):
        parse_protocols(protocols)


def test_evaluate_checks_the_segmenter_before_running(synth: EvalDataset) -> None:
    class NoSam:
        def segment(self, image, classes):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(TypeError, match=r"the box protocol needs a segmenter with .sam"):
        evaluate(synth, NoSam(), "box")


def test_evaluate_refuses_a_bad_labeler(synth: EvalDataset, fakes: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match="labeler: expected a labeler with label"):
        evaluate(synth, fakes.OracleSegmenter(synth), "label", labeler=42)


def test_evaluate_dataset_without_instances(synth_dir: Path, fakes: SimpleNamespace) -> None:
    data = load_dataset(synth_dir)
    empty = EvalDataset(synth_dir / "annotations.json", synth_dir / "images", max_images=3)
    empty.images = [empty.images[2]]  # only the image with no annotation
    with pytest.raises(ValueError, match="have no non-crowd annotation; nothing to evaluate"):
        evaluate(empty, fakes.OracleSegmenter(data), "box")


def test_evaluate_rejects_max_images_with_a_built_dataset(
    synth: EvalDataset, fakes: SimpleNamespace
) -> None:
    with pytest.raises(ValueError, match="max_images: give it to EvalDataset"):
        evaluate(synth, fakes.OracleSegmenter(synth), "box", max_images=1)


def test_evaluate_writes_the_report(
    synth: EvalDataset, tmp_path: Path, fakes: SimpleNamespace
) -> None:
    out = tmp_path / "out"
    evaluate(
        synth,
        fakes.OracleSegmenter(synth, labeler=fakes.OracleLabeler(synth)),
        out_dir=out,
        progress=False,
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "per_class.png",
        "report.json",
        "report.md",
        "text_results.json",
    ]


def test_labeler_that_drops_masks_is_an_error(synth: EvalDataset) -> None:
    class Dropping:
        def label(self, image, detections, classes):
            return detections[:1]

    with pytest.raises(ValueError, match=r"Dropping.label returned 1 detections for 2 masks"):
        eval_labeling(synth, Dropping(), progress=False)


def test_sam_returning_too_few_masks_is_an_error(
    synth: EvalDataset, fakes: SimpleNamespace
) -> None:
    class Short(fakes.OracleSam):
        def predict(self, emb, **kwargs):
            return super().predict(emb, **kwargs)[:1]

    with pytest.raises(ValueError, match=r"box protocol: the SAM core returned 1 masks for 2 "):
        eval_box_prompts(synth, Short(synth), progress=False)


@pytest.mark.parametrize(("progress", "shown"), [(True, True), (False, False), (None, False)])
def test_progress_bar(
    synth: EvalDataset,
    fakes: SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
    progress: bool | None,
    shown: bool,
) -> None:
    # None: only on a terminal, which pytest's captured stderr is not.
    eval_box_prompts(synth, fakes.OracleSam(synth), progress=progress)
    err = capsys.readouterr().err
    assert ("textseg eval: 100%" in err and "3/3" in err) is shown
