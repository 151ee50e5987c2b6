"""Detector boxes -> SAM box prompts (the Grounded-SAM route, batched)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from textseg._image import ImageInput, to_rgb_uint8
from textseg.detectors.base import Detector, check_score
from textseg.fields import CLASS_NAME
from textseg.prompters.base import ClassPrompts
from textseg.sam.prompts import Prompts
from textseg.vocab import ClassesInput, Vocabulary

__all__ = ["BoxPrompter"]

_DATA_KEYS = {CLASS_NAME: ((), str), "prompt": ((), str), "box": ((4,), np.float32)}


class BoxPrompter:
    """Text -> boxes (a detector) -> one SAM box prompt per box.

    Class ids, detector scores and the matched prompt text are carried through; with
    ``add_center_point`` the box centre is added to each prompt as a foreground point, which
    helps SAM pick the object rather than the background inside loose boxes.

    Args:
        detector: Any :class:`~textseg.detectors.Detector` (``detect(images, classes)``).
        add_center_point: Also give the box centre as a foreground point.
        box_threshold: Overrides the detector's default minimum score (in [0, 1]), or None to
            keep it.

    Raises:
        TypeError, ValueError: A detector without ``detect``, a non-bool ``add_center_point``
            or a ``box_threshold`` that is not a number in [0, 1].

    Example:
        >>> from textseg.detectors import build_detector  # doctest: +SKIP
        >>> prompter = BoxPrompter(build_detector("grounding-dino-tiny"))  # doctest: +SKIP
        >>> cp = prompter.prompts("street.jpg", ["car", "person"])  # doctest: +SKIP
        >>> dets = predict_masks(core, "street.jpg", cp)  # doctest: +SKIP
    """

    def __init__(
        self,
        detector: Detector,
        *,
        add_center_point: bool = False,
        box_threshold: float | None = None,
    ) -> None:
        if not callable(getattr(detector, "detect", None)):
            raise TypeError(
                f"detector: expected an object with detect(images, classes) (a textseg "
                f"Detector, e.g. build_detector('grounding-dino-tiny')), got "
                f"{type(detector).__name__}"
            )
        if not isinstance(add_center_point, bool):
            raise TypeError(
                f"add_center_point: expected a bool, got {type(add_center_point).__name__}"
            )
        if box_threshold is not None:
            box_threshold = check_score(box_threshold, "box_threshold")
        self.detector = detector
        self.add_center_point = add_center_point
        self.box_threshold = box_threshold

    def __repr__(self) -> str:
        return (
            f"BoxPrompter({type(self.detector).__name__}, add_center_point={self.add_center_point})"
        )

    def _detect(
        self, images: ImageInput | list[np.ndarray], vocab: Vocabulary
    ) -> sv.Detections | list[sv.Detections]:
        kwargs = {} if self.box_threshold is None else {"box_threshold": self.box_threshold}
        return self.detector.detect(images, vocab, **kwargs)

    def prompts(self, image: ImageInput, classes: ClassesInput) -> ClassPrompts:
        """Box prompts for every detected instance of ``classes`` in one image.

        Args:
            image: Path, PIL image or ``(H, W, 3)`` uint8 RGB array, any size.
            classes: Class names or a :class:`~textseg.vocab.Vocabulary`.

        Returns:
            :class:`ClassPrompts`: ``prompts.boxes`` ``(N, 4)`` XYXY original pixels (clipped
            to the image), with ``add_center_point`` also ``points`` ``(N, 1, 2)``; the
            detector's ``class_id`` and ``confidence``; ``data`` ``class_name``, ``prompt``,
            ``box``; ``multimask=False`` (a box is not ambiguous). No boxes -> empty result.

        Raises:
            TypeError, ValueError: Bad class list (see :class:`~textseg.vocab.Vocabulary`) or
                image; detector output that breaks the Detector contract (not Detections, no
                ``class_id``, a ``class_id`` outside the classes).
        """
        vocab = Vocabulary.coerce(classes)
        array = to_rgb_uint8(image)
        dets = self._detect(array, vocab)
        return self._from_detections(dets, vocab, array.shape[:2])

    def prompts_many(
        self, images: Sequence[ImageInput], classes: ClassesInput
    ) -> list[ClassPrompts]:
        """:meth:`prompts` for several images, detected in the detector's batches."""
        if isinstance(images, (str, np.ndarray)) or not isinstance(images, Sequence):
            raise TypeError(
                f"images: expected a list of images, got {type(images).__name__}; use "
                f"prompts() for one image"
            )
        vocab = Vocabulary.coerce(classes)
        arrays = [to_rgb_uint8(im, name=f"images[{i}]") for i, im in enumerate(images)]
        if not arrays:
            return []
        dets = self._detect(arrays, vocab)
        if isinstance(dets, sv.Detections):  # a detector that answers one image as a Detections
            dets = [dets]
        if not isinstance(dets, Sequence) or len(dets) != len(arrays):
            got = f"{len(dets)} results" if isinstance(dets, Sequence) else type(dets).__name__
            raise ValueError(
                f"detector.detect: expected one Detections per image ({len(arrays)}), got {got}"
            )
        return [
            self._from_detections(d, vocab, a.shape[:2]) for d, a in zip(dets, arrays, strict=True)
        ]

    def _from_detections(
        self, dets: sv.Detections, vocab: Vocabulary, image_size: tuple[int, int]
    ) -> ClassPrompts:
        names = tuple(vocab.names)
        if not isinstance(dets, sv.Detections):
            raise TypeError(
                f"detector.detect returned {type(dets).__name__}, expected supervision.Detections"
            )
        if len(dets) == 0:
            return ClassPrompts.empty(data_keys=_DATA_KEYS, multimask=False, class_names=names)
        if dets.class_id is None:
            raise ValueError("detector.detect returned detections without class_id")
        height, width = image_size
        boxes = np.asarray(dets.xyxy, dtype=np.float32).copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0.0, float(width))
        boxes[:, 1::2] = boxes[:, 1::2].clip(0.0, float(height))
        class_id = np.asarray(dets.class_id, dtype=np.int64)
        bad = (class_id < 0) | (class_id >= len(names))
        if bad.any():
            # A -1 would otherwise be named after the last class (names[-1]) without a word.
            raise ValueError(
                f"detector.detect returned class_id {int(class_id[bad][0])}; expected an index "
                f"0 <= id < {len(names)} into the classes {list(names)}"
            )
        confidence = (
            np.asarray(dets.confidence, dtype=np.float32)
            if dets.confidence is not None
            else np.full(len(dets), np.nan, np.float32)
        )
        class_name = dets.data.get(CLASS_NAME)
        if class_name is None:
            class_name = np.array([names[c] for c in class_id], dtype=str)
        prompt = dets.data.get("prompt", class_name)
        points = labels = None
        if self.add_center_point:
            centres = np.stack(
                [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1
            )
            points = centres[:, None, :].astype(np.float32)
            labels = np.ones((len(boxes), 1), np.int32)
        return ClassPrompts(
            prompts=Prompts(points=points, point_labels=labels, boxes=boxes),
            class_id=class_id,
            confidence=confidence,
            data={
                CLASS_NAME: np.asarray(class_name, dtype=str),
                "prompt": np.asarray(prompt, dtype=str),
                "box": boxes.copy(),
            },
            multimask=False,
            class_names=names,
        )
