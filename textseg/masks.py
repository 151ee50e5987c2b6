"""Mask geometry, one home for the whole package: IoU and cover, matching, boxes and NMS.

The pipeline (de-duplication), the tracker (matching detections to tracks), the app (novel
proposals), eval (matching ground truth) and the exporters (boxes) all import these; none has
its own copy.

Conventions:

- dense masks are ``(N, H, W)`` bool arrays; compact masks are any object with ``rles`` (COCO
  RLEs with ``counts`` as str or bytes), ``height`` and ``width``
  (:class:`textseg.io.rle.CompactMasks`), or a list of such RLEs;
- boxes are ``(N, 4)`` XYXY absolute pixels, float32, with x1/y1 the last column/row of the mask
  (inclusive), as supervision's ``mask_to_xyxy`` and segment_anything compute them: a one-pixel
  mask at (x, y) has box (x, y, x, y). COCO's ``[x, y, w, h]`` of the same mask is
  :func:`coco_bbox` (``w = x1 - x0 + 1``), what ``pycocotools.mask.toBbox`` gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = [
    "coco_bbox",
    "greedy_match",
    "mask_iou_matrix",
    "mask_nms",
    "masks_to_boxes",
    "paired_iou",
    "pairwise_iou",
]


def masks_to_boxes(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, H, W)`` bool masks (numpy, or torch on any device) -> ``(N, 4)`` float32 XYXY
    boxes, x2/y2 the last column/row of the mask (inclusive, as supervision's
    ``mask_to_xyxy``); empty masks give zeros. The one mask -> box conversion of textseg."""
    if isinstance(masks, torch.Tensor):
        m = masks.bool()
        rows, cols = m.any(dim=2).cpu().numpy(), m.any(dim=1).cpu().numpy()
    else:
        m = np.asarray(masks, dtype=bool)
        rows, cols = m.any(axis=2), m.any(axis=1)
    n = rows.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    h, w = rows.shape[1], cols.shape[1]
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - 1 - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - 1 - np.argmax(rows[:, ::-1], axis=1)
    boxes[~rows.any(axis=1)] = 0.0
    return boxes


def _rles(masks: np.ndarray) -> list[dict]:
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


#: Measured on a 2-core AMD EPYC (torch 2.14): seconds per run-length run visited by
#: pycocotools' pairwise IoU, and per multiply-add of the dense intersection product.
_RLE_SECONDS_PER_RUN = 3e-9
_DENSE_SECONDS_PER_MAC = 2.5e-11


