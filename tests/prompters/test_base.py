"""ClassPrompts, the result every prompter returns, and how the pipeline decodes it."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from textseg.pipelines import attach_prompts, decode_prompts
from textseg.prompters import ClassPrompts
from textseg.sam.prompts import Prompts


def _prompts(n: int = 3, confidence: list[float] | None = None) -> ClassPrompts:
    return ClassPrompts(
        prompts=Prompts.from_points(np.arange(2 * n, dtype=np.float32).reshape(n, 2) * 10),
        class_id=np.array([1, 0, -1])[:n],
        confidence=np.array(confidence if confidence is not None else [0.9, np.nan, 0.2])[:n],
        data={"tag": np.array(["a", "b", "c"])[:n]},
        class_names=("dog", "cat"),
    )


def test_select_keeps_fields_together() -> None:
    cp = _prompts()
    part = cp.select(np.array([False, True, True]))
    assert len(part) == 2
    np.testing.assert_array_equal(part.class_id, [0, -1])
    assert part.data["tag"].tolist() == ["b", "c"]
    np.testing.assert_array_equal(part.prompts.points, cp.prompts.points[1:])
    assert part.class_names == cp.class_names
    assert len(cp.select(slice(0, 0))) == 0


def test_empty_has_the_declared_fields() -> None:
    empty = ClassPrompts.empty(data_keys={"box": ((4,), np.float32)}, class_names=("dog",))
    assert len(empty) == 0 and empty.data["box"].shape == (0, 4)
    assert empty.class_names == ("dog",)


def test_attach_prompts_carries_classes_to_the_masks(core, coco_image: np.ndarray) -> None:
    cp = _prompts()
    dets = decode_prompts(core, coco_image, cp, multimask_output=True, return_all=True)
    assert len(dets) == 9  # three candidates per prompt, all kept
    index = np.repeat([0, 1, 2], 3)
    np.testing.assert_array_equal(dets.data["prompt_index"], index)
    np.testing.assert_array_equal(dets.class_id, cp.class_id[index])
    assert dets.data["tag"].tolist() == cp.data["tag"][index].tolist()
    # The prompt's score where it has one, else SAM's predicted IoU.
    scored = np.isfinite(cp.confidence[index])
    np.testing.assert_array_equal(dets.confidence[scored], cp.confidence[index][scored])
    np.testing.assert_array_equal(dets.confidence[~scored], dets.data["sam_iou"][~scored])
    assert dets.data["class_name"].tolist() == ["cat"] * 3 + ["dog"] * 3 + ["unknown"] * 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(prompts=np.zeros((1, 4))),
            TypeError,
            r"^ClassPrompts.prompts: expected textseg.sam.Prompts, got ndarray$",
        ),
        (
            dict(class_id=[0, 1]),
            ValueError,
            r"^ClassPrompts.class_id: expected one value per prompt \(3\), got 2$",
        ),
        (
            dict(confidence=[0.5]),
            ValueError,
            r"^ClassPrompts.confidence: expected one value per prompt \(3\), got 1$",
        ),
        (
            dict(class_id=[0, 2, 1]),
            ValueError,
            r"^ClassPrompts.class_id: expected -1 or 0 <= id < 2 \(the number of class names\), "
            r"got 2$",
        ),
        (
            dict(class_id=[0, -2, 1]),
            ValueError,
            r"^ClassPrompts.class_id: expected -1 or 0 <= id < 2 .*got -2$",
        ),
        (
            dict(data={"x": np.zeros(2)}),
            ValueError,
            r"^ClassPrompts.data\['x'\]: expected one row per prompt \(3\), got shape \(2,\)$",
        ),
        (
            dict(multimask="yes"),
            ValueError,
            r"^ClassPrompts.multimask: expected True, False or 'auto', got 'yes'$",
        ),
    ],
)
def test_class_prompts_bad_input(kwargs: dict, error: type[Exception], match: str) -> None:
    cp = _prompts()
    fields = dict(
        prompts=cp.prompts,
        class_id=cp.class_id,
        confidence=cp.confidence,
        data=cp.data,
        class_names=cp.class_names,
    )
    with pytest.raises(error, match=match):
        ClassPrompts(**{**fields, **kwargs})


def test_attach_prompts_bad_input() -> None:
    cp = _prompts()
    plain = sv.Detections(xyxy=np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match=r"^detections: expected data\['prompt_index'\]"):
        attach_prompts(plain, cp)
    far = sv.Detections(xyxy=np.zeros((1, 4), np.float32), data={"prompt_index": np.array([5])})
    with pytest.raises(
        ValueError, match=r"^detections: prompt_index 5 is out of range for 3 prompts"
    ):
        attach_prompts(far, cp)
