"""BoxPrompter: detector boxes -> SAM box prompts, classes carried through to the masks."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
import torch

from textseg.detectors import build_detector
from textseg.pipelines import decode_prompts
from textseg.prompters import BoxPrompter, ClassPrompts, Prompter
from textseg.vocab import Vocabulary

BOXES = [[10.5, 20.25, 200.0, 220.75], [300.0, 40.0, 620.0, 470.0], [0.0, 0.0, 64.0, 48.0]]
CLASS_ID = [1, 0, 1]
SCORES = [0.9, 0.55, 0.31]


@pytest.fixture(scope="module")
def grounding_dino():
    torch.manual_seed(0)
    return build_detector("grounding-dino-tiny-test")


@pytest.fixture
def oracle(oracle_detector):
    return oracle_detector(BOXES, CLASS_ID, SCORES)


def test_is_a_prompter(oracle) -> None:
    assert isinstance(BoxPrompter(oracle), Prompter)


def test_boxes_and_classes_pass_through_exactly(oracle, coco_image: np.ndarray) -> None:
    cp = BoxPrompter(oracle).prompts(coco_image, ["dog", "cat"])
    assert isinstance(cp, ClassPrompts)
    np.testing.assert_array_equal(cp.prompts.boxes, np.asarray(BOXES, np.float32))
    np.testing.assert_array_equal(cp.data["box"], np.asarray(BOXES, np.float32))
    np.testing.assert_array_equal(cp.class_id, CLASS_ID)
    np.testing.assert_array_equal(cp.confidence, np.asarray(SCORES, np.float32))
    assert cp.data["class_name"].tolist() == ["cat", "dog", "cat"]
    assert cp.data["prompt"].tolist() == ["cat", "dog", "cat"]
    assert cp.class_names == ("dog", "cat")
    assert cp.prompts.points is None  # no centre point unless asked
    assert cp.multimask is False
    # The detector saw the image itself and the normalised vocabulary, in one call.
    ((image, vocab, kwargs),) = oracle.calls
    assert image.shape == coco_image.shape
    assert isinstance(vocab, Vocabulary) and vocab.names == ["dog", "cat"]
    assert kwargs == {}


def test_detector_prompt_text_and_names_are_kept(oracle_detector, coco_image) -> None:
    detector = oracle_detector(
        BOXES[:2],
        [0, 0],
        [0.5, 0.6],
        data={"class_name": np.array(["car", "car"]), "prompt": np.array(["car", "automobile"])},
    )
    vocab = Vocabulary(["car"], synonyms={"car": ["automobile"]})
    cp = BoxPrompter(detector).prompts(coco_image, vocab)
    assert cp.data["prompt"].tolist() == ["car", "automobile"]
    assert cp.data["class_name"].tolist() == ["car", "car"]


def test_center_point(oracle, coco_image: np.ndarray) -> None:
    cp = BoxPrompter(oracle, add_center_point=True).prompts(coco_image, ["dog", "cat"])
    boxes = np.asarray(BOXES, np.float32)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    assert cp.prompts.points.shape == (3, 1, 2)
    np.testing.assert_allclose(cp.prompts.points[:, 0], centres, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(cp.prompts.point_labels, np.ones((3, 1)))
    np.testing.assert_array_equal(cp.prompts.boxes, boxes)  # the box stays


def test_boxes_outside_the_image_are_clipped(oracle_detector, coco_image) -> None:
    detector = oracle_detector([[-5.0, -3.0, 700.0, 500.0]], [0], [0.7])
    cp = BoxPrompter(detector).prompts(coco_image, ["dog"])
    np.testing.assert_array_equal(cp.prompts.boxes, [[0.0, 0.0, 640.0, 480.0]])


def test_box_threshold_reaches_the_detector(oracle, coco_image: np.ndarray) -> None:
    BoxPrompter(oracle, box_threshold=0.25).prompts(coco_image, ["dog", "cat"])
    assert oracle.calls[-1][2] == {"box_threshold": 0.25}


def test_end_to_end_into_sam(oracle, core, coco_image, assert_detections) -> None:
    prompter = BoxPrompter(oracle, add_center_point=True)
    dets = decode_prompts(core, coco_image, prompter.prompts(coco_image, ["dog", "cat"]))
    assert_detections(dets, coco_image, n=3)
    np.testing.assert_array_equal(dets.class_id, CLASS_ID)
    np.testing.assert_array_equal(dets.confidence, np.asarray(SCORES, np.float32))
    assert dets.data["class_name"].tolist() == ["cat", "dog", "cat"]
    np.testing.assert_array_equal(dets.data["prompt_index"], [0, 1, 2])
    np.testing.assert_array_equal(dets.data["box"], np.asarray(BOXES, np.float32))
    assert np.isfinite(dets.data["sam_iou"]).all()


def test_end_to_end_with_a_tiny_grounding_dino(
    grounding_dino, core, coco_image, assert_detections
) -> None:
    prompter = BoxPrompter(grounding_dino, box_threshold=0.0)
    cp = prompter.prompts(coco_image, ["dog", "cat"])
    assert len(cp) > 0  # threshold 0 keeps the random model's boxes
    dets = decode_prompts(core, coco_image, cp)
    assert_detections(dets, coco_image, n=len(cp))
    assert set(dets.class_id.tolist()) <= {0, 1}
    names = np.array(["dog", "cat"])[dets.class_id]
    assert dets.data["class_name"].tolist() == names.tolist()


def test_nothing_detected_is_an_empty_result(oracle_detector, core, coco_image) -> None:
    detector = oracle_detector(np.zeros((0, 4)), [], [])
    cp = BoxPrompter(detector).prompts(coco_image, ["dog"])
    assert len(cp) == 0
    assert cp.class_names == ("dog",)
    assert set(cp.data) == {"class_name", "prompt", "box"}
    assert cp.data["box"].shape == (0, 4)
    dets = decode_prompts(core, coco_image, cp)
    assert len(dets) == 0
    assert dets.mask.shape == (0, *coco_image.shape[:2])


def test_prompts_many(oracle, coco_image: np.ndarray) -> None:
    small = coco_image[:100, :150]
    out = BoxPrompter(oracle).prompts_many([coco_image, small], ["dog", "cat"])
    assert [len(cp) for cp in out] == [3, 3]
    assert len(oracle.calls) == 1  # one batched detector call
    np.testing.assert_array_equal(out[0].prompts.boxes, np.asarray(BOXES, np.float32))
    assert out[1].prompts.boxes[:, 2].max() <= 150 and out[1].prompts.boxes[:, 3].max() <= 100
    assert BoxPrompter(oracle).prompts_many([], ["dog"]) == []


def test_class_names_are_normalised(oracle, coco_image: np.ndarray) -> None:
    cp = BoxPrompter(oracle).prompts(coco_image, ["  hot \t dog ", "cat"])
    assert cp.class_names == ("hot dog", "cat")
    assert cp.data["class_name"].tolist() == ["cat", "hot dog", "cat"]


def test_bad_classes(oracle, coco_image, bad_classes, bad_error, bad_match) -> None:
    with pytest.raises(bad_error, match=bad_match):
        BoxPrompter(oracle).prompts(coco_image, bad_classes)
    assert oracle.calls == []  # refused before the detector runs


class _NotADetector:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(detector=_NotADetector()),
            TypeError,
            r"^detector: expected an object with detect\(images, classes\) .*got _NotADetector$",
        ),
        (
            dict(add_center_point=1),
            TypeError,
            r"^add_center_point: expected a bool, got int$",
        ),
        (
            dict(box_threshold=1.5),
            ValueError,
            r"^box_threshold: expected a number in \[0, 1\], "
            r"got 1.5$",
        ),
        (
            dict(box_threshold="0.3"),
            TypeError,
            r"^box_threshold: expected a number in \[0, 1\], "
            r"got str$",
        ),
        (dict(box_threshold=float("nan")), ValueError, r"^box_threshold: expected a number"),
    ],
)
def test_bad_settings(oracle, kwargs: dict, error: type[Exception], match: str) -> None:
    kwargs = {"detector": oracle, **kwargs}
    with pytest.raises(error, match=match):
        BoxPrompter(kwargs.pop("detector"), **kwargs)


@pytest.mark.parametrize(
    ("class_id", "error", "match"),
    [
        (
            [1, -1, 0],
            ValueError,
            r"^detector.detect returned class_id -1; expected an index 0 <= id < 2 into the "
            r"classes \['dog', 'cat'\]$",
        ),
        ([1, 2, 0], ValueError, r"^detector.detect returned class_id 2; expected an index"),
        (None, ValueError, r"^detector.detect returned detections without class_id$"),
    ],
)
def test_detector_breaking_the_contract(
    oracle_detector,
    coco_image: np.ndarray,
    class_id: list[int] | None,
    error: type[Exception],
    match: str,
) -> None:
    detector = oracle_detector(BOXES, class_id, SCORES)
    with pytest.raises(error, match=match):
        BoxPrompter(detector).prompts(coco_image, ["dog", "cat"])


def test_detector_returning_the_wrong_type_or_count(coco_image: np.ndarray) -> None:
    class Wrong:
        def __init__(self, answer: object) -> None:
            self.answer = answer

        def detect(self, images, classes, **kwargs):
            return self.answer

    with pytest.raises(
        TypeError, match=r"^detector.detect returned list, expected supervision.Detections$"
    ):
        BoxPrompter(Wrong([])).prompts(coco_image, ["dog"])
    one = sv.Detections(xyxy=np.zeros((0, 4), np.float32))
    with pytest.raises(
        ValueError, match=r"^detector.detect: expected one Detections per image \(3\), got 2 "
    ):
        BoxPrompter(Wrong([one, one])).prompts_many([coco_image] * 3, ["dog"])
    with pytest.raises(TypeError, match=r"^images: expected a list of images, got ndarray"):
        BoxPrompter(Wrong(one)).prompts_many(coco_image, ["dog"])


def test_names_too_long_for_the_detector_are_refused(
    grounding_dino, coco_image: np.ndarray
) -> None:
    """The text limit is the detector's (Grounding DINO: 256 tokens); its error comes through."""
    prompter = BoxPrompter(grounding_dino)
    name = " ".join(["cat"] * 300)
    with pytest.raises(
        ValueError,
        match=r"^prompt 1 'cat cat .*\.\.\.' is 300 tokens; Grounding DINO's text encoder reads at "
        r"most 253 tokens per prompt",
    ):
        prompter.prompts(coco_image, ["dog", name])