def mask_iou_matrix(
    masks: MaskSet, *, method: str = "auto", dense_bytes: int = 32 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise mask IoU and intersection-over-smaller-area (containment), exact.

    Two exact ways, chosen by their estimated cost: run-length encodings (pycocotools; cost grows
    with the masks' perimeters, the fast way for smooth masks) or a blocked matrix product of the
    flattened masks over their joint bounding box (cost grows with the pixel count; the fast way
    for many ragged masks, e.g. hundreds of candidates from the automatic generator, where the
    run-length way takes minutes).

    Args:
        masks: ``(N, H, W)`` bool masks, or compact masks (decoded when ``N * H * W`` is at
            most ``dense_bytes``, else compared as run-length encodings).
        method: ``"auto"`` (the cheaper of the two), ``"rle"`` or ``"dense"``.

    Returns:
        ``(N, N)`` IoU and ``(N, N)`` containment, both float64.
    """
    if method not in ("auto", "rle", "dense"):
        raise ValueError(f"method: expected 'auto', 'rle' or 'dense', got {method!r}")
    rles = _compact_rles(masks)
    if rles is not None:
        h, w = (int(v) for v in rles[0]["size"]) if rles else (0, 0)
        if len(rles) * h * w > dense_bytes:
            iou, _ = pairwise_iou(rles, rles)
            area = np.asarray([mask_utils.area(r) for r in rles], np.float64)
            inter = np.round(iou * (area[:, None] + area[None, :]) / (1.0 + iou))
            smaller = np.minimum(area[:, None], area[None, :])
            contain = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
            return iou, contain
        masks = _dense(masks) if rles else np.zeros((0, 0, 0), bool)
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0)), np.zeros((0, 0))
    masks = np.asarray(masks, dtype=bool)
    # From the dense masks: pycocotools' area() overflows on 256+ RLEs (2.0.11, numpy 2).
    area = masks.reshape(n, -1).sum(1, dtype=np.float64)
    rows = np.flatnonzero(masks.any(axis=(0, 2)))
    cols = np.flatnonzero(masks.any(axis=(0, 1)))
    if len(rows) == 0:  # all empty
        return np.zeros((n, n)), np.zeros((n, n))
    masks = masks[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if method == "auto":
        method = _cheaper_iou_method(masks)
    if method == "rle":
        rles = _rles(masks)
        iou = np.asarray(mask_utils.iou(rles, rles, [0] * n), dtype=np.float64).reshape(n, n)
        inter = iou * (area[:, None] + area[None, :]) / (1.0 + iou)
        inter = np.round(inter)
    else:
        inter = _dense_intersections(masks.reshape(n, -1))
        union = area[:, None] + area[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    smaller = np.minimum(area[:, None], area[None, :])
    contain = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    return iou, contain


def _cheaper_iou_method(masks: np.ndarray) -> str:
    """``"rle"`` or ``"dense"``: the way :func:`mask_iou_matrix` estimates as cheaper."""
    n = len(masks)
    # Runs down the columns (RLE order): each pair visits the runs of both masks.
    runs = np.count_nonzero(masks[:, 1:, :] != masks[:, :-1, :]) + n * masks.shape[2]
    rle_cost = 2.0 * n * runs * _RLE_SECONDS_PER_RUN
    dense_cost = float(n) * n * masks[0].size * _DENSE_SECONDS_PER_MAC
    return "rle" if rle_cost <= dense_cost else "dense"


def _dense_intersections(flat: np.ndarray, block_bytes: int = 1 << 25) -> np.ndarray:
    """``(N, N)`` pixel counts of pairwise intersections of ``(N, P)`` bool masks, exact.

    float32 products over pixel blocks of at most 2**24 pixels are exact integers; the blocks
    are summed in float64.
    """
    n, p = flat.shape
    block = int(min(max(block_bytes // (4 * n), 1024), 1 << 24))
    inter = torch.zeros((n, n), dtype=torch.float64)
    for start in range(0, p, block):
        part = torch.from_numpy(np.ascontiguousarray(flat[:, start : start + block]))
        part = part.to(torch.float32)
        inter += (part @ part.T).to(torch.float64)
    return inter.numpy()


def mask_nms(
    masks: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = 0.7,
    containment_threshold: float | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression on masks (not boxes).

    A mask is dropped when a higher-scoring kept mask overlaps it with IoU above
    ``iou_threshold``, or (if given) covers more than ``containment_threshold`` of the smaller
    of the two.

    Args:
        masks: ``(N, H, W)`` bool masks.
        scores: ``(N,)`` scores, higher is better.

    Returns:
        Indices of the kept masks, highest score first.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    if len(order) == 0:
        return order.astype(np.int64)
    iou, contain = mask_iou_matrix(masks)
    suppress = iou > iou_threshold
    if containment_threshold is not None:
        suppress |= contain > containment_threshold
    keep: list[int] = []
    removed = np.zeros(len(order), bool)
    for i in order:
        if removed[i]:
            continue
        keep.append(int(i))
        removed |= suppress[i]
    return np.asarray(keep, dtype=np.int64)


def coco_bbox(xyxy: np.ndarray | Sequence[float]) -> np.ndarray:
    """Inclusive XYXY boxes (:func:`masks_to_boxes`) -> COCO ``[x, y, w, h]`` float64, the box
    ``pycocotools.mask.toBbox`` gives for the same mask (``w = x1 - x0 + 1``); ``(4,)`` or
    ``(N, 4)`` in, the same shape out. All-zero rows (empty masks) stay zero."""
    boxes = np.asarray(xyxy, dtype=np.float64)
    flat = boxes.reshape(-1, 4)
    out = np.zeros_like(flat)
    nonempty = flat.any(axis=1)
    out[nonempty, 0] = flat[nonempty, 0]
    out[nonempty, 1] = flat[nonempty, 1]
    out[nonempty, 2] = flat[nonempty, 2] - flat[nonempty, 0] + 1.0
    out[nonempty, 3] = flat[nonempty, 3] - flat[nonempty, 1] + 1.0
    return out.reshape(boxes.shape)


MaskSet = Any  # (N, H, W) bool array, CompactMasks-like object, or a list of COCO RLEs


def _compact_rles(masks: MaskSet) -> list[dict[str, Any]] | None:
    """The masks as pycocotools RLEs (bytes counts), or None for a dense array."""
    if isinstance(masks, np.ndarray):
        return None
    rles = getattr(masks, "rles", masks)
    if isinstance(rles, Sequence) and all(isinstance(r, Mapping) for r in rles):
        out = []
        for r in rles:
            counts = r["counts"]
            out.append(
                {
                    "size": list(r["size"]),
                    "counts": counts.encode() if isinstance(counts, str) else counts,
                }
            )
        return out
    return None


def _dense(masks: MaskSet) -> np.ndarray:
    if isinstance(masks, np.ndarray):
        return np.asarray(masks, dtype=bool)
    if hasattr(masks, "to_dense"):
        return np.asarray(masks.to_dense(), dtype=bool)
    return np.asarray(masks, dtype=bool)


def pairwise_iou(a: MaskSet, b: MaskSet) -> tuple[np.ndarray, np.ndarray]:
    """IoU between every mask of ``a`` and every mask of ``b``, and the fraction of each ``a``
    mask that lies inside each ``b`` mask (cover), exact.

    Args:
        a: ``(Na, H, W)`` bool masks, or compact masks (RLEs) of the same size.
        b: ``(Nb, H, W)`` bool masks, or compact masks.

    Returns:
        ``(Na, Nb)`` IoU and ``(Na, Nb)`` cover (intersection over the area of the ``a`` mask;
        0 for an empty ``a`` mask), float64.

    Raises:
        ValueError: The two sets have different image sizes.
    """
    ra, rb = _compact_rles(a), _compact_rles(b)
    if ra is not None and rb is not None:
        na, nb = len(ra), len(rb)
        if na == 0 or nb == 0:
            return np.zeros((na, nb)), np.zeros((na, nb))
        if tuple(ra[0]["size"]) != tuple(rb[0]["size"]):
            raise ValueError(
                f"pairwise_iou: masks of size {tuple(ra[0]['size'])} and "
                f"{tuple(rb[0]['size'])}; expected one image size"
            )
        iou = np.asarray(mask_utils.iou(ra, rb, [0] * nb), np.float64).reshape(na, nb)
        area_a = np.asarray([mask_utils.area(r) for r in ra], np.float64)
        area_b = np.asarray([mask_utils.area(r) for r in rb], np.float64)
        inter = np.round(iou * (area_a[:, None] + area_b[None, :]) / (1.0 + iou))
    else:
        da, db = _dense(a), _dense(b)
        na, nb = len(da), len(db)
        if na == 0 or nb == 0:
            return np.zeros((na, nb)), np.zeros((na, nb))
        if da.shape[1:] != db.shape[1:]:
            raise ValueError(
                f"pairwise_iou: masks of size {da.shape[1:]} and {db.shape[1:]}; expected one "
                f"image size"
            )
        fa = torch.from_numpy(np.ascontiguousarray(da.reshape(na, -1))).to(torch.float32)
        fb = torch.from_numpy(np.ascontiguousarray(db.reshape(nb, -1))).to(torch.float32)
        inter = _blocked_product(fa, fb)
        area_a = da.reshape(na, -1).sum(1, dtype=np.float64)
        area_b = db.reshape(nb, -1).sum(1, dtype=np.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    cover = np.divide(
        inter,
        np.broadcast_to(area_a[:, None], inter.shape),
        out=np.zeros_like(inter),
        where=area_a[:, None] > 0,
    )
    return iou, cover


def paired_iou(a: np.ndarray, b: np.ndarray, *, empty: float = 1.0) -> np.ndarray:
    """IoU of each mask of ``a`` with the mask of ``b`` at the same index.

    Args:
        a: ``(N, H, W)`` bool masks.
        b: ``(N, H, W)`` bool masks, the same shape.
        empty: The IoU of two empty masks (1: they agree, as evaluation counts them).

    Returns:
        ``(N,)`` float64 IoU.
    """
    n = len(a)
    p = np.asarray(a, bool).reshape(n, -1)
    g = np.asarray(b, bool).reshape(n, -1)
    inter = np.logical_and(p, g).sum(axis=1, dtype=np.int64)
    union = np.logical_or(p, g).sum(axis=1, dtype=np.int64)
    out = np.full(n, float(empty), dtype=np.float64)
    nonzero = union > 0
    out[nonzero] = inter[nonzero] / union[nonzero]
    return out


def _blocked_product(fa: torch.Tensor, fb: torch.Tensor, block: int = 1 << 22) -> np.ndarray:
    """``fa @ fb.T`` over pixel blocks, exact: float32 sums of at most 2**24 ones per block."""
    out = torch.zeros((fa.shape[0], fb.shape[0]), dtype=torch.float64)
    for start in range(0, fa.shape[1], block):
        out += (fa[:, start : start + block] @ fb[:, start : start + block].T).to(torch.float64)
    return out.numpy()


def greedy_match(score: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one pairs ``(row, col)`` by descending score (IoU), each row and column at most
    once, score ``>= threshold``; ties keep the first pair in row-major order."""
    score = np.asarray(score, dtype=np.float64)
    pairs: list[tuple[int, int]] = []
    if score.size == 0:
        return pairs
    order = np.argsort(-score, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, score.shape)
    used_r: set[int] = set()
    used_c: set[int] = set()
    for r, c in zip(rows.tolist(), cols.tolist()):
        if score[r, c] < threshold:
            break
        if r in used_r or c in used_c:
            continue
        pairs.append((r, c))
        used_r.add(r)
        used_c.add(c)
    return pairs
