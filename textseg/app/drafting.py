"""The work on the open image before anything is accepted: the draft, the waiting proposals and
the undo history.

:class:`DraftBoard` turns clicks, boxes and candidate choices into new
:class:`~textseg.app.draft.Draft` values (SAM answers through a
:class:`~textseg.app.predict.ClickPredictor`) and keeps a snapshot before each change: the
draft, the proposals and the image's accepted annotations, so one undo puts all three back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import supervision as sv

from textseg.app.draft import Click, Draft, Snapshot, novel
from textseg.app.predict import ClickPredictor
from textseg.fields import CLASS_NAME, SAM_IOU

__all__ = ["DraftBoard", "proposals_from"]


class DraftBoard:
    """The draft and the proposals of the open image, with their undo history.

    Args:
        predictor: What answers clicks and boxes.
        annotations: Returns the open image's accepted annotations (kept in each snapshot).
        history: Undo steps kept.
    """

    def __init__(
        self,
        predictor: ClickPredictor,
        annotations: Callable[[], tuple[dict[str, Any], ...]],
        history: int = 50,
    ) -> None:
        if history < 1:
            raise ValueError(f"history: expected a positive number of undo steps, got {history}")
        self.predictor = predictor
        self.history = int(history)
        self._annotations = annotations
        self.draft = Draft()
        self.proposals: tuple[Draft, ...] = ()
        self.embedding: Any = None
        self.size = (0, 0)
        self._undo: list[Snapshot] = []

    def reset(self, embedding: Any, size: tuple[int, int]) -> None:
        """A new image (its embedding, ``(H, W)``): no draft, no proposal, no history."""
        self.embedding, self.size = embedding, size
        self.draft, self.proposals, self._undo = Draft(), (), []

    # ------------------------------------------------------------------ history
    def push(self) -> None:
        """Remember the state before a change (the oldest step goes beyond ``history``)."""
        self._undo.append(Snapshot(self.draft, self.proposals, self._annotations()))
        del self._undo[: -self.history]

    def pop(self) -> Snapshot | None:
        """The last snapshot, taken off the history (None when empty); :meth:`restore` it."""
        return self._undo.pop() if self._undo else None

    def restore(self, snap: Snapshot) -> None:
        """Put a snapshot's draft and proposals back."""
        self.draft, self.proposals = snap.draft, snap.proposals

    def set_proposals(self, found: tuple[Draft, ...]) -> None:
        """The first of ``found`` becomes the draft, the others wait."""
        self.draft, self.proposals = (found[0], found[1:]) if found else (Draft(), ())

    def reject(self) -> Draft:
        """Drop the draft; the next proposal (if any) becomes the draft."""
        if self.draft.empty and not self.proposals:
            return self.draft
        self.push()
        self.set_proposals(self.proposals)
        return self.draft

    # ------------------------------------------------------------------ prompting
    def _check_point(self, x: float, y: float) -> tuple[float, float]:
        h, w = self.size
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= w and 0 <= y <= h):
            raise ValueError(f"click: expected a point inside the {w}x{h} image, got ({x}, {y})")
        return float(x), float(y)

    def add_click(self, x: float, y: float, *, positive: bool = True) -> Draft:
        """Add a click and re-run SAM (three candidates for a lone click, else one)."""
        x, y = self._check_point(x, y)
        self.push()
        clicks = (*self.draft.clicks, Click(x, y, bool(positive)))
        draft = replace(self.draft, clicks=clicks, corner=None)
        self.draft = self.predictor.predict(self.embedding, draft)
        return self.draft

    def add_box(self, x0: float, y0: float, x1: float, y1: float) -> Draft:
        """Set the box prompt (corners in any order; replaces an earlier box) and re-run SAM."""
        x0, y0 = self._check_point(x0, y0)
        x1, y1 = self._check_point(x1, y1)
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise ValueError(
                f"box: expected two different corners, got a degenerate box {list(box)}; "
                f"click two opposite corners"
            )
        self.push()
        draft = replace(self.draft, box=box, corner=None)
        self.draft = self.predictor.predict(self.embedding, draft)
        return self.draft

    def add_box_corner(self, x: float, y: float) -> Draft:
        """The first click sets a corner, the second the opposite corner and runs SAM."""
        x, y = self._check_point(x, y)
        corner = self.draft.corner
        if corner is None:
            self.push()
            self.draft = replace(self.draft, corner=(x, y))
            return self.draft
        if abs(corner[0] - x) < 1 or abs(corner[1] - y) < 1:
            raise ValueError(
                f"box: the second corner ({x:.0f}, {y:.0f}) is on the same row or column as the "
                f"first ({corner[0]:.0f}, {corner[1]:.0f}); click the opposite corner"
            )
        return self.add_box(corner[0], corner[1], x, y)

    def select_candidate(self, k: int) -> Draft:
        """Choose candidate ``k`` (0-based) of the draft."""
        n = self.draft.n
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k < n:
            raise ValueError(
                f"candidate: expected 0..{n - 1}, got {k!r}"
                if n
                else "candidate: there is no candidate mask; click on the image first"
            )
        if int(k) != self.draft.selected:
            self.push()
            edited = self.draft.edited or self.draft.origin == "text"
            self.draft = replace(self.draft, selected=int(k), edited=edited)
        return self.draft

    def overlay_runs(self) -> np.ndarray:
        """The draft's selected mask as run boundaries ``[start_0, end_0, ...]`` (uint32
        indices into the row-major ``H * W`` pixels, each ``[start, end)`` a run of mask
        pixels; empty when there is no mask)."""
        mask = self.draft.mask
        if mask is None:
            return np.zeros(0, np.uint32)
        flat = np.concatenate(([False], mask.ravel(), [False]))
        return np.flatnonzero(flat[1:] != flat[:-1]).astype(np.uint32)


def proposals_from(
    detections: sv.Detections, existing: np.ndarray, latency_ms: float
) -> tuple[Draft, ...]:
    """A pipeline's masks as text proposals, best ``confidence`` first, less those an
    ``existing`` ``(M, H, W)`` mask already covers (IoU > 0.8)."""
    dets = detections
    if len(dets):
        dets = dets[novel(dets.mask, existing)]
    # SAM 3 and specialist masks come without SAM's predicted IoU: their score stands in.
    ious = dets.data.get(SAM_IOU, dets.confidence)
    order = np.argsort(-np.asarray(dets.confidence, np.float64), kind="stable")
    return tuple(
        Draft(
            masks=dets.mask[i : i + 1],
            scores=np.asarray(ious[i : i + 1], np.float32),
            class_name=str(dets.data[CLASS_NAME][i]),
            confidence=float(dets.confidence[i]),
            origin="text",
            latency_ms=latency_ms,
        )
        for i in order
    )
