"""What the tracker asks of the model that finds instances on keyframes, declared.

The :class:`~textseg.video.Tracker` talks to its keyframe segmenter through
:class:`KeyframeSegmenter` (``segment(image, classes)``) and, to spare SAM 2 a second encoding
of a keyframe, :class:`SharesEmbedding` (``keyframe_embedding(image)``: the embedding the
segmenter computed for the frame it just segmented). :class:`PipelineKeyframes` is both for a
:class:`~textseg.pipelines.TextSegmenter` over a SAM core: it keeps the latest keyframe's
embedding itself, so the tracker never reads the pipeline's embedding cache, and it builds the
matching :class:`~textseg.video.Sam2Propagator`.

Which frames are keyframes is decided by the model-free :class:`KeyframePolicy`: the first
frame, every ``every`` frames, scene cuts, and (``redetect``) the frame after a tracked object's
propagated score fell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from textseg.validators import non_negative_int, positive_fraction, positive_int

if TYPE_CHECKING:
    from textseg.sam.cache import ImageEmbedding
    from textseg.video.propagator import MaskPropagator

__all__ = [
    "KeyframePolicy",
    "KeyframeSegmenter",
    "PipelineKeyframes",
    "SharesEmbedding",
    "keyframe_segmenter",
]


class KeyframeSegmenter(Protocol):
    """What finds instances on keyframes: ``segment(image, classes)`` returning an object with
    ``.detections`` (``sv.Detections`` with ``mask``, ``class_id``, ``confidence``,
    ``data["class_name"]``), e.g. :class:`~textseg.pipelines.TextSegmenter`."""

    def segment(self, image: Any, classes: Any) -> Any: ...


@runtime_checkable
class SharesEmbedding(Protocol):
    """A keyframe segmenter that hands over its image embedding of the frame it segmented
    last (None when it has none), and builds the propagator that reads such embeddings."""

    def keyframe_embedding(self, image: np.ndarray) -> ImageEmbedding | None: ...

    def propagator(self) -> MaskPropagator: ...


class PipelineKeyframes:
    """A pipeline with a SAM core (:class:`~textseg.pipelines.TextSegmenter`) as the tracker's
    keyframe segmenter.

    Each keyframe is segmented by the pipeline, which encodes it with its SAM core; the
    embedding is taken then (``sam.encode``, answered from the core's cache) and kept until
    the next keyframe, so :meth:`keyframe_embedding` never encodes a frame twice. The core's
    cache is emptied after each keyframe: a video's frames are each seen once, and a cache
    filling up with them would hold a gigabyte for nothing.

    Args:
        pipeline: Has ``segment(image, classes)`` and ``sam`` (a :class:`~textseg.sam.SamCore`).
    """

    def __init__(self, pipeline: Any) -> None:
        sam = getattr(pipeline, "sam", None)
        if sam is None or not callable(getattr(sam, "encode", None)):
            raise TypeError(
                f"pipeline: expected a TextSegmenter with a SAM core (sam=...), got "
                f"{type(pipeline).__name__}"
            )
        self.pipeline = pipeline
        self.sam = sam
        self._last: tuple[int, ImageEmbedding] | None = None

    def segment(self, image: np.ndarray, classes: Any) -> Any:
        """The pipeline's result on ``image``; its embedding is kept for the propagator."""
        result = self.pipeline.segment(image, classes)
        self._last = (id(image), self.sam.encode(image))
        self.sam.cache.clear()
        return result

    def keyframe_embedding(self, image: np.ndarray) -> ImageEmbedding | None:
        """The embedding of ``image`` if it is the frame segmented last, else None."""
        if self._last is None or self._last[0] != id(image):
            return None
        return self._last[1]

    def propagator(self) -> MaskPropagator:
        """SAM 2 propagation over the pipeline's SAM core (reads its embeddings)."""
        from textseg.video.propagator import Sam2Propagator

        return Sam2Propagator(self.sam)

    def __repr__(self) -> str:
        return f"PipelineKeyframes({self.pipeline!r})"


def keyframe_segmenter(segmenter: Any) -> Any:
    """``segmenter`` as the tracker uses it: as it is when it declares
    :class:`SharesEmbedding` or has no SAM core, else wrapped in :class:`PipelineKeyframes`.

    Raises:
        TypeError: No ``segment`` method.
    """
    if not callable(getattr(segmenter, "segment", None)):
        raise TypeError(
            f"segmenter: expected an object with segment(image, classes), got "
            f"{type(segmenter).__name__}"
        )
    if isinstance(segmenter, SharesEmbedding):
        return segmenter
    sam = getattr(segmenter, "sam", None)
    if sam is not None and callable(getattr(sam, "encode", None)):
        return PipelineKeyframes(segmenter)
    return segmenter


#: Why a frame is a keyframe (:attr:`KeyframePolicy.decide`'s answers).
FIRST, SCENE_CUT, EVERY, REDETECT = "first", "scene_cut", "every", "redetect"


class KeyframePolicy:
    """Which frames the keyframe segmenter runs on, model-free.

    A frame is a keyframe when it is the first frame, a scene cut, ``every`` frames after the
    previous keyframe, or, with ``redetect``, after a tracked object's propagated score fell:

    - an object is *armed* while its SAM 2 object score (the probability that it is visible)
      is at least ``redetect``; an armed object whose score drops below ``redetect`` on a
      frame that is not a keyframe *falls* and disarms (it re-arms when its score is back);
    - the frame after a fall is a keyframe, unless fewer than ``redetect_gap`` frames have
      passed since the previous keyframe: then the first frame that is ``redetect_gap``
      frames after it (one re-detection for every fall in between).

    The score is compared with a fixed threshold, not with a fraction of the object's score at
    its last keyframe: SAM 2's scores sit near 1 for a visible object, so a fraction would
    either never trigger or trigger on noise. Decided from the frame before (not the frame
    itself), a re-detection costs no second encoding of a frame already propagated. Scores
    on keyframes never trigger (the segmenter has just looked), an object that left the view
    triggers once (not on every frame it stays away), and ``redetect_gap`` bounds what a
    flickering object can cost: at most one keyframe every ``redetect_gap`` frames.

    Frames are counted as the tracker counts them (0, 1, 2... over the frames it could
    decode).

    Args:
        every: A keyframe every ``every`` frames after the previous one; 0: only the first
            frame, scene cuts and re-detections.
        redetect: Object score below which a fall asks for a keyframe, in (0, 1]; None: no
            re-detection.
        redetect_gap: Frames at least between the previous keyframe and a re-detection.

    Raises:
        ValueError: A parameter out of range.
    """

    def __init__(
        self, every: int = 10, redetect: float | None = None, redetect_gap: int = 3
    ) -> None:
        self.every = non_negative_int(every, "every")
        self.redetect = None if redetect is None else positive_fraction(redetect, "redetect")
        self.redetect_gap = positive_int(redetect_gap, "redetect_gap")
        self.reset()

    def reset(self) -> None:
        """Forget the video: the next frame is a first frame."""
        self._last: int | None = None
        self._armed: dict[int, bool] = {}
        self._fell = False

    def decide(self, step: int, scene_cut: bool = False) -> str | None:
        """Why frame ``step`` is a keyframe (``"first"``, ``"scene_cut"``, ``"every"``,
        ``"redetect"``), or None; a keyframe is remembered as the previous one."""
        last = self._last
        if last is None:
            reason: str | None = FIRST
        elif scene_cut:
            reason = SCENE_CUT
        elif self.every and step - last >= self.every:
            reason = EVERY
        elif self._fell and step - last >= self.redetect_gap:
            reason = REDETECT
        else:
            reason = None
        if reason is not None:
            self._last = step
            self._fell = False
        return reason

    def observe(self, scores: Mapping[int, float], keyframe: bool) -> None:
        """The object scores of the live objects on the frame just decided (objects not in
        ``scores`` are forgotten)."""
        if self.redetect is None:
            return
        armed = {}
        for obj, score in scores.items():
            up = float(score) >= self.redetect
            if not up and not keyframe and self._armed.get(obj, False):
                self._fell = True
            armed[obj] = up
        self._armed = armed

    def info(self) -> dict[str, Any]:
        """The policy as recorded in ``tracks.json`` ``info.keyframes``."""
        out: dict[str, Any] = {"every": self.every}
        if self.redetect is not None:
            out["redetect"] = self.redetect
            out["redetect_gap"] = self.redetect_gap
        return out
