"""COCO run-length encoding (RLE) of instance masks, and :class:`CompactMasks`, which keeps
the masks of many images in bounded memory.

An RLE here is the COCO *compressed* form, JSON-ready: ``{"size": [H, W], "counts": str}``,
column-major runs starting with background, exactly what pycocotools and COCO JSON files use.
A 640x480 instance mask costs 300 KB dense and typically 0.2-2 KB as RLE.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
from pycocotools import mask as mask_utils

from textseg.io._common import check_mask2d, check_masks
from textseg.io.polygons import polygons_to_rle

__all__ = [
    "CompactMasks",
    "decode_masks",
    "encode_mask",
    "encode_masks",
    "rle_area",
    "rle_xyxy",
    "to_rle",
]


#: pycocotools' area() overflows on 256 or more RLEs at once (2.0.11 with numpy 2).
_PYCOCOTOOLS_AREA_BATCH = 255


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode one mask as a COCO compressed RLE.

    Args:
        mask: ``(H, W)`` bool mask.

    Returns:
        ``{"size": [H, W], "counts": str}`` (counts decoded to ASCII so it can go in JSON).

    Raises:
        TypeError: Not a bool numpy array.
        ValueError: Not 2-D.
    """
    mask = check_mask2d(mask)
    rle = mask_utils.encode(np.asfortranarray(mask[:, :, None], dtype=np.uint8))[0]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode()}


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Encode instance masks as COCO compressed RLEs, one at a time (bounded extra memory).

    Args:
        masks: ``(N, H, W)`` bool masks.

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": str}``.

    Raises:
        TypeError: Not a bool numpy array.
        ValueError: Not ``(N, H, W)``.
    """
    masks = check_masks(masks)
    return [encode_mask(m) for m in masks]


def _rle_for_pycocotools(rle: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """A compressed RLE with bytes counts (what pycocotools' C code wants)."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(
            f"{what}: expected a COCO RLE dict {{'size': [H, W], 'counts': ...}}, got {rle!r:.80}"
        )
    size = [int(s) for s in rle["size"]]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode()
    elif isinstance(counts, (list, tuple, np.ndarray)):
        return mask_utils.frPyObjects({"size": size, "counts": list(counts)}, *size)
    elif not isinstance(counts, bytes):
        raise TypeError(
            f"{what}: RLE counts must be str, bytes or a list of run lengths, got "
            f"{type(counts).__name__}"
        )
    return {"size": size, "counts": counts}


def to_rle(segmentation: Any, height: int, width: int, *, what: str = "segmentation") -> dict:
    """Convert any COCO ``segmentation`` to one compressed RLE: THE import conversion.

    Accepted: a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` (unioned, as pycocotools
    does; polygons with fewer than 3 points have no area and are dropped), an uncompressed RLE
    (``counts`` a list of run lengths, as COCO uses for ``iscrowd=1``), or a compressed RLE
    (``counts`` str or bytes).

    Args:
        segmentation: The COCO segmentation.
        height: Image height in pixels.
        width: Image width in pixels.
        what: What to call it in error messages.

    Returns:
        ``{"size": [H, W], "counts": str}``.

    Raises:
        ValueError: Malformed segmentation, or an RLE of another image size.
    """
    if isinstance(segmentation, list):
        flat = [p for p in segmentation if not isinstance(p, (list, tuple))]
        if flat:
            raise ValueError(
                f"{what}: expected a list of polygons [[x0, y0, x1, y1, ...], ...], got a list "
                f"of {type(flat[0]).__name__}; wrap a single polygon in a list"
            )
        polygons = [p for p in segmentation if len(p) >= 6]
        return polygons_to_rle(polygons, height, width, what=what)
    rle = _rle_for_pycocotools(segmentation, what=what)
    if list(rle["size"]) != [height, width]:
        raise ValueError(
            f"{what}: RLE of size {list(rle['size'])} (H, W) for an image of size "
            f"[{height}, {width}]; the annotation belongs to another image or the image "
            f"size is wrong"
        )
    counts = rle["counts"]
    covered = int(_run_lengths(counts).sum())
    if covered != height * width:
        # pycocotools' C decoder trusts the runs and writes past its buffer otherwise.
        raise ValueError(
            f"{what}: RLE counts cover {covered} pixels, expected {height * width} "
            f"({height}x{width}); the RLE is corrupt"
        )
    return {
        "size": [height, width],
        "counts": counts.decode() if isinstance(counts, bytes) else counts,
    }


def _run_lengths(counts: str | bytes) -> np.ndarray:
    """The run lengths of a COCO compressed counts string (pycocotools' ``rleFrString``), to
    validate an RLE before pycocotools decodes it. Negative runs make the sum wrong too."""
    runs: list[int] = []
    data = counts.encode() if isinstance(counts, str) else counts
    p, n = 0, len(data)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return np.asarray([-1], dtype=np.int64)  # truncated: cannot cover the image
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return np.asarray([-1], dtype=np.int64)
        runs.append(x)
    return np.asarray(runs, dtype=np.int64)


