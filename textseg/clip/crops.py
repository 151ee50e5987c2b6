"""The crop CLIP sees for one mask: square, with context, every pixel outside the mask blanked.

Scoring a plain bounding-box crop lets the background inside the box decide: the crop of a
wheel's box is mostly car, and FastSAM / ultralytics' text prompt picks the car mask for "wheel"
for that reason. With the outside painted CLIP's mean colour (zero after normalisation: "no
content"), each mask is judged on its own pixels. The labeler, the CLIP mask selector and the
text-prompt trainer all use :func:`masked_crop`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["mask_box", "masked_crop"]


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """``(4,)`` float64 XYXY box of a ``(H, W)`` bool mask, pixel edges (x2, y2 exclusive), or
    None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)


def masked_crop(
    image: np.ndarray,
    mask: np.ndarray | None,
    *,
    fill: Sequence[float],
    context: float = 0.1,
    box: np.ndarray | None = None,
    max_size: int | None = None,
) -> np.ndarray | None:
    """The square crop around a mask (or a box) with every pixel outside the mask blanked.

    The square is centred on the box, with side ``(1 + 2 * context) * max(box width, box
    height)``, so CLIP's centre crop cuts nothing off; parts outside the image are filled too.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool, or None to keep every pixel of the crop (then ``box`` is needed).
        fill: RGB colour (0-255) of blanked pixels (CLIP's pixel mean).
        context: Margin around the box on each side, as a fraction of its longer side.
        box: ``(4,)`` XYXY absolute pixels; default the mask's tight box.
        max_size: Resize crops larger than this (area interpolation), e.g. CLIP's input size.

    Returns:
        ``(S, S, 3)`` uint8 crop, or None for an empty mask.

    Raises:
        ValueError: A mask whose shape is not the image's, or neither mask nor box.
    """
    if mask is not None and mask.shape != image.shape[:2]:
        raise ValueError(f"mask: expected shape {image.shape[:2]}, got {mask.shape}")
    if box is None:
        if mask is None:
            raise ValueError("masked_crop: give a mask or a box")
        box = mask_box(mask)
        if box is None:
            return None
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0) * (1.0 + 2.0 * context)
    size = max(1, math.ceil(side - 1e-6))  # 20 * 1.2 must give 24, not 25
    left = math.floor((x0 + x1) / 2 - size / 2)
    top = math.floor((y0 + y1) / 2 - size / 2)
    colour = np.clip(np.round(np.asarray(fill, dtype=np.float64)), 0, 255).astype(np.uint8)
    ix0, iy0 = max(left, 0), max(top, 0)
    ix1, iy1 = min(left + size, width), min(top + size, height)
    if max_size is not None and size > max_size:
        # A large crop is made at the output size: the region is shrunk first, so a mask of a
        # 48-megapixel photo never costs a full-resolution canvas.
        scale = max_size / size
        canvas = np.empty((max_size, max_size, 3), np.uint8)
        canvas[:] = colour
        if ix1 > ix0 and iy1 > iy0:
            tx0, ty0 = math.floor((ix0 - left) * scale), math.floor((iy0 - top) * scale)
            tx1 = max(tx0 + 1, min(max_size, math.ceil((ix1 - left) * scale)))
            ty1 = max(ty0 + 1, min(max_size, math.ceil((iy1 - top) * scale)))
            region = cv2.resize(
                image[iy0:iy1, ix0:ix1], (tx1 - tx0, ty1 - ty0), interpolation=cv2.INTER_AREA
            )
            target = canvas[ty0:ty1, tx0:tx1]
            if mask is None:
                target[:] = region
            else:
                small = cv2.resize(
                    mask[iy0:iy1, ix0:ix1].astype(np.uint8),
                    (tx1 - tx0, ty1 - ty0),
                    interpolation=cv2.INTER_AREA,
                )
                keep = small > 0
                target[keep] = region[keep]
        return canvas
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = colour
    if ix1 > ix0 and iy1 > iy0:
        region = image[iy0:iy1, ix0:ix1]
        target = canvas[iy0 - top : iy1 - top, ix0 - left : ix1 - left]
        if mask is None:
            target[:] = region
        else:
            keep = mask[iy0:iy1, ix0:ix1]
            target[keep] = region[keep]
    return canvas
