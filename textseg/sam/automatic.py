"""Automatic mask generation ("segment everything") on the cached SAM core.

The algorithm is SAM's ``SamAutomaticMaskGenerator`` (a grid of single-point prompts, three
masks each, filtered by predicted IoU and stability, de-duplicated, optionally repeated on
overlapping crops); what differs is where the time goes:

* points are decoded by the core's fast decoder, in the core's chunk size;
* the predicted-IoU filter runs on the low-resolution output, so only the masks that pass it
  are upsampled (the official generator upsamples every candidate to 1024x1024 and then to the
  image size, in float32, before filtering);
* the upsampling itself skips the rows and columns that the crop to the image removes;
* de-duplication can use mask IoU (and containment) instead of, or after, box NMS.

With the same settings the surviving masks are the official ones (tested at vit_b size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np
import supervision as sv
import torch
from torchvision.ops import batched_nms

from textseg._image import ImageInput, to_rgb_uint8
from textseg.fields import CROP_BOX, SAM_IOU, STABILITY_SCORE
from textseg.masks import mask_nms, masks_to_boxes
from textseg.sam.core import SamCore
from textseg.sam.postprocess import remove_small_regions, stability_score
from textseg.sam.prompts import Prompts

__all__ = ["AutomaticMaskGenerator", "crop_boxes", "point_grid"]


def point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` XY points in [0, 1]: cell centres of an ``n x n`` grid, row by row."""
    if n_per_side < 1:
        raise ValueError(f"points_per_side: expected a positive integer, got {n_per_side}")
    half = 1.0 / (2 * n_per_side)
    axis = np.linspace(half, 1 - half, n_per_side)
    xs, ys = np.meshgrid(axis, axis)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def crop_boxes(
    height: int, width: int, n_layers: int, overlap_ratio: float
) -> list[tuple[list[int], int]]:
    """The full image plus, for layer i = 1..n_layers, ``2^i x 2^i`` overlapping crops.

    Returns:
        ``[(XYXY crop box, layer index), ...]``, the full image first.
    """
    boxes: list[tuple[list[int], int]] = [([0, 0, width, height], 0)]
    short = min(height, width)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append(([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)], layer))
    return boxes


@dataclass
class _Candidates:
    masks: list[np.ndarray]  # each (H, W) bool at original image size
    boxes: list[np.ndarray]  # (4,) XYXY inclusive, original image coordinates
    iou: list[float]
    stability: list[float]
    points: list[np.ndarray]
    crop: list[list[int]]

    @classmethod
    def empty(cls) -> _Candidates:
        return cls([], [], [], [], [], [])

    def extend(self, other: _Candidates) -> None:
        for name in ("masks", "boxes", "iou", "stability", "points", "crop"):
            getattr(self, name).extend(getattr(other, name))

    def select(self, keep: np.ndarray) -> _Candidates:
        return _Candidates(
            *[
                [getattr(self, n)[i] for i in keep]
                for n in ("masks", "boxes", "iou", "stability", "points", "crop")
            ]
        )


