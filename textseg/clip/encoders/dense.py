"""MaskCLIP dense features: the ViT pieces a CLIP encoder exposes (:class:`VitParts`), its last
block with query-key attention replaced by the value path, and :class:`DenseFeatures`, the patch
grid with the geometry that maps it back to the image's pixels."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MAX_DENSE_TOKENS",
    "DenseAttention",
    "DenseFeatures",
    "VitParts",
    "dense_last_block",
    "interpolate_pos_embed",
]

#: Largest patch grid :meth:`ClipEncoder.dense_features` runs (attention is quadratic in it).
MAX_DENSE_TOKENS = 96 * 96

DenseAttention = Literal["value", "value-value"]


@dataclass(frozen=True)
class DenseFeatures:
    """Dense CLIP patch embeddings of one image and the geometry mapping them back to pixels.

    The image of size ``image_size`` was resized to ``resized_size`` (possibly with a different
    scale along each axis), then the window ``crop_box`` of the resized image was cut out and fed
    to the ViT, whose ``patch_size`` patches form the ``(h, w)`` grid of ``features``.

    Coordinates are continuous pixel coordinates: pixel ``(row r, col c)`` covers
    ``[c, c + 1) x [r, r + 1)``, so its centre is ``(c + 0.5, r + 0.5)``.

    Attributes:
        features: ``(h, w, D)`` float32 patch embeddings in the joint text-image space,
            L2-normalised along ``D``, on the encoder's device.
        image_size: ``(H, W)`` of the original image.
        resized_size: ``(H', W')`` the image was resized to before cropping.
        crop_box: ``(top, left, height, width)`` of the model input inside the resized image.
        patch_size: Side of one ViT patch in model-input pixels.
    """

    features: torch.Tensor
    image_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    patch_size: int

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)``: rows and columns of the patch grid."""
        return int(self.features.shape[0]), int(self.features.shape[1])

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: resized pixels per original pixel along each axis."""
        return (
            self.resized_size[0] / self.image_size[0],
            self.resized_size[1] / self.image_size[1],
        )

    def cell_centers(self) -> np.ndarray:
        """Centres of the grid cells in original-image pixels.

        Returns:
            ``(h, w, 2)`` float32 array of ``(x, y)`` coordinates.
        """
        h, w = self.grid_size
        top, left = self.crop_box[0], self.crop_box[1]
        sy, sx = self.scale
        ys = ((np.arange(h) + 0.5) * self.patch_size + top) / sy
        xs = ((np.arange(w) + 0.5) * self.patch_size + left) / sx
        grid_x, grid_y = np.meshgrid(xs, ys)
        return np.stack([grid_x, grid_y], axis=-1).astype(np.float32)

    def similarity(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every cell to each text embedding.

        Args:
            text_embeddings: ``(K, D)`` or ``(D,)`` L2-normalised embeddings, e.g. from
                :meth:`ClipEncoder.encode_text`.

        Returns:
            ``(K, h, w)`` float32 tensor (``K = 1`` for a single ``(D,)`` embedding).
        """
        text = text_embeddings.reshape(-1, text_embeddings.shape[-1])
        if text.shape[-1] != self.features.shape[-1]:
            raise ValueError(
                f"text_embeddings have dimension {text.shape[-1]}, the dense features "
                f"{self.features.shape[-1]}; encode the texts with the same CLIP model"
            )
        text = text.to(device=self.features.device, dtype=torch.float32)
        return torch.einsum("hwd,kd->khw", self.features, text)

    def to_image(self, grid_map: torch.Tensor | np.ndarray) -> np.ndarray:
        """Bilinearly resample per-cell values onto the original image's pixels.

        Args:
            grid_map: ``(h, w)`` or ``(K, h, w)`` values per cell, e.g. from :meth:`similarity`.

        Returns:
            ``(H, W)`` or ``(K, H, W)`` float32 array; pixels outside the model input (the parts
            removed by a centre crop) are NaN.
        """
        values = grid_map if torch.is_tensor(grid_map) else torch.as_tensor(np.asarray(grid_map))
        h, w = self.grid_size
        if values.ndim not in (2, 3) or tuple(values.shape[-2:]) != (h, w):
            raise ValueError(
                f"grid_map: expected shape ({h}, {w}) or (K, {h}, {w}), got {tuple(values.shape)}"
            )
        squeeze = values.ndim == 2
        if squeeze:
            values = values[None]
        values = values.detach().to(device="cpu", dtype=torch.float32)
        height, width = self.image_size
        top, left, crop_h, crop_w = self.crop_box
        sy, sx = self.scale
        # Normalised sampling coordinates of every original pixel centre inside the model input
        # (align_corners=False convention: -1 and 1 are the outer edges of the grid).
        ny = ((torch.arange(height, dtype=torch.float32) + 0.5) * sy - top) / crop_h * 2 - 1
        nx = ((torch.arange(width, dtype=torch.float32) + 0.5) * sx - left) / crop_w * 2 - 1
        grid = torch.stack(torch.meshgrid(nx, ny, indexing="xy"), dim=-1)[None]
        grid = grid.expand(values.shape[0], -1, -1, -1)
        out = F.grid_sample(
            values[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
        )[:, 0]
        outside = (ny.abs() > 1)[:, None] | (nx.abs() > 1)[None, :]
        out[:, outside] = float("nan")
        result = out.numpy()
        return result[0] if squeeze else result


@dataclass(frozen=True)
class VitParts:
    """The pieces of a CLIP ViT the dense path needs, whatever library built it.

    ``embed(pixels, grid)`` returns the ``(B, 1 + h*w, C)`` token sequence after the positional
    embedding (interpolated to ``grid``) and the pre-norm; ``run_block(i, x)`` runs block ``i``
    unchanged; the remaining fields describe the last block; ``head`` is the post-norm plus
    projection applied to every token.
    """

    patch_size: int
    num_blocks: int
    embed: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]
    run_block: Callable[[int, torch.Tensor], torch.Tensor]
    ln_1: nn.Module
    value: Callable[[torch.Tensor], torch.Tensor]
    out_proj: nn.Module
    ls_1: nn.Module
    ln_2: nn.Module
    mlp: nn.Module
    ls_2: nn.Module
    num_heads: int
    head: Callable[[torch.Tensor], torch.Tensor]


def interpolate_pos_embed(
    pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a ``(1 + gh*gw, C)`` class+patch positional embedding to another patch grid."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    channels = patch_pos.shape[-1]
    patch_pos = patch_pos.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos.float(), size=new_grid, mode="bicubic", align_corners=False
    ).to(pos.dtype)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(-1, channels)
    return torch.cat([cls_pos, patch_pos], dim=0)


def dense_last_block(parts: VitParts, x: torch.Tensor, attention: DenseAttention) -> torch.Tensor:
    """The last ViT block with q-k attention replaced by the value path; ``x`` is (B, L, C)."""
    values = parts.value(parts.ln_1(x))
    if attention == "value-value":
        batch, length, channels = values.shape
        heads = parts.num_heads
        v = values.reshape(batch, length, heads, channels // heads).transpose(1, 2)
        weights = torch.softmax((v @ v.transpose(-1, -2)).float() / math.sqrt(v.shape[-1]), dim=-1)
        values = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(batch, length, channels)
    x = x + parts.ls_1(parts.out_proj(values))
    return x + parts.ls_2(parts.mlp(parts.ln_2(x)))