def decode_masks(rles: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """Decode COCO RLEs (compressed or uncompressed) to dense masks.

    Args:
        rles: ``N`` RLE dicts.
        height: Image height; every RLE must have ``size == [height, width]``.
        width: Image width.

    Returns:
        ``(N, H, W)`` bool masks (``(0, H, W)`` for no RLEs).

    Raises:
        ValueError: Malformed RLE or another size.
    """
    out = np.zeros((len(rles), height, width), dtype=bool)
    with warnings.catch_warnings():
        # pycocotools 2.0.11 warns about numpy 2's copy keyword on every decode.
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, rle in enumerate(rles):
            checked = to_rle(rle, height, width, what=f"rle {i}")
            out[i] = mask_utils.decode(_rle_for_pycocotools(checked, what=f"rle {i}"))
    return out


def rle_area(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Pixel count of each RLE, without decoding.

    Returns:
        ``(N,)`` int64.
    """
    if len(rles) == 0:
        return np.zeros(0, dtype=np.int64)
    fixed = [_rle_for_pycocotools(r, what=f"rle {i}") for i, r in enumerate(rles)]
    step = _PYCOCOTOOLS_AREA_BATCH
    parts = [mask_utils.area(fixed[i : i + step]) for i in range(0, len(fixed), step)]
    return np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1) for a in parts])


def rle_xyxy(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Box of each RLE, without decoding.

    Returns:
        ``(N, 4)`` float32 XYXY absolute pixels with x2/y2 the last column/row of the mask
        (inclusive, as supervision's ``mask_to_xyxy`` and textseg's SAM core); empty masks give
        zeros. (COCO's ``bbox`` is the extent instead: ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``.)
    """
    if len(rles) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    fixed = [_rle_for_pycocotools(r, what=f"rle {i}") for i, r in enumerate(rles)]
    xywh = np.asarray(mask_utils.toBbox(fixed), dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] - 1], axis=1)
    boxes[(xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)] = 0.0
    return boxes.astype(np.float32)


class CompactMasks(Sequence[np.ndarray]):
    """The ``N`` instance masks of one image, held as COCO RLEs and decoded on demand.

    Use it to keep the results of thousands of images in memory (a labelling job, an
    evaluation) where dense ``(N, H, W)`` masks would not fit: an RLE is 100-1000x smaller
    than its dense mask. Indexing with an int decodes that one mask; iterating decodes one
    mask at a time; :meth:`to_dense` decodes all. Area and boxes come from the RLEs without
    decoding. The RLEs are the COCO ones, so :class:`~textseg.io.coco_writer.CocoWriter` writes
    them as they are.

    (``supervision.CompactMask`` is the same idea made to sit inside ``Detections.mask``,
    cropped to each box; the exporters here accept it too.)

    Example::

        compact = CompactMasks.from_dense(detections.mask)   # (N, H, W) bool -> ~KB
        detections.mask = None                                # drop the dense copy
        ...
        mask_3 = compact[3]                                   # (H, W) bool, decoded now
    """

    __slots__ = ("_height", "_rles", "_width")

    def __init__(self, rles: Sequence[Mapping[str, Any]], height: int, width: int) -> None:
        """Hold RLEs of an image of ``height`` x ``width`` pixels.

        Args:
            rles: COCO RLE dicts (compressed or uncompressed), all of size ``[height, width]``.
            height: Image height in pixels.
            width: Image width in pixels.

        Raises:
            ValueError: Malformed RLE, or one of another size.
        """
        self._height = int(height)
        self._width = int(width)
        self._rles = [
            to_rle(r, self._height, self._width, what=f"rle {i}") for i, r in enumerate(rles)
        ]

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> CompactMasks:
        """Encode ``(N, H, W)`` bool masks."""
        masks = check_masks(masks)
        return cls(encode_masks(masks), masks.shape[1], masks.shape[2])

    @classmethod
    def concatenate(cls, parts: Sequence[CompactMasks]) -> CompactMasks:
        """The masks of ``parts`` (same image size) one after the other.

        Raises:
            ValueError: No parts, or parts of different image sizes.
        """
        if not parts:
            raise ValueError("CompactMasks.concatenate: expected at least one part")
        sizes = {(p.height, p.width) for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"CompactMasks.concatenate: parts of different sizes {sorted(sizes)}")
        out = cls([], parts[0].height, parts[0].width)
        out._rles = [r for p in parts for r in p._rles]
        return out

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return self._height

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return self._width

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, H, W)``, the shape :meth:`to_dense` returns."""
        return (len(self._rles), self._height, self._width)

    @property
    def rles(self) -> list[dict[str, Any]]:
        """The RLEs, JSON-ready (``{"size": [H, W], "counts": str}``; copies)."""
        return [dict(r) for r in self._rles]

    @property
    def area(self) -> np.ndarray:
        """``(N,)`` int64 pixel count of each mask."""
        return rle_area(self._rles)

    @property
    def xyxy(self) -> np.ndarray:
        """``(N, 4)`` float32 boxes, see :func:`rle_xyxy`."""
        return rle_xyxy(self._rles)

    @property
    def nbytes(self) -> int:
        """Bytes held by the RLE counts (the dense masks would take ``N * H * W``)."""
        return sum(len(r["counts"]) for r in self._rles)

    def __len__(self) -> int:
        return len(self._rles)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> CompactMasks: ...

    def __getitem__(self, index: Any) -> np.ndarray | CompactMasks:
        """An int gives that ``(H, W)`` bool mask (decoded now); a slice, an int array or a
        bool array of length N gives a ``CompactMasks`` of those instances (no decoding)."""
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"mask index {i} out of range for {len(self)} masks")
            return decode_masks([self._rles[i]], self._height, self._width)[0]
        picked = np.arange(len(self))[index]
        out = CompactMasks([], self._height, self._width)
        out._rles = [self._rles[int(i)] for i in np.atleast_1d(picked)]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactMasks):
            return NotImplemented
        return self.shape == other.shape and all(
            a["counts"] == b["counts"] for a, b in zip(self._rles, other._rles)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-by-contract container, like list

    def __repr__(self) -> str:
        n, h, w = self.shape
        return f"CompactMasks(n={n}, height={h}, width={w}, nbytes={self.nbytes})"

    def to_dense(self) -> np.ndarray:
        """Decode all masks: ``(N, H, W)`` bool."""
        return decode_masks(self._rles, self._height, self._width)