class AutomaticMaskGenerator:
    """Segment everything in an image with a grid of point prompts.

    Args:
        core: The SAM core (its cache and decoder are used).
        points_per_side: Grid size on the full image (``n x n`` points).
        pred_iou_thresh: Keep masks whose predicted IoU is above this.
        stability_score_thresh: Keep masks whose stability score is at least this.
        stability_score_offset: Logit offset of the stability score.
        box_nms_thresh: Box IoU threshold of the NMS within a crop.
        crop_n_layers: Extra crop layers (layer i has ``2^i x 2^i`` crops).
        crop_nms_thresh: Box IoU threshold of the NMS across crops (smaller crops lose).
        crop_overlap_ratio: Overlap of neighbouring crops, as a fraction of the short side.
        crop_n_points_downscale_factor: Grid side is divided by this per crop layer.
        min_mask_region_area: Remove islands and fill holes smaller than this (pixels), then
            re-run box NMS, as the official generator does.
        dedup: ``"box"`` (official box NMS only) or ``"mask"`` (then also mask-IoU NMS).
        mask_nms_thresh: Mask IoU above which the lower-scoring mask is dropped (``"mask"``).
        containment_thresh: Also drop a mask covered by a higher-scoring one beyond this
            fraction of its area (``"mask"``; None to disable).
    """

    def __init__(
        self,
        core: SamCore,
        *,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        min_mask_region_area: int = 0,
        dedup: str = "box",
        mask_nms_thresh: float = 0.7,
        containment_thresh: float | None = None,
    ) -> None:
        if dedup not in ("box", "mask"):
            raise ValueError(f"dedup: expected 'box' or 'mask', got {dedup!r}")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers: expected >= 0, got {crop_n_layers}")
        self.core = core
        self.grids = [
            point_grid(int(points_per_side / (crop_n_points_downscale_factor**i)))
            for i in range(crop_n_layers + 1)
        ]
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.dedup = dedup
        self.mask_nms_thresh = mask_nms_thresh
        self.containment_thresh = containment_thresh

    @torch.inference_mode()
    def generate(self, image: ImageInput) -> sv.Detections:
        """All masks of one image.

        Returns:
            ``supervision.Detections`` sorted by predicted IoU (highest first): ``mask``
            (N, H, W) bool, ``xyxy`` (N, 4) boxes of the masks, ``confidence`` = predicted IoU,
            ``data``: ``sam_iou``, ``stability_score``, ``point`` (N, 2) XY of the prompt,
            ``crop_box`` (N, 4) XYXY of the crop it came from.
        """
        array = to_rgb_uint8(image)
        h, w = array.shape[:2]
        crops = crop_boxes(h, w, self.crop_n_layers, self.crop_overlap_ratio)
        found = _Candidates.empty()
        for box, layer in crops:
            found.extend(self._process_crop(array, box, layer))
        if len(crops) > 1 and found.masks:
            crop_area = np.array([(c[2] - c[0]) * (c[3] - c[1]) for c in found.crop], float)
            keep = self._box_nms(np.stack(found.boxes), 1.0 / crop_area, self.crop_nms_thresh)
            found = found.select(keep)
        if self.min_mask_region_area > 0 and found.masks:
            found = self._clean_regions(found)
        return self._to_detections(found, h, w)

    def _box_nms(self, boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
        keep = batched_nms(
            torch.as_tensor(boxes, dtype=torch.float32),
            torch.as_tensor(scores, dtype=torch.float32),
            torch.zeros(len(boxes), dtype=torch.int64),
            iou_threshold=thresh,
        )
        return keep.numpy()

    def _process_crop(self, image: np.ndarray, box: list[int], layer: int) -> _Candidates:
        x0, y0, x1, y1 = box
        crop = image[y0:y1, x0:x1]
        ch, cw = crop.shape[:2]
        emb = self.core.encode(crop)
        points = self.grids[layer] * np.array([[cw, ch]])
        found = _Candidates.empty()
        # Decode in the core's chunks; the IoU filter runs before any upsampling.
        step = max(self.core.chunk_size, 1) * 8
        for start in range(0, len(points), step):
            batch = points[start : start + step]
            found.extend(self._process_batch(emb, batch, box, (image.shape[0], image.shape[1])))
        if not found.masks:
            return found
        keep = self._box_nms(np.stack(found.boxes), np.array(found.iou), self.box_nms_thresh)
        found = found.select(keep)
        # Move to image coordinates.
        offset = np.array([x0, y0, x0, y0], np.float32)
        found.boxes = [b + offset for b in found.boxes]
        found.points = [p + offset[:2] for p in found.points]
        found.masks = [_uncrop(m, box, image.shape[0], image.shape[1]) for m in found.masks]
        return found

    def _process_batch(
        self, emb, points: np.ndarray, box: list[int], image_size: tuple[int, int]
    ) -> _Candidates:
        prompts = Prompts.from_points(points)
        low, iou, emb = self.core.decode(emb, prompts, multimask_output=True, full=False)
        n, k = iou.shape
        low = low.reshape(n * k, *low.shape[2:])
        iou = iou.reshape(-1)
        point_of = np.repeat(points, k, axis=0)
        keep = torch.ones_like(iou, dtype=torch.bool)
        if self.pred_iou_thresh > 0.0:
            keep &= iou > self.pred_iou_thresh
        idx = torch.nonzero(keep).flatten()
        found = _Candidates.empty()
        if len(idx) == 0:
            return found
        threshold = self.core.backend.mask_threshold
        logits = self.core.upsample(emb, low[idx])
        stab = stability_score(logits, threshold, self.stability_score_offset)
        ok = torch.ones_like(stab, dtype=torch.bool)
        if self.stability_score_thresh > 0.0:
            ok &= stab >= self.stability_score_thresh
        masks = (logits[ok] > threshold).cpu().numpy()
        idx, stab = idx[ok], stab[ok]
        if len(masks) == 0:
            return found
        boxes = masks_to_boxes(masks)
        near = _near_crop_edge(boxes, box, image_size)
        for j in np.flatnonzero(~near):
            found.masks.append(masks[j])
            found.boxes.append(boxes[j])
            found.iou.append(float(iou[idx[j]]))
            found.stability.append(float(stab[j]))
            found.points.append(point_of[int(idx[j])].astype(np.float32))
            found.crop.append(list(box))
        return found

    def _clean_regions(self, found: _Candidates) -> _Candidates:
        scores, changed_any = [], False
        for i, mask in enumerate(found.masks):
            mask, changed = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, changed2 = remove_small_regions(mask, self.min_mask_region_area, "islands")
            if changed or changed2:
                changed_any = True
                found.masks[i] = mask
                found.boxes[i] = masks_to_boxes(mask[None])[0]
            # Masks that did not change are preferred in the NMS that follows, as in SAM.
            scores.append(0.0 if (changed or changed2) else 1.0)
        if not changed_any:
            return found
        keep = self._box_nms(np.stack(found.boxes), np.array(scores), self.box_nms_thresh)
        return found.select(keep)

    def _to_detections(self, found: _Candidates, h: int, w: int) -> sv.Detections:
        if not found.masks:
            return sv.Detections(
                xyxy=np.zeros((0, 4), np.float32),
                mask=np.zeros((0, h, w), bool),
                confidence=np.zeros(0, np.float32),
                data={
                    SAM_IOU: np.zeros(0, np.float32),
                    STABILITY_SCORE: np.zeros(0, np.float32),
                    "point": np.zeros((0, 2), np.float32),
                    CROP_BOX: np.zeros((0, 4), np.int64),
                },
            )
        masks = np.stack(found.masks)
        iou = np.array(found.iou, np.float32)
        order = np.argsort(-iou, kind="stable")
        if self.dedup == "mask":
            order = mask_nms(masks, iou, self.mask_nms_thresh, self.containment_thresh)
        return sv.Detections(
            xyxy=np.stack(found.boxes).astype(np.float32)[order],
            mask=masks[order],
            confidence=iou[order],
            data={
                SAM_IOU: iou[order],
                STABILITY_SCORE: np.array(found.stability, np.float32)[order],
                "point": np.stack(found.points)[order],
                CROP_BOX: np.array(found.crop, np.int64)[order],
            },
        )


def _near_crop_edge(
    boxes: np.ndarray, crop: list[int], image_size: tuple[int, int], atol: float = 20.0
) -> np.ndarray:
    """True for boxes (crop coordinates) touching a crop edge that is not an image edge."""
    x0, y0 = crop[0], crop[1]
    shifted = boxes + np.array([x0, y0, x0, y0], np.float32)
    crop_arr = np.asarray(crop, np.float32)
    image = np.array([0, 0, image_size[1], image_size[0]], np.float32)
    near_crop = np.abs(shifted - crop_arr) <= atol
    near_image = np.abs(shifted - image) <= atol
    return (near_crop & ~near_image).any(axis=1)


def _uncrop(mask: np.ndarray, crop: list[int], height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = crop
    if (x0, y0, x1, y1) == (0, 0, width, height):
        return mask
    out = np.zeros((height, width), bool)
    out[y0:y1, x0:x1] = mask
    return out
