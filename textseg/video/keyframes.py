"""What the tracker asks of the model that finds instances on keyframes, declared.

The :class:`~textseg.video.Tracker` talks to its keyframe segmenter through
:class:`KeyframeSegmenter` (``segment(image, classes)``) and, to spare SAM 2 a second encoding
of a keyframe, :class:`SharesEmbedding` (``keyframe_embedding(image)``: the embedding the
segmenter computed for the frame it just segmented). :class:`PipelineKeyframes` is both for a
:class:`~textseg.pipelines.TextSegmenter` over a SAM core: it keeps the latest keyframe's
embedding itself, so the tracker never reads the pipeline's embedding cache, and it builds the
matching :class:`~textseg.video.Sam2Propagator`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from textseg.sam.cache import ImageEmbedding
    from textseg.video.propagator import MaskPropagator

__all__ = ["KeyframeSegmenter", "PipelineKeyframes", "SharesEmbedding", "keyframe_segmenter"]


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
