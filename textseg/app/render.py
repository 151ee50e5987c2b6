"""Painting the app's picture: accepted masks by class colour with their labels, the draft's
selected mask, the clicks and the box, over the image.

:class:`Overlay` keeps the image with the accepted masks (the base layer) until they, the
highlight or the opacity change, so a click only repaints the draft on a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import supervision as sv

from textseg.app.draft import Draft

__all__ = ["Overlay"]

# Overlay colours (RGB).
DRAFT_RGB = (255, 0, 255)
_POSITIVE_RGB = (0, 200, 0)
_NEGATIVE_RGB = (230, 20, 20)
_BOX_RGB = (255, 215, 0)


class Overlay:
    """The picture of the current image; the base layer is cached by its inputs."""

    def __init__(self) -> None:
        self._base: tuple[tuple[Any, ...], np.ndarray] | None = None

    def clear(self) -> None:
        """Forget the cached base layer (a new image)."""
        self._base = None

    def render(
        self,
        image: np.ndarray,
        key: str,
        annotations: Sequence[dict[str, Any]],
        masks: np.ndarray,
        labels: Sequence[str],
        classes: Sequence[str],
        draft: Draft,
        *,
        highlight: int | None = None,
        opacity: float = 0.45,
    ) -> np.ndarray:
        """The picture: ``image`` (H, W, 3) uint8 RGB with the accepted ``annotations``
        (``masks`` (N, H, W) bool, class names ``labels``; colours by index in ``classes``),
        the ``highlight`` ed annotation id outlined, the draft's selected mask (magenta,
        outlined), its clicks (green foreground, red background) and its box.

        ``key`` names the image for the cache (its file name).

        Returns:
            ``(H, W, 3)`` uint8 RGB, the size of the image (so click coordinates on it are
            image pixels).
        """
        out = self._base_layer(
            image, key, annotations, masks, labels, classes, highlight, opacity
        ).copy()
        h, w = image.shape[:2]
        thick = max(2, round(max(h, w) / 320))
        mask = draft.mask
        if mask is not None and mask.any():
            _paint(out, mask, np.array(DRAFT_RGB, np.float32), opacity, (255, 255, 255), thick)
        if draft.box is not None:
            x0, y0, x1, y1 = (round(v) for v in draft.box)
            cv2.rectangle(out, (x0, y0), (x1, y1), _BOX_RGB, thick)
        if draft.corner is not None:
            cx, cy = (round(v) for v in draft.corner)
            cv2.drawMarker(out, (cx, cy), _BOX_RGB, cv2.MARKER_CROSS, 8 * thick, thick)
        radius = max(4, round(max(h, w) / 120))
        for click in draft.clicks:
            center = (round(click.x), round(click.y))
            color = _POSITIVE_RGB if click.positive else _NEGATIVE_RGB
            cv2.circle(out, center, radius + 2, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, center, radius, color, -1, cv2.LINE_AA)
        return out

    def _base_layer(
        self,
        image: np.ndarray,
        key: str,
        anns: Sequence[dict[str, Any]],
        masks: np.ndarray,
        labels: Sequence[str],
        classes: Sequence[str],
        highlight: int | None,
        opacity: float,
    ) -> np.ndarray:
        """The image with the accepted masks, cached until they or the highlight change."""
        cache_key = (
            key,
            tuple((int(a["id"]), int(a["category_id"])) for a in anns),
            tuple(labels),
            highlight,
            opacity,
        )
        if self._base is not None and self._base[0] == cache_key:
            return self._base[1]
        out = image.copy()
        h, w = image.shape[:2]
        thick = max(1, round(max(h, w) / 480))
        for ann, mask, name in zip(anns, masks, labels):
            color = sv.ColorPalette.DEFAULT.by_idx(list(classes).index(name)).as_rgb()
            lit = highlight == int(ann["id"])
            edge = (255, 255, 0) if lit else color
            _paint(out, mask, np.array(color, np.float32), opacity, edge, thick * (3 if lit else 1))
        for ann, mask, name in zip(anns, masks, labels):
            if mask.any():
                _label(out, f"#{ann['id']} {name}", ann["bbox"], max(0.4, max(h, w) / 1600))
        self._base = (cache_key, out)
        return out


def _label(out: np.ndarray, text: str, bbox: Sequence[float], scale: float) -> None:
    """White ``text`` on black at the top left of a COCO ``bbox``, in place."""
    x, y = int(bbox[0]), int(bbox[1])
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(y, th + base)
    cv2.rectangle(out, (x, y - th - base), (x + tw, y), (0, 0, 0), -1)
    white = (255, 255, 255)
    cv2.putText(out, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, white, 1, cv2.LINE_AA)


def _paint(
    out: np.ndarray,
    mask: np.ndarray,
    fill: np.ndarray,
    opacity: float,
    edge: tuple[int, int, int],
    thickness: int,
) -> None:
    """Blend ``fill`` into ``out`` (H, W, 3) uint8 under ``mask`` (H, W) bool, in place, and
    draw its edge ``thickness`` pixels wide. The edge is the mask minus its erosion: cost
    O(H*W) whatever the outline, where contour tracing slows down on ragged masks."""
    region = out[mask].astype(np.float32)
    out[mask] = (region * (1 - opacity) + fill * opacity).astype(np.uint8)
    m = mask.astype(np.uint8)
    kernel = np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8)
    border = (m - cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0
    out[border] = edge
