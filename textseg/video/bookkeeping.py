"""The tracker's bookkeeping, model-free: matching, births, deaths and class votes.

:class:`TrackBook` holds the live tracks of one video and, frame by frame, is told what the
propagator carried to the frame (:class:`~textseg.video.propagator.Propagated`) and, on
keyframes, what the keyframe segmenter found (``sv.Detections`` with ``mask``, ``class_id``,
``confidence``). :meth:`TrackBook.update` decides, on masks, scores and class ids only:

- which detection continues which track (mask IoU at least ``match_iou``, greedy, best pairs
  first); a matched detection votes for its track's class;
- which detections are the same object as a track again though below ``match_iou``: more than
  ``contain`` of the detection inside the track's mask, the same class, and a comparable size
  (the smaller over the larger area at least ``contain_ratio``). A small object of another class
  inside a large one (cups on a table, carrots in a bowl), or a much smaller object of the same
  class, is a new object;
- which detections start tracks (every other non-empty detection);
- which tracks end: unseen (object score at most 0.5, or an empty mask) for ``patience`` frames,
  unmatched on a scene cut, or, on a keyframe, the younger of two tracks whose masks overlap
  more than ``duplicate_iou``.

It runs without SAM or any model (supervision's ``ByteTrack.update_with_detections`` is the
model); :class:`~textseg.video.Tracker` feeds it and carries out its answer on the propagator.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from textseg.masks import greedy_match, pairwise_iou
from textseg.validators import positive_int
from textseg.video.propagator import Propagated

__all__ = ["BookUpdate", "TrackBook", "TrackState"]


@dataclass
class TrackState:
    """One live track.

    Attributes:
        id: The track id (1, 2, ... in order of birth).
        start: The update (0-based) the track started on.
        votes: Class ids of the detections that matched it, oldest first (-1: unknown).
        confidence: Score of the detection that last matched it.
        missing: Consecutive frames the object has not been seen.
    """

    id: int
    start: int
    votes: list[int]
    confidence: float
    missing: int = 0

    def class_id(self) -> int:
        """The majority of the votes; ties go to the latest vote among the tied classes."""
        counts = Counter(self.votes)
        best = max(counts.values())
        return next(v for v in reversed(self.votes) if counts[v] == best)


@dataclass(frozen=True)
class BookUpdate:
    """What :meth:`TrackBook.update` decided for one frame.

    Attributes:
        births: Ids of the tracks started on this frame (in detection order).
        birth_rows: The detection row each birth starts from (same order as ``births``).
        ended: Ids of the tracks that ended on this frame, sorted (a birth may end at once,
            as a duplicate of an older track).
        matched: ``{detection row: track id}`` of the detections that continued a track.
        absorbed: ``{detection row: track id}`` of the detections taken as their track's
            object again by containment (no vote, no new track).
        visible: Ids of the live tracks seen on this frame (births included), sorted.
    """

    births: tuple[int, ...] = ()
    birth_rows: tuple[int, ...] = ()
    ended: tuple[int, ...] = ()
    matched: dict[int, int] = field(default_factory=dict)
    absorbed: dict[int, int] = field(default_factory=dict)
    visible: tuple[int, ...] = ()


class TrackBook:
    """Live tracks, updated frame by frame from propagated masks and keyframe detections.

    Args:
        match_iou: Mask IoU at least which a detection continues a live track.
        contain: A detection with more than this fraction of its mask inside a live track's
            mask, of the track's class and of a comparable size, is that object again.
        contain_ratio: "Comparable size" for ``contain``: the smaller area over the larger at
            least this.
        patience: Frames an object may stay unseen before its track ends.
        duplicate_iou: On keyframes, of two live tracks whose masks overlap more than this,
            the younger ends.

    Raises:
        ValueError: A parameter out of range.
    """

    def __init__(
        self,
        *,
        match_iou: float = 0.5,
        contain: float = 0.8,
        contain_ratio: float = 0.5,
        patience: int = 15,
        duplicate_iou: float = 0.8,
    ) -> None:
        for name, value in (
            ("match_iou", match_iou),
            ("contain", contain),
            ("contain_ratio", contain_ratio),
            ("duplicate_iou", duplicate_iou),
        ):
            if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
                raise ValueError(f"{name}: expected a value in (0, 1], got {value!r}")
        self.match_iou = float(match_iou)
        self.contain = float(contain)
        self.contain_ratio = float(contain_ratio)
        self.patience = positive_int(patience, "patience")
        self.duplicate_iou = float(duplicate_iou)
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video); ids start again at 1."""
        self.tracks: dict[int, TrackState] = {}
        self.next_id = 1
        self.frames = 0

    def class_id(self, track_id: int) -> int:
        """The class of a live track (its majority vote)."""
        return self.tracks[track_id].class_id()

    def update(
        self,
        propagated: Propagated,
        detections: sv.Detections | None = None,
        *,
        keyframe: bool = False,
        scene_cut: bool = False,
    ) -> BookUpdate:
        """Account for one frame.

        Args:
            propagated: The live tracks' masks and visibility scores on this frame (every
                live track; ids the book does not know are an error).
            detections: The keyframe's instances (``mask`` (N, H, W) bool, ``class_id``
                (-1: unknown; absent: all -1), ``confidence`` (absent: 1)); None on other
                frames.
            keyframe: Run the duplicate check.
            scene_cut: A new shot: tracks no detection continues end.

        Returns:
            The frame's :class:`BookUpdate`.

        Raises:
            ValueError: ``propagated`` names a track the book does not hold, or detections
                without masks.
        """
        unknown = [int(i) for i in propagated.ids if int(i) not in self.tracks]
        if unknown:
            raise ValueError(f"propagated: tracks {unknown} are not live tracks of this book")
        step = self.frames
        self.frames += 1
        masks = {int(i): np.asarray(m, bool) for i, m in zip(propagated.ids, propagated.masks)}
        ended: list[int] = []
        for i, score in zip(propagated.ids, propagated.scores):
            track = self.tracks[int(i)]
            seen = float(score) > 0.5 and masks[int(i)].any()
            track.missing = 0 if seen else track.missing + 1
            if track.missing >= self.patience:
                ended.append(track.id)
        live = [int(i) for i in propagated.ids if int(i) not in ended]
        matched: dict[int, int] = {}
        absorbed: dict[int, int] = {}
        births: list[int] = []
        rows: list[int] = []
        if detections is not None and len(detections):
            if detections.mask is None:
                raise ValueError("detections: the tracker needs instance masks (mask is None)")
            found = np.asarray(detections.mask, bool)
            n = len(found)
            class_ids = (
                np.asarray(detections.class_id, np.int64)
                if detections.class_id is not None
                else np.full(n, -1, np.int64)
            )
            confidence = (
                np.asarray(detections.confidence, np.float64)
                if detections.confidence is not None
                else np.ones(n)
            )
            h, w = found.shape[1:]
            live_masks = np.stack([masks[i] for i in live]) if live else np.zeros((0, h, w), bool)
            iou, cover = pairwise_iou(found, live_masks)
            for r, c in greedy_match(iou, self.match_iou):
                matched[r] = live[c]
                track = self.tracks[live[c]]
                track.votes.append(int(class_ids[r]))
                track.confidence = float(confidence[r])
            found_area = found.sum(axis=(1, 2))
            live_area = live_masks.sum(axis=(1, 2))
            for r in range(n):
                if r in matched or found_area[r] == 0:
                    continue
                owner = self._container(r, cover, found_area, live_area, live, int(class_ids[r]))
                if owner is not None:
                    absorbed[r] = owner
                    continue
                track_id = self.next_id
                self.next_id += 1
                self.tracks[track_id] = TrackState(
                    track_id, step, [int(class_ids[r])], float(confidence[r])
                )
                masks[track_id] = found[r]
                births.append(track_id)
                rows.append(r)
        if scene_cut:
            continued = set(matched.values())
            ended += [i for i in live if i not in continued]
        if keyframe:
            ended += self._duplicates(masks, ended)
        for i in ended:
            self.tracks.pop(i, None)
        visible = tuple(
            sorted(i for i in masks if i in self.tracks and self.tracks[i].missing == 0)
        )
        return BookUpdate(
            births=tuple(births),
            birth_rows=tuple(rows),
            ended=tuple(sorted(set(ended))),
            matched=matched,
            absorbed=absorbed,
            visible=visible,
        )

    def _container(
        self,
        row: int,
        cover: np.ndarray,
        found_area: np.ndarray,
        live_area: np.ndarray,
        live: list[int],
        class_id: int,
    ) -> int | None:
        """The live track that detection ``row`` is mostly inside and is the same object as
        (same class, comparable size), or None."""
        best = None
        for c in np.argsort(-cover[row], kind="stable") if len(live) else ():
            if cover[row, c] <= self.contain:
                break
            small, large = sorted((float(found_area[row]), float(live_area[c])))
            if self.tracks[live[c]].class_id() == class_id and small >= self.contain_ratio * large:
                best = live[c]
                break
        return best

    def _duplicates(self, masks: dict[int, np.ndarray], ended: list[int]) -> list[int]:
        live = [i for i in sorted(masks) if i in self.tracks and i not in ended and masks[i].any()]
        if len(live) < 2:
            return []
        stack = np.stack([masks[i] for i in live])
        iou, _ = pairwise_iou(stack, stack)
        out: list[int] = []
        # Older tracks (earlier start, then smaller id) win.
        order = sorted(range(len(live)), key=lambda k: (self.tracks[live[k]].start, live[k]))
        for pos, a in enumerate(order):
            if live[a] in out:
                continue
            for b in order[pos + 1 :]:
                if live[b] not in out and iou[a, b] > self.duplicate_iou:
                    out.append(live[b])
        return out
