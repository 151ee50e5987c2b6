"""SAM prompts for one image: points, boxes and mask inputs, in original image pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Prompts"]

#: Label of a padding point. SAM's prompt encoder does *not* ignore it: it becomes the learned
#: "not a point" token, which the decoder attends to, so a padded prompt gives another mask than
#: the same prompt unpadded. ``SamCore`` therefore decodes prompts grouped by their number of
#: real points, with the padding removed (segment_anything adds one such token itself to
#: point prompts without a box, and so does textseg, as the official predictor does).
PAD_LABEL = -1


@dataclass(frozen=True)
class Prompts:
    """N prompts for one image; each prompt yields one instance (or three with multimask).

    Every field that is set has N rows; a prompt may combine points, a box and a mask input.
    Coordinates are absolute pixels of the original image (x to the right, y down).

    Attributes:
        points: ``(N, P, 2)`` float32 XY point coordinates, or None. Prompts with fewer than P
            points are padded at the end with label -1 (see :meth:`from_point_lists`); the
            core removes that padding before decoding.
        point_labels: ``(N, P)`` int32, 1 = foreground, 0 = background, -1 = padding.
        boxes: ``(N, 4)`` float32 XYXY boxes, or None.
        mask_inputs: ``(N, 256, 256)`` float32 low-resolution mask logits from an earlier
            prediction (``data["low_res_logits"]``), for iterative refinement, or None.
        embeddings: ``(N, T, C)`` float32 extra sparse prompt tokens in the decoder's token
            space (C = 256 for published SAMs), appended after the point and box tokens; this
            is how a text embedding projected into SAM's prompt space is given (the SAM
            paper's text prompt, see ``textseg.prompters.ClipTokenPrompter``), or None.
    """

    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask_inputs: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = None
        for field_name in ("points", "point_labels", "boxes", "mask_inputs", "embeddings"):
            value = getattr(self, field_name)
            if value is None:
                continue
            if not isinstance(value, np.ndarray):
                value = np.asarray(value)
                object.__setattr__(self, field_name, value)
            if n is None:
                n = len(value)
            elif len(value) != n:
                raise ValueError(
                    f"Prompts: every field needs the same number of prompts; "
                    f"{field_name} has {len(value)}, expected {n}"
                )
        if (self.points is None) != (self.point_labels is None):
            raise ValueError("Prompts: points and point_labels must be given together")
        if self.points is not None:
            pts = self.points.astype(np.float32, copy=False)
            labels = self.point_labels.astype(np.int32, copy=False)  # type: ignore[union-attr]
            if pts.ndim != 3 or pts.shape[2] != 2:
                raise ValueError(f"points: expected shape (N, P, 2), got {pts.shape}")
            if labels.shape != pts.shape[:2]:
                raise ValueError(
                    f"point_labels: expected shape {pts.shape[:2]} to match points "
                    f"{pts.shape}, got {labels.shape}"
                )
            if not np.isin(labels, (PAD_LABEL, 0, 1)).all():
                raise ValueError("point_labels: expected 1 (foreground), 0 (background) or -1")
            if not np.isfinite(pts[labels != PAD_LABEL]).all():
                raise ValueError("points: coordinates contain NaN or infinity")
            object.__setattr__(self, "points", pts)
            object.__setattr__(self, "point_labels", labels)
        if self.boxes is not None:
            boxes = self.boxes.astype(np.float32, copy=False)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"boxes: expected shape (N, 4) XYXY, got {boxes.shape}")
            if not np.isfinite(boxes).all():
                raise ValueError("boxes: coordinates contain NaN or infinity")
            if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
                bad = int(
                    np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))[0]
                )
                raise ValueError(
                    f"boxes: expected XYXY with x1 >= x0 and y1 >= y0, box {bad} is "
                    f"{boxes[bad].tolist()} (inverted; XYWH boxes must be converted first)"
                )
            object.__setattr__(self, "boxes", boxes)
        if self.mask_inputs is not None:
            masks = self.mask_inputs.astype(np.float32, copy=False)
            if masks.ndim == 4 and masks.shape[1] == 1:
                masks = masks[:, 0]
            if masks.ndim != 3 or masks.shape[1:] != (256, 256):
                raise ValueError(
                    f"mask_inputs: expected (N, 256, 256) low-res logits, got {masks.shape}"
                )
            if not np.isfinite(masks).all():
                raise ValueError(
                    "mask_inputs: contain NaN or infinity; expected finite low-res logits "
                    "(data['low_res_logits'] of an earlier prediction)"
                )
            object.__setattr__(self, "mask_inputs", masks)
        if self.embeddings is not None:
            emb = self.embeddings.astype(np.float32, copy=False)
            if emb.ndim == 2:
                emb = emb[:, None, :]
            if emb.ndim != 3:
                raise ValueError(f"embeddings: expected (N, T, C) tokens, got {emb.shape}")
            if not np.isfinite(emb).all():
                raise ValueError("embeddings: contain NaN or infinity")
            object.__setattr__(self, "embeddings", emb)
        if n is None:
            raise ValueError("Prompts: empty; give points, boxes, mask_inputs or embeddings")

    def __len__(self) -> int:
        for value in (self.points, self.boxes, self.mask_inputs, self.embeddings):
            if value is not None:
                return len(value)
        return 0

    @classmethod
    def from_point_lists(
        cls,
        points: Sequence[np.ndarray | Sequence[Sequence[float]]],
        labels: Sequence[np.ndarray | Sequence[int]],
        boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    ) -> Prompts:
        """Prompts whose point sets differ in size, stored padded with label -1 to the longest.

        The padding is storage only: ``SamCore`` decodes each prompt with its own points (it
        groups prompts by their number of points and drops the padding), unless the caller
        asks for padded decoding (``SamCore.predict(..., pad_points=True)``).

        Args:
            points: One ``(P_i, 2)`` XY array per prompt.
            labels: One ``(P_i,)`` array of 1/0 labels per prompt.
            boxes: Optional ``(N, 4)`` XYXY boxes, one per prompt.
        """
        if len(points) != len(labels):
            raise ValueError(
                f"labels: expected one label list per point list ({len(points)}), got {len(labels)}"
            )
        arrays = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in points]
        label_arrays = [np.asarray(lab, dtype=np.int32).reshape(-1) for lab in labels]
        for i, (p, lab) in enumerate(zip(arrays, label_arrays)):
            if len(p) != len(lab):
                raise ValueError(f"labels: prompt {i} has {len(p)} points but {len(lab)} labels")
        width = max((len(p) for p in arrays), default=0)
        if width == 0:
            if boxes is None:
                raise ValueError("Prompts: empty; give at least one point or box")
            return cls(boxes=np.asarray(boxes, dtype=np.float32))
        pts = np.zeros((len(arrays), width, 2), np.float32)
        labs = np.full((len(arrays), width), PAD_LABEL, np.int32)
        for i, (p, lab) in enumerate(zip(arrays, label_arrays)):
            pts[i, : len(p)] = p
            labs[i, : len(lab)] = lab
        return cls(
            points=pts,
            point_labels=labs,
            boxes=None if boxes is None else np.asarray(boxes, dtype=np.float32),
        )

    @classmethod
    def from_boxes(cls, boxes: np.ndarray | Sequence[Sequence[float]]) -> Prompts:
        """One prompt per ``(4,)`` XYXY box."""
        return cls(boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4))

    @classmethod
    def from_points(
        cls,
        points: np.ndarray | Sequence[Sequence[float]],
        labels: np.ndarray | Sequence[int] | None = None,
    ) -> Prompts:
        """One prompt per point: ``(N, 2)`` XY, labels default to foreground."""
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 1, 2)
        labs = (
            np.ones((len(pts), 1), np.int32)
            if labels is None
            else np.asarray(labels, dtype=np.int32).reshape(-1, 1)
        )
        return cls(points=pts, point_labels=labs)

    def select(self, index: np.ndarray | slice) -> Prompts:
        """The prompts at ``index`` (an index array or slice)."""

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Prompts(
            points=take(self.points),
            point_labels=take(self.point_labels),
            boxes=take(self.boxes),
            mask_inputs=take(self.mask_inputs),
            embeddings=take(self.embeddings),
        )

    def check_inside(self, height: int, width: int, *, tolerance: float = 1.0) -> None:
        """Raise ValueError naming the first point or box outside a ``height x width`` image."""
        if self.points is not None:
            pts = self.points[self.point_labels != PAD_LABEL]  # type: ignore[operator]
            outside = (
                (pts[:, 0] < -tolerance)
                | (pts[:, 1] < -tolerance)
                | (pts[:, 0] > width + tolerance)
                | (pts[:, 1] > height + tolerance)
            )
            if outside.any():
                raise ValueError(
                    f"points: expected XY inside the {width}x{height} image, got "
                    f"{pts[np.flatnonzero(outside)[0]].tolist()}"
                )
        if self.boxes is not None:
            b = self.boxes
            outside = (
                (b[:, 0] < -tolerance)
                | (b[:, 1] < -tolerance)
                | (b[:, 2] > width + tolerance)
                | (b[:, 3] > height + tolerance)
            )
            if outside.any():
                raise ValueError(
                    f"boxes: expected XYXY inside the {width}x{height} image, got "
                    f"{b[np.flatnonzero(outside)[0]].tolist()}"
                )
