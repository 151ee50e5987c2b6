"""Name the classes once, track every instance: keyframe detection + SAM 2 propagation.

:class:`Tracker` runs an image pipeline (a :class:`~textseg.pipelines.TextSegmenter`: any
prompter, the SAM core, the labeler, de-duplication) on keyframes, and a
:class:`~textseg.video.propagator.MaskPropagator` (SAM 2's memory) on every frame:

1. every frame: the live tracks are propagated to it;
2. on a keyframe (the first frame, every ``every`` frames, a scene cut and, with ``redetect``,
   the frame after a tracked object's SAM 2 score fell: :class:`~textseg.video.keyframes.
   KeyframePolicy`): the pipeline finds
   the instances; each is matched to the live track whose propagated mask overlaps it most
   (mask IoU at least ``match_iou``, greedy, best pairs first). A matched detection votes for
   its track's class. A detection that matches no track and is not the same object as one
   (mostly inside it, of its class and of a comparable size: ``contain``) starts a new track,
   from its mask;
3. a track ends when SAM 2 has not seen its object for ``patience`` frames, on a scene cut when
   no detection matches it, or on a keyframe when another, older track covers the same object
   (mask IoU above ``duplicate_iou``);
4. a track's class is the majority of its votes (ties: the latest), ``unknown`` when the
   labeler's votes say so, exactly as for images.

:func:`track` builds the whole thing from a preset and yields one :class:`FrameResult` per
frame, with ``tracker_id`` on every instance. The decisions of steps 2-4 are taken by the
model-free :class:`~textseg.video.bookkeeping.TrackBook`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import supervision as sv

from textseg._detections import copy_detections
from textseg.fields import CLASS_NAME, OBJECT_SCORE
from textseg.io.rle import CompactMasks
from textseg.masks import masks_to_boxes
from textseg.validators import non_negative_int
from textseg.video.bookkeeping import TrackBook
from textseg.video.keyframes import (
    REDETECT,
    KeyframePolicy,
    KeyframeSegmenter,
    SharesEmbedding,
    keyframe_segmenter,
)
from textseg.video.propagator import MaskPropagator
from textseg.video.sources import Frame, VideoInput, VideoSource, open_video
from textseg.vocab import UNKNOWN, ClassesInput, Vocabulary

__all__ = [
    "FrameResult",
    "KeyframeSegmenter",
    "SceneCutDetector",
    "Tracker",
    "checked_frames",
    "track",
]


@dataclass
class FrameResult:
    """The tracked instances of one frame.

    Masks are kept run-length encoded, as in :class:`~textseg.pipelines.Result`;
    :attr:`detections` decodes them.

    Attributes:
        index: Frame index in the source.
        time: Seconds from the start of the source (None when the frame rate is unknown).
        image_size: ``(H, W)``.
        keyframe: The pipeline ran on this frame.
        scene_cut: A scene cut was detected on this frame.
        redetect: The frame is a keyframe because a tracked object's score fell on an
            earlier frame (``Tracker(redetect=...)``).
        new_tracks: Ids of the tracks that started on this frame.
        ended_tracks: Ids of the tracks that ended on this frame (not in its detections).
        error: Why the frame was skipped (it could not be decoded); None for a tracked frame.
        fatal: The source could not go on after this frame (the last result of the video).
        timings: Milliseconds: ``detect`` (keyframes), ``propagate``, ``match``, ``total``.
        image: The decoded frame, ``(H, W, 3)`` uint8 RGB, when the tracker was asked for it
            (``with_images=True``; e.g. to draw it), else None.
    """

    index: int
    time: float | None
    image_size: tuple[int, int]
    keyframe: bool = False
    scene_cut: bool = False
    redetect: bool = False
    new_tracks: tuple[int, ...] = ()
    ended_tracks: tuple[int, ...] = ()
    error: str | None = None
    fatal: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)
    _boxes: sv.Detections = field(default_factory=sv.Detections.empty, repr=False)
    _masks: CompactMasks | None = field(default=None, repr=False)

    @property
    def detections(self) -> sv.Detections:
        """``sv.Detections``: ``mask`` (N, H, W) bool, ``xyxy`` (N, 4) the masks' boxes,
        ``tracker_id``, ``class_id`` (-1 for ``unknown``), ``confidence`` (the score of the
        detection that last matched the track), ``data["class_name"]`` and
        ``data["object_score"]`` (SAM 2's probability that the object is visible)."""
        dets = self.boxes
        h, w = self.image_size
        masks = self._masks
        dets.mask = (
            masks.to_dense() if masks is not None and len(masks) else np.zeros((0, h, w), bool)
        )
        return dets

    @property
    def boxes(self) -> sv.Detections:
        """The detections without masks."""
        return copy_detections(self._boxes, mask=False)

    @property
    def masks(self) -> CompactMasks:
        """The masks, run-length encoded."""
        h, w = self.image_size
        return self._masks if self._masks is not None else CompactMasks([], h, w)

    @property
    def counts(self) -> dict[str, int]:
        """``{class name: instances in this frame}``."""
        names = self._boxes.data.get(CLASS_NAME, np.zeros(0, object))
        return dict(Counter(str(n) for n in names))

    def __len__(self) -> int:
        return len(self._boxes)


class SceneCutDetector:
    """Scene cuts from the colour histograms of consecutive frames.

    A cut is declared when the Bhattacharyya distance between the hue-saturation histograms of
    a frame and the previous one exceeds ``threshold`` (0: identical, 1: disjoint). A camera
    pan over one scene stays far below 0.3; two different scenes are usually above 0.5.

    Args:
        threshold: Distance above which a frame starts a new shot.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"scene_cut: expected a threshold in (0, 1], got {threshold}")
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    @staticmethod
    def histogram(image: np.ndarray) -> np.ndarray:
        small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
        return cv2.normalize(hist, hist).astype(np.float32)

    def distance(self, image: np.ndarray) -> float | None:
        """Distance to the previous frame (None for the first); remembers this frame."""
        hist = self.histogram(image)
        previous, self._previous = self._previous, hist
        if previous is None:
            return None
        return float(cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA))

    def __call__(self, image: np.ndarray) -> bool:
        d = self.distance(image)
        return d is not None and d > self.threshold


def checked_frames(source: VideoSource, start: int = 0) -> Iterator[Frame | FrameResult]:
    """The frames of ``source`` a tracker can take, and a :class:`FrameResult` with ``error`` set
    (and ``fatal`` when the source cannot go on) for each frame it cannot: one that could not be
    decoded, or whose size differs from the first decoded frame's.

    Raises:
        ValueError: At the end, when no frame could be decoded at all (an empty or unreadable
            video, or ``start`` past its end).
    """
    good = 0
    errors: list[str] = []
    size: tuple[int, int] | None = None
    for frame in source:
        if frame.image is not None and size is not None and frame.image.shape[:2] != size:
            got = frame.image.shape[:2]
            frame = Frame(
                frame.index,
                None,
                frame.time,
                f"frame {frame.index} is {got[0]}x{got[1]}, the video is {size[0]}x{size[1]}",
            )
        if frame.image is None:
            errors.append(frame.error or f"frame {frame.index}: not decoded")
            if frame.fatal and good == 0:
                break
            yield FrameResult(frame.index, frame.time, (0, 0), error=frame.error, fatal=frame.fatal)
            continue
        size = size or frame.image.shape[:2]
        good += 1
        yield frame
    if good == 0:
        if not errors and start > 0:
            raise ValueError(
                f"{source.name}: no frame at or after start={start}; the video is shorter"
            )
        why = f" ({errors[0]})" if errors else ""
        raise ValueError(
            f"{source.name}: no frame could be decoded{why}; the video is empty or unreadable"
        )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Tracker:
    """Keyframe detection with an image pipeline, propagation with SAM 2, ids kept by mask IoU.

    The tracker runs the models and the frames; what is matched, born, ended and voted is
    decided by a model-free :class:`~textseg.video.bookkeeping.TrackBook`.

    Args:
        segmenter: Finds the instances on keyframes (:class:`~textseg.video.keyframes.
            KeyframeSegmenter`; a :class:`~textseg.pipelines.TextSegmenter` is wrapped in
            :class:`~textseg.video.keyframes.PipelineKeyframes`, which hands its keyframe
            embeddings to SAM 2).
        propagator: Carries masks between frames (default: the segmenter's
            ``propagator()``, SAM 2 over its SAM core).
        every: Run the pipeline every ``every`` frames (besides the first frame and scene
            cuts); 0 runs it only there.
        redetect: Also run it on the frame after a tracked object's SAM 2 object score fell
            below this (in (0, 1]; see :class:`~textseg.video.keyframes.KeyframePolicy`);
            None: never.
        redetect_gap: Frames at least between a keyframe and a re-detection.
        scene_cut: Histogram distance threshold of :class:`SceneCutDetector`; None disables
            cut detection.
        match_iou: Mask IoU at least which a detection continues a live track.
        contain: A detection with more than this fraction of its mask inside a live track's
            mask, of the track's class and a comparable size (``contain_ratio``), is that
            object again (not a new one) even below ``match_iou``.
        contain_ratio: The smaller over the larger area at least which two masks are of a
            comparable size for ``contain``.
        patience: Frames an object may stay invisible (SAM 2's object score below 0.5, or an
            empty mask) before its track ends.
        duplicate_iou: On keyframes, of two live tracks whose masks overlap more than this,
            the younger ends.
        min_area: Instances with fewer pixels are not reported on that frame.

    Raises:
        ValueError: A parameter out of range.
        TypeError: No propagator given and the segmenter cannot build one.
    """

    def __init__(
        self,
        segmenter: KeyframeSegmenter,
        propagator: MaskPropagator | None = None,
        *,
        every: int = 10,
        redetect: float | None = None,
        redetect_gap: int = 3,
        scene_cut: float | None = 0.5,
        match_iou: float = 0.5,
        contain: float = 0.8,
        contain_ratio: float = 0.5,
        patience: int = 15,
        duplicate_iou: float = 0.8,
        min_area: int = 0,
    ) -> None:
        self.policy = KeyframePolicy(every, redetect, redetect_gap)
        self.book = TrackBook(
            match_iou=match_iou,
            contain=contain,
            contain_ratio=contain_ratio,
            patience=patience,
            duplicate_iou=duplicate_iou,
        )
        self.cuts = SceneCutDetector(scene_cut) if scene_cut is not None else None
        segmenter = keyframe_segmenter(segmenter)
        if propagator is None:
            if not isinstance(segmenter, SharesEmbedding):
                raise TypeError(
                    f"propagator: {type(segmenter).__name__} has no SAM core to propagate "
                    f"with; give a propagator (e.g. Sam2Propagator(core))"
                )
            propagator = segmenter.propagator()
        self.scene_cut = scene_cut
        self.segmenter = segmenter
        self.propagator = propagator
        self.min_area = non_negative_int(min_area, "min_area")

    def track(
        self,
        video: VideoInput,
        classes: ClassesInput,
        *,
        start: int = 0,
        end: int | None = None,
        with_images: bool = False,
    ) -> Iterator[FrameResult]:
        """Track ``classes`` through ``video``, one :class:`FrameResult` per frame.

        Args:
            video: A video file, a folder of frames, a list or iterator of ``(H, W, 3)`` uint8
                RGB frames, or a :class:`~textseg.video.VideoSource`.
            classes: Class names or a :class:`~textseg.vocab.Vocabulary`.
            start: First frame index.
            end: Index after the last frame (None: to the end).
            with_images: Put each decoded frame in :attr:`FrameResult.image` (to draw it;
                results kept in a list then hold every frame).

        Yields:
            One result per frame of the range, in order; a frame that could not be decoded
            gives a result with ``error`` set and no detections, and tracking goes on. When
            the source cannot go on (its demuxer failed), the last result has ``error`` and
            ``fatal`` set and tracking stops there.

        Raises:
            ValueError: No frame could be decoded at all (an empty or unreadable video), bad
                classes, or frames of changing size.
        """
        vocab = Vocabulary.coerce(classes)
        source = open_video(video, start=start, end=end)
        self.propagator.reset()
        self.book.reset()
        self.policy.reset()
        if self.cuts is not None:
            self.cuts.reset()
        good = 0
        for item in checked_frames(source, start):
            if isinstance(item, FrameResult):
                yield item
                continue
            result = self._step(item, good, vocab)
            if with_images:
                result.image = item.image
            good += 1
            yield result

    @property
    def every(self) -> int:
        """The keyframe interval (the policy's ``every``)."""
        return self.policy.every

    def keyframe_info(self) -> dict[str, Any]:
        """The keyframe policy, as recorded in ``tracks.json`` ``info.keyframes``: ``every``,
        ``scene_cut`` (the threshold, None when off) and, when on, ``redetect`` and
        ``redetect_gap``."""
        return {**self.policy.info(), "scene_cut": self.scene_cut}

    def _step(self, frame: Frame, step: int, vocab: Vocabulary) -> FrameResult:
        start = time.perf_counter()
        image = frame.image
        if image is None:
            raise ValueError(f"frame {frame.index}: no image to track")
        h, w = image.shape[:2]
        cut = self.cuts(image) if self.cuts is not None else False
        reason = self.policy.decide(step, bool(cut))
        keyframe = reason is not None
        timings = {"detect": 0.0, "propagate": 0.0, "match": 0.0}
        found = None
        embedding = None
        if keyframe:
            t = time.perf_counter()
            found = self.segmenter.segment(image, vocab).detections
            if isinstance(self.segmenter, SharesEmbedding):
                embedding = self.segmenter.keyframe_embedding(image)
            timings["detect"] = _ms(t)
        t = time.perf_counter()
        prop = self.propagator.propagate(step, image, embedding)
        timings["propagate"] = _ms(t)

        t = time.perf_counter()
        update = self.book.update(prop, found, keyframe=keyframe, scene_cut=bool(cut))
        masks = {int(i): m for i, m in zip(prop.ids, prop.masks)}
        scores = {int(i): float(s) for i, s in zip(prop.ids, prop.scores)}
        ended = set(update.ended)
        born = [(i, r) for i, r in zip(update.births, update.birth_rows) if i not in ended]
        if born:
            rows = [r for _, r in born]
            added = self.propagator.add(step, [i for i, _ in born], np.asarray(found.mask)[rows])
            for i, m, s in zip(added.ids, added.masks, added.scores):
                masks[int(i)] = m
                scores[int(i)] = float(s)
        gone = [i for i in update.ended if i in masks]
        if gone:
            self.propagator.remove(gone)
        self.policy.observe({i: s for i, s in scores.items() if i not in ended}, keyframe)
        timings["match"] = _ms(t)

        report = [i for i in update.visible if masks[i].sum() > max(0, self.min_area - 1)]
        result = self._result(frame, (h, w), report, masks, scores, vocab)
        result.keyframe = keyframe
        result.scene_cut = bool(cut)
        result.redetect = reason == REDETECT
        result.new_tracks = update.births
        result.ended_tracks = update.ended
        timings["total"] = _ms(start)
        result.timings = timings
        return result

    def _result(
        self,
        frame: Frame,
        size: tuple[int, int],
        report: list[int],
        masks: dict[int, np.ndarray],
        scores: dict[int, float],
        vocab: Vocabulary,
    ) -> FrameResult:
        h, w = size
        tracks = self.book.tracks
        dense = np.stack([masks[i] for i in report]) if report else np.zeros((0, h, w), bool)
        class_id = np.array([tracks[i].class_id() for i in report], np.int64)
        names = np.array([*vocab.names, UNKNOWN], dtype=object)
        boxes = sv.Detections(
            xyxy=masks_to_boxes(dense).astype(np.float32)
            if report
            else np.zeros((0, 4), np.float32),
            confidence=np.array([tracks[i].confidence for i in report], np.float32),
            class_id=class_id,
            tracker_id=np.array(report, np.int64),
            data={
                CLASS_NAME: names[np.where(class_id >= 0, class_id, len(vocab.names))],
                OBJECT_SCORE: np.array([scores[i] for i in report], np.float32),
            },
        )
        return FrameResult(
            frame.index,
            frame.time,
            size,
            _boxes=boxes,
            _masks=CompactMasks.from_dense(dense) if report else CompactMasks([], h, w),
        )


def track(
    video: VideoInput,
    classes: ClassesInput,
    *,
    preset: str = "grounded-sam",
    sam: str = "sam2.1-hiera-base-plus",
    tiny: bool = False,
    device: str = "cpu",
    every: int = 10,
    scene_cut: float | None = 0.5,
    start: int = 0,
    end: int | None = None,
    with_images: bool = False,
    tracker_options: dict[str, Any] | None = None,
    **preset_options: Any,
) -> Iterator[FrameResult]:
    """Track every instance of ``classes`` through a video (the one-call entry point).

    Builds the preset's pipeline with a SAM 2 model (its image predictor segments keyframes,
    its video memory propagates) and runs a :class:`Tracker`.

    Args:
        video: A video file (mp4, avi, webm, ...), a folder of frames, or a list/iterator of
            ``(H, W, 3)`` uint8 RGB frames.
        classes: Class names or a :class:`~textseg.vocab.Vocabulary`.
        preset: Image pipeline preset for keyframes (``textseg.pipelines.list_presets()``).
        sam: SAM 2 registry name (``sam2.1-hiera-tiny/small/base-plus/large``, ``sam2-*``).
        tiny: Tiny random-init models (offline trials and tests; meaningless masks).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        every: Keyframe interval in frames (see :class:`Tracker`).
        scene_cut: Scene-cut threshold, None to disable.
        start: First frame index.
        end: Index after the last frame.
        with_images: Put each decoded frame in :attr:`FrameResult.image`.
        tracker_options: More :class:`Tracker` options (``match_iou``, ``patience``...).
        **preset_options: ``build_components`` options (``detector``, ``box_threshold``,
            ``clip``, ``sam_checkpoint``, ``dtype``, ``min_area``...).

    Yields:
        One :class:`FrameResult` per frame.
    """
    from textseg.pipelines import TextSegmenter

    segmenter = TextSegmenter.from_preset(
        preset, sam=sam, tiny=tiny, device=device, **preset_options
    )
    tracker = Tracker(segmenter, every=every, scene_cut=scene_cut, **(tracker_options or {}))
    yield from tracker.track(video, classes, start=start, end=end, with_images=with_images)
