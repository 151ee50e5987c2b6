"""The shared post-processing rules, on hand-made boxes and prompt scores."""

from __future__ import annotations

import re

import numpy as np
import pytest
import supervision as sv

from textseg.detectors.base import (
    Detector,
    PostprocessConfig,
    empty_detections,
    postprocess_detections,
)
from textseg.vocab import Vocabulary

IMAGE = (100, 200)  # (height, width)
CFG = PostprocessConfig(box_threshold=0.3)


def run(boxes, scores, vocab, config=CFG) -> sv.Detections:
    return postprocess_detections(
        np.asarray(boxes, dtype=np.float32),
        np.asarray(scores, dtype=np.float32),
        vocab,
        image_size=IMAGE,
        config=config,
    )


def test_best_prompt_gives_class_name_and_prompt() -> None:
    vocab = Vocabulary(["cat", "dog"])
    dets = run([[0, 0, 10, 10], [50, 50, 90, 90]], [[0.9, 0.2], [0.1, 0.8]], vocab)
    assert dets.class_id.tolist() == [0, 1]
    assert dets.data["class_name"].tolist() == ["cat", "dog"]
    assert dets.data["prompt"].tolist() == ["cat", "dog"]
    np.testing.assert_allclose(dets.confidence, [0.9, 0.8])
    assert dets.xyxy.dtype == np.float32 and dets.confidence.dtype == np.float32


def test_sorted_by_confidence_and_clipped_to_image() -> None:
    vocab = Vocabulary(["cat"])
    dets = run([[-5, -5, 30, 30], [150, 50, 250, 140]], [[0.4], [0.7]], vocab)
    np.testing.assert_allclose(dets.confidence, [0.7, 0.4])
    np.testing.assert_allclose(dets.xyxy, [[150, 50, 200, 100], [0, 0, 30, 30]])


def test_synonyms_merge_into_one_class_and_nms_removes_duplicates() -> None:
    vocab = Vocabulary(["car", "person"], synonyms={"car": ["automobile", "sedan"]})
    # Three near-identical boxes, best matched by three prompts of the class "car".
    boxes = [[10, 10, 50, 50], [11, 10, 50, 51], [10, 11, 51, 50], [60, 10, 90, 90]]
    scores = [
        [0.5, 0.1, 0.0, 0.0],
        [0.1, 0.8, 0.0, 0.0],
        [0.0, 0.0, 0.6, 0.0],
        [0.0, 0.0, 0.0, 0.9],
    ]
    dets = run(boxes, scores, vocab)
    assert dets.class_id.tolist() == [1, 0]
    assert dets.data["prompt"].tolist() == ["person", "automobile"]
    assert dets.data["class_name"].tolist() == ["person", "car"]


def test_negative_best_prompt_drops_the_box() -> None:
    vocab = Vocabulary(["car"], negatives=["toy car"])
    dets = run([[0, 0, 10, 10], [50, 50, 90, 90]], [[0.6, 0.9], [0.7, 0.1]], vocab)
    np.testing.assert_allclose(dets.xyxy, [[50, 50, 90, 90]])


def test_higher_scoring_overlapping_negative_box_suppresses() -> None:
    vocab = Vocabulary(["car"], negatives=["toy car"])
    boxes = [
        [10, 10, 50, 50],  # car 0.6
        [12, 10, 50, 52],  # toy car 0.8: overlaps box 0, beats it
        [60, 10, 100, 50],  # car 0.9
        [61, 10, 100, 51],  # toy car 0.5: overlaps box 2, loses to it
        [120, 10, 160, 50],  # car 0.5
        [150, 40, 190, 90],  # toy car 0.9, IoU with box 4 small
    ]
    scores = [[0.6, 0.1], [0.2, 0.8], [0.9, 0.1], [0.3, 0.5], [0.5, 0.0], [0.1, 0.9]]
    dets = run(boxes, scores, vocab)
    np.testing.assert_allclose(dets.xyxy, [[60, 10, 100, 50], [120, 10, 160, 50]])


@pytest.mark.parametrize(
    ("thresholds", "box_threshold", "kept"),
    [
        (None, 0.3, ["cat", "dog"]),
        ({"dog": 0.6}, 0.3, ["cat"]),
        ({"dog": 0.6, "bird": 0.2}, 0.3, ["cat", "bird"]),
        ({"bird": 0.1}, 0.5, ["cat", "dog", "bird"]),
        ({"cat": 0.95, "bird": 0.2}, 0.5, ["dog", "bird"]),
    ],
)
def test_per_class_thresholds(thresholds, box_threshold, kept) -> None:
    vocab = Vocabulary(["cat", "dog", "bird"], thresholds=thresholds)
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]
    scores = [[0.9, 0, 0], [0, 0.55, 0], [0, 0, 0.25]]
    config = PostprocessConfig(box_threshold=box_threshold)
    dets = run(boxes, scores, vocab, config)
    assert sorted(dets.data["class_name"].tolist()) == sorted(kept)


