"""Masks <-> polygons, exactly.

Coordinates are COCO's: absolute pixels, pixel ``(x, y)`` covering the square
``[x, x + 1] x [y, y + 1]``. :func:`mask_to_polygons` traces the pixel *edges* (not the pixel
centres, as ``cv2.findContours`` does), so a polygon encloses exactly the pixels of its part
and pycocotools rasterises it back to the same pixels. That is why a 1-pixel mask becomes the
pixel's square ``[x, y, x+1, y, x+1, y+1, x, y+1]`` instead of a degenerate point (the cause
of the empty segmentations other exporters write for tiny masks).

Policy for multi-part masks and holes:

- every 8-connected part gives one polygon (all parts are kept); two parts touching only at a
  corner are one part, and their polygon pinches at that corner;
- holes are filled: COCO polygons have no way to cut a hole (pycocotools unions all polygons
  of an instance), and YOLO-seg has one polygon per instance. A hole is a 4-connected region of
  background that does not reach the image border, matching
  ``scipy.ndimage.binary_fill_holes``. Export as RLE to keep holes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from textseg.io._common import check_mask2d

__all__ = ["join_polygons", "mask_to_polygons", "polygons_to_mask", "polygons_to_rle"]


def _trace_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of the 8-connected parts of a non-empty mask, on pixel corners.

    Returns:
        ``(K, 2)`` int64 XY vertex arrays, one per part, no repeated or collinear vertices.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1).astype(np.uint8)
    # Doubling every pixel makes findContours' pixel-centre outline of the doubled mask land,
    # after (u + 1) // 2, exactly on the corners of the original pixels; its diagonal steps
    # between doubled blocks collapse to single corners.
    doubled = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    offset = np.array([x0 - 1, y0 - 1], dtype=np.int64)
    outlines = []
    for contour in contours:
        pts = (contour[:, 0, :].astype(np.int64) + 1) // 2 + offset
        pts = pts[np.any(pts != np.roll(pts, 1, axis=0), axis=1)]
        before = pts - np.roll(pts, 1, axis=0)
        after = np.roll(pts, -1, axis=0) - pts
        cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        straight = (cross == 0) & ((before * after).sum(axis=1) > 0)
        outlines.append(pts[~straight])
    return outlines


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def mask_to_polygons(mask: np.ndarray, *, tolerance: float = 0.0) -> list[list[float]]:
    """All outer polygons of a mask, one per 8-connected part, in COCO format.

    Args:
        mask: ``(H, W)`` bool mask.
        tolerance: 0 (default) for the exact outline along pixel edges (rasterises back to the
            same pixels, holes filled). A positive value simplifies each outline with
            Douglas-Peucker to at most this many pixels of deviation (fewer vertices, no
            longer exact); an outline that would become degenerate is kept exact.

    Returns:
        Polygons ``[[x0, y0, x1, y1, ...], ...]`` in absolute pixel coordinates (pixel
        ``(x, y)`` spans ``[x, x + 1]``), each with at least 3 points and non-zero area, largest
        part first. An empty mask gives ``[]``; a non-empty mask never does.

    Raises:
        TypeError: Not a bool numpy array.
        ValueError: Not 2-D, or a negative tolerance.
    """
    mask = check_mask2d(mask)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if not mask.any():
        return []
    outlines = _trace_outlines(mask)
    if tolerance > 0:
        simplified = []
        for pts in outlines:
            approx = cv2.approxPolyDP(pts.astype(np.int32)[:, None, :], tolerance, True)[:, 0]
            simplified.append(approx if len(approx) >= 3 and _area(approx) > 0 else pts)
        outlines = simplified
    outlines.sort(key=_area, reverse=True)
    return [pts.astype(np.float64).ravel().tolist() for pts in outlines]


def _check_polygons(polygons: Any, *, what: str) -> list[list[float]]:
    if not isinstance(polygons, (list, tuple)):
        raise TypeError(
            f"{what}: expected a list of polygons [[x0, y0, x1, y1, ...], ...], got "
            f"{type(polygons).__name__}"
        )
    out = []
    for i, polygon in enumerate(polygons):
        coords = np.asarray(polygon, dtype=np.float64).reshape(-1)
        if coords.size < 6 or coords.size % 2:
            raise ValueError(
                f"{what}: polygon {i} has {coords.size} coordinates; expected an even number, "
                f"at least 6 (3 points x, y)"
            )
        if not np.isfinite(coords).all():
            raise ValueError(f"{what}: polygon {i} has NaN or infinite coordinates")
        out.append(coords.tolist())
    return out


def polygons_to_rle(
    polygons: Sequence[Sequence[float]], height: int, width: int, *, what: str = "polygons"
) -> dict[str, Any]:
    """Rasterise polygons (unioned) to one COCO compressed RLE, as pycocotools does.

    Args:
        polygons: ``[[x0, y0, x1, y1, ...], ...]`` absolute pixels; ``[]`` gives an empty mask.
        height: Image height.
        width: Image width.
        what: What to call them in error messages.

    Returns:
        ``{"size": [H, W], "counts": str}``.

    Raises:
        TypeError / ValueError: Not a list of flat polygons of >= 3 finite points.
    """
    checked = _check_polygons(polygons, what=what)
    if not checked:
        empty = mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
        return {"size": [height, width], "counts": empty["counts"].decode()}
    rle = mask_utils.merge(mask_utils.frPyObjects(checked, height, width))
    return {"size": [height, width], "counts": rle["counts"].decode()}


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise polygons (unioned) to a mask, with pycocotools' rule (the one COCO
    evaluation uses), so :func:`mask_to_polygons` output comes back exactly.

    Args:
        polygons: ``[[x0, y0, x1, y1, ...], ...]`` absolute pixels; ``[]`` gives an empty mask.
        height: Image height.
        width: Image width.

    Returns:
        ``(H, W)`` bool mask.

    Raises:
        TypeError / ValueError: Not a list of flat polygons of >= 3 finite points.
    """
    rle = polygons_to_rle(polygons, height, width)
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _nearest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices of the closest vertices of ``a`` (K, 2) and ``b`` (M, 2), in bounded memory."""
    best, best_i, best_j = np.inf, 0, 0
    chunk = max(1, 2_000_000 // max(len(b), 1))
    for start in range(0, len(a), chunk):
        d = ((a[start : start + chunk, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        k = int(np.argmin(d))
        i, j = divmod(k, d.shape[1])
        if d[i, j] < best:
            best, best_i, best_j = float(d[i, j]), start + i, j
    return best_i, best_j


def join_polygons(polygons: Sequence[Sequence[float]]) -> list[float]:
    """Join several polygons into one, for formats with one polygon per instance (YOLO-seg).

    Parts are chained (each to the nearest remaining one, by centroid) and every link is a
    zero-width bridge walked out and back between the two closest vertices. With even-odd
    filling (pycocotools) the bridges cover no pixel, so the joined polygon rasterises to the
    union of the parts; ultralytics' ``cv2.fillPoly`` additionally draws each bridge as a
    1-pixel line. This is the convention ultralytics uses for multi-part COCO objects.

    Args:
        polygons: ``[[x0, y0, x1, y1, ...], ...]``, at least one, each >= 3 points.

    Returns:
        One flat polygon ``[x0, y0, x1, y1, ...]``.

    Raises:
        TypeError / ValueError: Malformed polygons or none.
    """
    checked = _check_polygons(polygons, what="join_polygons")
    if not checked:
        raise ValueError("join_polygons: expected at least one polygon, got none")
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in checked]
    if len(parts) == 1:
        return checked[0]
    centroids = np.stack([p.mean(axis=0) for p in parts])
    order, left = [0], list(range(1, len(parts)))
    while left:
        d = ((centroids[left] - centroids[order[-1]]) ** 2).sum(axis=1)
        order.append(left.pop(int(np.argmin(d))))
    parts = [parts[i] for i in order]
    # Part i is entered at vertex start[i] and left for part i + 1 at vertex exit[i].
    start, exit_ = [0], []
    for i in range(len(parts) - 1):
        a, b = _nearest_pair(parts[i], parts[i + 1])
        exit_.append(a)
        start.append(b)

    def walk(part: np.ndarray, frm: int, to: int, full_if_equal: bool) -> np.ndarray:
        n = len(part)
        count = (to - frm) % n + 1
        if full_if_equal and frm == to:
            count = n + 1
        return part[(frm + np.arange(count)) % n]

    last = len(parts) - 1
    pieces = [walk(parts[i], start[i], exit_[i], False) for i in range(last)]
    pieces.append(walk(parts[last], start[last], start[last], True))
    for i in range(last - 1, 0, -1):
        pieces.append(walk(parts[i], exit_[i], start[i], True))
    # Part 0 ends at its last vertex; the closing edge back to its vertex 0 is implicit.
    pieces.append(parts[0][exit_[0] :])
    joined = np.concatenate(pieces)
    return joined.ravel().tolist()
