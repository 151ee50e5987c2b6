"""The object being outlined: clicks, a box and SAM's candidate masks, as immutable values.

A :class:`Draft` never changes in place: every click, box or choice makes a new one, so the
session's undo keeps the old ones as they were. Model-free: nothing here calls SAM.

Coordinates are absolute pixels of the original image, x to the right, y down.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from textseg.masks import pairwise_iou

__all__ = ["Click", "Draft", "novel", "parse_classes", "source_of"]


@dataclass(frozen=True)
class Click:
    """One click: ``(x, y)`` pixels; ``positive`` True = foreground, False = background."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Draft:
    """The object being outlined now (immutable: every change makes a new Draft, which is what
    makes undo exact).

    Attributes:
        clicks: The foreground/background clicks, in order.
        box: ``(x0, y0, x1, y1)`` XYXY box prompt, or None.
        corner: First corner of a box being drawn with two clicks, or None.
        masks: ``(K, H, W)`` bool candidate masks (K = 3 for an ambiguous single click, else
            1; 0 before any prompt).
        scores: ``(K,)`` float32 SAM predicted IoU of each candidate.
        selected: Index of the chosen candidate (the best predicted IoU by default).
        class_name: Class proposed by the text pipeline (None for clicks).
        confidence: Detector/CLIP score of a text proposal (None for clicks).
        origin: ``"click"``, ``"box"`` or ``"text"``.
        edited: A text proposal changed by hand (clicks, a box or another candidate).
        latency_ms: Milliseconds SAM took to answer the last prompt (decode + upsample).
    """

    clicks: tuple[Click, ...] = ()
    box: tuple[float, float, float, float] | None = None
    corner: tuple[float, float] | None = None
    masks: np.ndarray | None = field(default=None, repr=False, compare=False)
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    selected: int = 0
    class_name: str | None = None
    confidence: float | None = None
    origin: str = "click"
    edited: bool = False
    latency_ms: float | None = None

    @property
    def empty(self) -> bool:
        """No prompt and no candidate mask."""
        return not self.clicks and self.box is None and self.corner is None and not self.n

    @property
    def n(self) -> int:
        """Number of candidate masks."""
        return 0 if self.masks is None else len(self.masks)

    @property
    def mask(self) -> np.ndarray | None:
        """The selected ``(H, W)`` bool candidate, or None."""
        return None if not self.n else self.masks[self.selected]  # type: ignore[index]


@dataclass(frozen=True)
class Snapshot:
    """One undo step: the draft, the waiting proposals and the image's annotations."""

    draft: Draft
    proposals: tuple[Draft, ...]
    annotations: tuple[dict[str, Any], ...]


def parse_classes(text: str | Sequence[str] | None) -> list[str]:
    """Class names from ``"dog, frisbee"`` (commas, semicolons or periods separate) or a list;
    blanks dropped, duplicates removed, order kept."""
    if text is None:
        return []
    items = re.split(r"[,;.\n]", text) if isinstance(text, str) else [str(t) for t in text]
    out: list[str] = []
    for item in items:
        name = " ".join(item.split())
        if name and name not in out:
            out.append(name)
    return out


def source_of(draft: Draft, class_name: str) -> str:
    """Who made an annotation (the ``"source"`` field, :data:`textseg.train.data.SOURCES`):
    ``"manual"`` for clicks and boxes, ``"proposal"`` for a text proposal accepted unchanged,
    ``"corrected"`` when its mask or class was changed."""
    if draft.origin != "text":
        return "manual"
    return "corrected" if draft.edited or class_name != draft.class_name else "proposal"


def novel(candidates: np.ndarray, existing: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """``(N,)`` bool: candidates ``(N, H, W)`` whose IoU with every existing mask
    ``(M, H, W)`` is at most ``threshold``."""
    if not len(existing) or not len(candidates):
        return np.ones(len(candidates), bool)
    iou, _ = pairwise_iou(candidates, existing)
    return (iou <= threshold).all(axis=1)