def test_cross_class_nms_is_configurable() -> None:
    vocab = Vocabulary(["cup", "mug", "table"])
    boxes = [[10, 10, 50, 50], [10, 10, 50, 51], [0, 0, 100, 100], [60, 60, 90, 90]]
    scores = [[0.8, 0, 0], [0, 0.7, 0], [0, 0, 0.9], [0, 0.6, 0]]
    dets = run(boxes, scores, vocab)  # default 0.9: the "mug" twin of the cup goes
    assert dets.data["class_name"].tolist() == ["table", "cup", "mug"]
    np.testing.assert_allclose(dets.xyxy[2], [60, 60, 90, 90])
    off = run(boxes, scores, vocab, PostprocessConfig(0.3, cross_class_nms_threshold=None))
    assert off.data["class_name"].tolist() == ["table", "cup", "mug", "mug"]
    # At IoU 0.1 the table (IoU 0.16 with the cup, 0.09 with the far mug) takes the cup.
    strict = run(boxes, scores, vocab, PostprocessConfig(0.3, cross_class_nms_threshold=0.1))
    assert strict.data["class_name"].tolist() == ["table", "mug"]


def test_max_detections() -> None:
    vocab = Vocabulary(["dot"])
    boxes = [[i * 10, 0, i * 10 + 5, 5] for i in range(20)]
    scores = [[0.5 + i / 100] for i in range(20)]
    dets = run(boxes, scores, vocab, PostprocessConfig(0.3, max_detections=5))
    np.testing.assert_allclose(dets.confidence, [0.69, 0.68, 0.67, 0.66, 0.65], atol=1e-6)


@pytest.mark.parametrize(
    ("boxes", "scores"),
    [
        (np.zeros((0, 4)), np.zeros((0, 2))),
        ([[0, 0, 10, 10]], [[0.1, 0.2]]),  # below threshold
        ([[5, 5, 5, 20]], [[0.9, 0.0]]),  # zero width
        ([[0, 0, 10, np.nan]], [[0.9, 0.0]]),  # not finite
        ([[0, 0, 10, 10]], [[0.0, 0.0]]),  # no prompt matched at all
    ],
)
def test_nothing_found_is_empty_not_class_0(boxes, scores) -> None:
    vocab = Vocabulary(["cat", "dog"])
    config = PostprocessConfig(box_threshold=0.0) if np.sum(scores) == 0 else CFG
    dets = run(boxes, scores, vocab, config)
    assert len(dets) == 0
    assert set(dets.data) == {"class_name", "prompt"}
    assert dets.xyxy.shape == (0, 4)


def test_empty_detections_fields() -> None:
    dets = empty_detections()
    assert len(dets) == 0 and dets.class_id.dtype == np.int64
    merged = sv.Detections.merge([dets, run([[0, 0, 10, 10]], [[0.9]], Vocabulary(["a"]))])
    assert merged.data["class_name"].tolist() == ["a"]


@pytest.mark.parametrize(
    ("boxes", "scores", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 2)), "boxes: expected shape (N, 4), got (2, 3)"),
        (
            np.zeros((2, 4)),
            np.zeros((2, 3)),
            "prompt_scores: expected shape (2, 2) (boxes x prompts), got (2, 3)",
        ),
        (
            np.zeros((2, 4)),
            np.zeros((3, 2)),
            "prompt_scores: expected shape (2, 2) (boxes x prompts), got (3, 2)",
        ),
    ],
)
def test_shape_errors(boxes, scores, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        run(boxes, scores, Vocabulary(["cat", "dog"]))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            dict(box_threshold=1.2),
            ValueError,
            "box_threshold: expected a number in [0, 1], got 1.2",
        ),
        (
            dict(box_threshold="high"),
            TypeError,
            "box_threshold: expected a number in [0, 1], got str",
        ),
        (
            dict(box_threshold=0.3, nms_threshold=-0.1),
            ValueError,
            "nms_threshold: expected a number in [0, 1], got -0.1",
        ),
        (
            dict(box_threshold=0.3, cross_class_nms_threshold=2),
            ValueError,
            "cross_class_nms_threshold: expected a number in [0, 1], got 2",
        ),
        (
            dict(box_threshold=0.3, max_detections=0),
            ValueError,
            "max_detections: expected a positive int, got 0",
        ),
        (
            dict(box_threshold=0.3, max_detections=2.5),
            TypeError,
            "max_detections: expected a positive int, got float",
        ),
    ],
)
def test_config_errors(kwargs, error, message) -> None:
    with pytest.raises(error, match=re.escape(message)):
        PostprocessConfig(**kwargs)


def test_detectors_satisfy_the_protocol() -> None:
    from textseg.detectors import GroundingDinoDetector, Owlv2Detector

    assert issubclass(GroundingDinoDetector, Detector)
    assert issubclass(Owlv2Detector, Detector)
