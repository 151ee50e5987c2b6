"""Masks <-> polygons, exactly.

Coordinates are COCO's: absolute pixels, pixel ``(x, y)`` covering the square
``[x, x + 1] x [y, y + 1]``. :func:`mask_to_polygons` traces the pixel *edges* (not the pixel
centres, as ``cv2.findContours`` does), so a polygon encloses exactly the pixels of its part
and pycocotools rasterises it back to the same pixels. That is why a 1-pixel mask at
``(x, y)`` becomes the pixel's square, corners ``(x, y)`` and ``(x + 1, y + 1)``, instead of a
degenerate point (the cause of the empty segmentations other exporters write for tiny masks).

Policy for multi-part masks and holes:

- every 8-connected part gives one polygon (all parts are kept, largest first); two parts
  touching only at a corner are one part, and their polygon pinches at that corner;
- holes (4-connected background regions inside a part, as ``scipy.ndimage.binary_fill_holes``
  finds them) are kept by default: each is cut into its part's polygon through a zero-width
  bridge (a "keyhole"), and runs opposite to the outer outline, so both even-odd
  (pycocotools, ``cv2.fillPoly``) and non-zero filling leave it empty. COCO has no other way:
  pycocotools unions the polygons of an instance. ``holes=False`` fills them instead;
- RLE (:mod:`textseg.io.rle`) is exact too and usually much smaller; polygons are for tools
  that want them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from textseg.io._common import check_mask2d

__all__ = ["join_polygons", "mask_to_polygons", "polygons_to_mask", "polygons_to_rle"]


def _clean(pts: np.ndarray) -> np.ndarray:
    """Drop repeated and collinear vertices of a closed outline."""
    pts = pts[np.any(pts != np.roll(pts, 1, axis=0), axis=1)]
    before = pts - np.roll(pts, 1, axis=0)
    after = np.roll(pts, -1, axis=0) - pts
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    straight = (cross == 0) & ((before * after).sum(axis=1) > 0)
    return pts[~straight]


def _trace_outlines(mask: np.ndarray) -> list[tuple[int, np.ndarray, list[np.ndarray]]]:
    """Outlines of the 8-connected parts of a non-empty mask and of their holes, on pixel
    corners.

    Returns:
        One ``(depth, outer, holes)`` per part: depth 0 for a top-level part, 2, 4... for an
        island inside a hole; ``(K, 2)`` int64 XY vertex arrays without repeated or collinear
        vertices; holes (4-connected background regions inside the part) run in the opposite
        direction to the outer outline.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1).astype(np.uint8)
    # Doubling every pixel makes findContours' pixel-centre outline of the doubled mask land,
    # after (u + 1) // 2, exactly on the corners of the original pixels (for outer outlines
    # and holes alike); its diagonal steps between doubled blocks collapse to single corners.
    doubled = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    offset = np.array([x0 - 1, y0 - 1], dtype=np.int64)
    outlines = [_clean((c[:, 0, :].astype(np.int64) + 1) // 2 + offset) for c in contours]
    parents = hierarchy[0][:, 3]
    depth = np.zeros(len(contours), dtype=np.int64)
    for i in range(len(contours)):
        j = parents[i]
        while j >= 0:
            depth[i] += 1
            j = parents[j]
    # Even depth: the outline of a part (depth > 0: an island inside a hole); odd: a hole.
    parts = []
    for i in np.flatnonzero(depth % 2 == 0):
        holes = [outlines[j] for j in np.flatnonzero(parents == i)]
        parts.append((int(depth[i]), outlines[i], holes))
    return parts


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    if tolerance <= 0:
        return points
    approx = cv2.approxPolyDP(points.astype(np.int32)[:, None, :], tolerance, True)[:, 0]
    # An outline that would collapse keeps its exact form: never a degenerate polygon.
    return approx.astype(np.int64) if len(approx) >= 3 and _area(approx) > 0 else points


#: Where in a boundary pixel the "centres" tracing puts a vertex: 0.4 px from its top-left
#: corner, so readers that truncate (ultralytics) and readers that round (supervision) both
#: land on the pixel itself (a vertex at exactly +0.5 rounds half-to-even, one way or the other).
_CENTRE = 0.4


def _trace_centres(mask: np.ndarray) -> list[tuple[int, np.ndarray, list[np.ndarray]]]:
    """Like :func:`_trace_outlines`, but through the boundary pixels themselves (float XY, a
    vertex :data:`_CENTRE` px into its pixel): what OpenCV's ``fillPoly``, which paints the
    outline too, turns back into the mask (ultralytics, supervision)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1).astype(np.uint8)
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([x0 - 1, y0 - 1], dtype=np.float64) + _CENTRE
    outlines = []
    for c in contours:
        pts = c[:, 0, :].astype(np.float64) + offset
        if len(pts) < 3:  # a one- or two-pixel line: a thin quad through its centres
            a, b = pts[0], pts[-1]
            step = np.array([0.0, 1e-3])
            pts = np.array([a, b, b + step, a + step])
        outlines.append(pts)
    parents = hierarchy[0][:, 3]
    depth = np.zeros(len(contours), dtype=np.int64)
    for i in range(len(contours)):
        j = parents[i]
        while j >= 0:
            depth[i] += 1
            j = parents[j]
    return [
        (int(depth[i]), outlines[i], [outlines[j] for j in np.flatnonzero(parents == i)])
        for i in np.flatnonzero(depth % 2 == 0)
    ]


def mask_to_polygons(
    mask: np.ndarray,
    *,
    holes: bool = True,
    tolerance: float = 0.0,
    trace: Literal["edges", "centres"] = "edges",
) -> list[list[float]]:
    """All outer polygons of a mask, one per 8-connected part, in COCO format.

    Args:
        mask: ``(H, W)`` bool mask.
        trace: ``"edges"`` (default): the exact outline along pixel edges, which pycocotools
            rasterises back to exactly the mask. ``"centres"``: through the centres of the
            boundary pixels, which OpenCV-based tools (ultralytics, supervision) fill back to
            the mask, where pixel-edge polygons come back about a pixel fatter.
        holes: True (default): cut each hole into its part's polygon with a zero-width bridge
            (a "keyhole"), so the polygon rasterises back to exactly the mask. False: fill
            holes (plain outer outlines, for tools that cannot take keyholes).
        tolerance: 0 (default) for the exact outline along pixel edges. A positive value
            simplifies each outline with Douglas-Peucker to at most this many pixels of
            deviation (fewer vertices, no longer exact); an outline that would become
            degenerate is kept exact.

    Returns:
        Polygons ``[[x0, y0, x1, y1, ...], ...]`` in absolute pixel coordinates (pixel
        ``(x, y)`` spans ``[x, x + 1]``), each with at least 3 points and non-zero area,
        largest part first. An empty mask gives ``[]``; a non-empty mask never does.

    Raises:
        TypeError: Not a bool numpy array.
        ValueError: Not 2-D, or a negative tolerance.
    """
    mask = check_mask2d(mask)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if trace not in ("edges", "centres"):
        raise ValueError(f"trace must be 'edges' or 'centres', got {trace!r}")
    if not mask.any():
        return []
    polygons = []
    tracer = _trace_outlines if trace == "edges" else _trace_centres
    for depth, outer, inner in tracer(mask):
        if depth > 0 and not holes:
            continue  # an island in a hole: inside the filled part already
        outer = _simplify(outer, tolerance) if trace == "edges" else outer
        if holes and inner:
            parts = [outer, *(_simplify(h, tolerance) if trace == "edges" else h for h in inner)]
            joined = _join(parts)
        else:
            joined = outer
        polygons.append((_area(outer), joined))
    polygons.sort(key=lambda item: item[0], reverse=True)
    return [pts.astype(np.float64).ravel().tolist() for _, pts in polygons]


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


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """Chain ``(K_i, 2)`` outlines into one with zero-width bridges (see :func:`join_polygons`)."""
    if len(parts) == 1:
        return parts[0]
    centroids = np.stack([p.mean(axis=0) for p in parts])
    order, left = [0], list(range(1, len(parts)))
    while left:
        d = ((centroids[left] - centroids[order[-1]]) ** 2).sum(axis=1)
        order.append(left.pop(int(np.argmin(d))))
    parts = [parts[i] for i in order]
    # Part i is entered at vertex start[i] and left for part i + 1 at vertex exit_[i]; the walk
    # goes down the chain and comes back up, so every bridge is walked out and back.
    start, exit_ = [0], []
    for i in range(len(parts) - 1):
        a, b = _nearest_pair(parts[i], parts[i + 1])
        exit_.append(a)
        start.append(b)

    def walk(part: np.ndarray, frm: int, to: int, *, full_if_equal: bool) -> np.ndarray:
        n = len(part)
        count = n + 1 if full_if_equal and frm == to else (to - frm) % n + 1
        return part[(frm + np.arange(count)) % n]

    last = len(parts) - 1
    pieces = [walk(parts[i], start[i], exit_[i], full_if_equal=False) for i in range(last)]
    pieces.append(walk(parts[last], start[last], start[last], full_if_equal=True))
    for i in range(last - 1, 0, -1):
        pieces.append(walk(parts[i], exit_[i], start[i], full_if_equal=True))
    # Part 0 ends at its last vertex; the closing edge back to its vertex 0 is implicit.
    pieces.append(parts[0][exit_[0] :])
    return np.concatenate(pieces)


def join_polygons(polygons: Sequence[Sequence[float]]) -> list[float]:
    """Join several polygons into one, for formats with one polygon per instance (YOLO-seg).

    Parts are chained (each to the nearest remaining one, by centroid) and every link is a
    zero-width bridge walked out and back between the two closest vertices. With even-odd
    filling (pycocotools) the bridges cover no pixel, so the joined polygon of disjoint parts
    rasterises to their union (and a keyhole polygon from :func:`mask_to_polygons` keeps its
    holes); ultralytics' ``cv2.fillPoly`` additionally draws each bridge as a 1-pixel line.
    This is also how ultralytics joins the parts of multi-part COCO objects.

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
    if len(checked) == 1:
        return checked[0]
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in checked]
    return _join(parts).ravel().tolist()
