"""The one table of per-instance result fields: name, meaning, range, who sets it.

Every field a textseg result (``supervision.Detections``) or a file textseg writes carries per
instance is listed here, once, with one meaning. A field that was not measured is absent: never
NaN, never a filler. The README's "Result fields" table is this table
(:func:`markdown_table` writes it; a test checks they agree), and the pipelines' tests check
that every field a preset produces is listed and within its range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOX",
    "CLASS_ID",
    "CLASS_NAME",
    "CLIP_MARGIN",
    "CLIP_SCORE",
    "CONFIDENCE",
    "CROP_BOX",
    "FIELDS",
    "MASK_INDEX",
    "OBJECT_SCORE",
    "POINT",
    "POINT_MARGIN",
    "PRESENCE_SCORE",
    "PROMPT",
    "PROMPT_INDEX",
    "SAM_IOU",
    "SELECTION_SCORE",
    "SOURCE",
    "STABILITY_SCORE",
    "TRACKER_ID",
    "Field",
    "check_fields",
    "markdown_table",
]


# The field names as constants (as supervision exports ``CLASS_NAME_DATA_FIELD``): code uses
# these, not string literals. ``FIELDS`` (below) must list each of them (a test checks it).
CONFIDENCE = "confidence"
CLASS_ID = "class_id"
CLASS_NAME = "class_name"
TRACKER_ID = "tracker_id"
OBJECT_SCORE = "object_score"
SAM_IOU = "sam_iou"
STABILITY_SCORE = "stability_score"
PROMPT_INDEX = "prompt_index"
MASK_INDEX = "mask_index"
SELECTION_SCORE = "selection_score"
PROMPT = "prompt"
BOX = "box"
PRESENCE_SCORE = "presence_score"
POINT = "point"
CROP_BOX = "crop_box"
POINT_MARGIN = "point_margin"
CLIP_SCORE = "clip_score"
CLIP_MARGIN = "clip_margin"
SOURCE = "source"


@dataclass(frozen=True)
class Field:
    """One per-instance field.

    Attributes:
        name: The key (``Detections`` attribute for the first four, else ``data[name]``).
        meaning: What it is.
        low: Smallest value (None: no bound or not a number).
        high: Largest value (None: no bound or not a number).
        set_by: Who writes it.
    """

    name: str
    meaning: str
    low: float | None
    high: float | None
    set_by: str

    @property
    def range(self) -> str:
        """The range as the README shows it."""
        if self.low is None and self.high is None:
            return "-"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field(
            "confidence",
            "the instance's score: the detector's box score (box presets), SAM 3's instance "
            "score times its presence score (sam3 presets), CLIP's probability at the point's "
            "region (clip-points), a trained specialist's score (--specialist: the region's "
            "mean class probability for SegFormer, the detection score for Mask R-CNN and "
            "YOLO), else SAM's predicted IoU (grid, tokens, automatic masks; a "
            "regression output, it can fall slightly below 0)",
            None,
            None,
            "pipeline (decode_prompts)",
        ),
        Field(
            "class_id",
            "index into the vocabulary's class names; -1 for `unknown`",
            -1,
            None,
            "pipeline (decode_prompts), labeler",
        ),
        Field(
            "class_name",
            "the class name (a synonym reports as its class), or `unknown`",
            None,
            None,
            "pipeline (decode_prompts), labeler",
        ),
        Field(
            "tracker_id",
            "the track an instance belongs to (video; one id per object for the whole video)",
            1,
            None,
            "Tracker (textseg.video)",
        ),
        Field(
            "object_score",
            "SAM 2's probability that the tracked object is visible in the frame (video); "
            "`confidence` stays the score of the detection that last matched the track",
            0.0,
            1.0,
            "Tracker (textseg.video)",
        ),
        Field(
            "sam_iou",
            "SAM's predicted IoU of the chosen mask (a regression output, nominally [0, 1])",
            None,
            None,
            "SamCore",
        ),
        Field(
            "stability_score",
            "IoU of the mask thresholded at +1 and -1 logit",
            0.0,
            1.0,
            "SamCore",
        ),
        Field("prompt_index", "which prompt of the image the mask answers", 0, None, "SamCore"),
        Field(
            "mask_index",
            "which decoder output the mask is: 0 single-mask, 1-3 multimask candidates",
            0,
            3,
            "SamCore",
        ),
        Field(
            "selection_score",
            "the score that picked this mask among SAM's candidates: "
            "w * CLIP probability of the masked region + (1 - w) * sam_iou",
            None,
            None,
            "ClipMaskSelector (clip-points)",
        ),
        Field(
            "prompt",
            "the text that matched (the class name or one of its synonyms)",
            None,
            None,
            "prompters",
        ),
        Field(
            "box",
            "the detector's box, XYXY absolute pixels (the mask's box is `xyxy`)",
            None,
            None,
            "BoxPrompter, Sam3Prompter",
        ),
        Field(
            "presence_score",
            "SAM 3's presence score of the prompt in the image (probability that the concept "
            "is present at all; the same for every instance of one prompt)",
            0.0,
            1.0,
            "Sam3Prompter",
        ),
        Field(
            "point",
            "the main positive point, XY absolute pixels",
            None,
            None,
            "point prompters, AutomaticMaskGenerator",
        ),
        Field(
            "crop_box",
            "the image crop whose point grid found the mask, XYXY absolute pixels",
            None,
            None,
            "AutomaticMaskGenerator",
        ),
        Field(
            "point_margin",
            "background-subtracted CLIP cosine at the region's peak (class minus best "
            "background text)",
            -2.0,
            2.0,
            "ClipPointPrompter",
        ),
        Field(
            "clip_score",
            "CLIP's probability of the output class among the classes and the reject texts "
            "(for `unknown`: of the best class)",
            0.0,
            1.0,
            "ClipLabeler",
        ),
        Field(
            "clip_margin",
            "clip_score minus the best other class's or reject probability",
            -1.0,
            1.0,
            "ClipLabeler",
        ),
        Field(
            "source",
            "provenance of a reviewed annotation: `proposal` (a pipeline proposal accepted "
            "unchanged), `corrected` (a proposal whose mask or class was changed by hand) or "
            "`manual` (drawn by hand); "
            "absent on machine labels nobody reviewed. `textseg train --source-weight` weights "
            "or filters by it",
            None,
            None,
            "annotation app (AnnotationSession, `textseg app --prefill`); read by textseg train",
        ),
    )
}


def markdown_table() -> str:
    """The README's "Result fields" table."""
    rows = ["| field | meaning | range | set by |", "|---|---|---|---|"]
    rows += [f"| `{f.name}` | {f.meaning} | {f.range} | {f.set_by} |" for f in FIELDS.values()]
    return "\n".join(rows)


def check_fields(values: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless every field is listed, finite and within its range.

    Args:
        values: ``{field name: (N, ...) values}``, e.g. ``detections.data`` plus
            ``confidence`` and ``class_id``.
    """
    for name, value in values.items():
        spec = FIELDS.get(name)
        if spec is None:
            raise ValueError(f"field {name!r} is not in textseg.fields.FIELDS")
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            continue
        if array.size and not np.isfinite(array).all():
            raise ValueError(f"field {name!r} holds NaN or infinity")
        if spec.low is not None and array.size and array.min() < spec.low - 1e-6:
            raise ValueError(f"field {name!r}: {array.min()} is below {spec.low}")
        if spec.high is not None and array.size and array.max() > spec.high + 1e-6:
            raise ValueError(f"field {name!r}: {array.max()} is above {spec.high}")
