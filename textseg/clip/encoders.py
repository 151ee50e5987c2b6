"""CLIP encoders: one interface over open_clip and transformers CLIP models.

:class:`ClipEncoder` turns texts and images into L2-normalised embeddings in CLIP's joint space,
preprocessing images in torch exactly as the model's own library does (resize the shortest side
with antialiased bicubic interpolation, centre crop, normalise with the model's mean and std),
and computes dense, spatially meaningful patch embeddings MaskCLIP-style
(:meth:`ClipEncoder.dense_features`).

Two backends:

- :class:`OpenClipEncoder` wraps an ``open_clip`` ``CLIP`` model;
- :class:`HfClipEncoder` wraps a transformers ``CLIPModel``.

:func:`load_clip` builds one from the registry (``textseg.list_models("clip")``).
"""

from __future__ import annotations

import abc
import gzip
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from textseg._device import resolve_device, resolve_dtype
from textseg._image import ImageInput, to_rgb_uint8

if TYPE_CHECKING:
    import os

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ClipEncoder",
    "DenseFeatures",
    "HfClipEncoder",
    "OpenClipEncoder",
    "load_clip",
]

#: Pixel mean of OpenAI CLIP's training data, RGB, 0-255 scale.
OPENAI_CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
#: Pixel std of OpenAI CLIP's training data, RGB, 0-255 scale.
OPENAI_CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)

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
class _VitParts:
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


def _interpolate_pos_embed(
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


def _short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output size when the shortest side is resized to ``size`` (torchvision's rule)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


class ClipEncoder(abc.ABC):
    """A CLIP model: texts and images to L2-normalised embeddings in one joint space.

    Subclasses adapt one library (:class:`OpenClipEncoder`, :class:`HfClipEncoder`); this class
    holds what they share: image preprocessing (in torch, on the model's device), batching,
    normalisation and the MaskCLIP dense path. Inference runs under ``torch.inference_mode()``
    in the model's dtype; results are float32.

    Args:
        model: The library's CLIP model.
        input_size: Side of the square model input in pixels; None reads it from the model.
        pixel_mean: Per-channel RGB mean, 0-255 scale.
        pixel_std: Per-channel RGB std, 0-255 scale.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; the model is cast to it.
        name: Registry name or any label, shown in ``repr``.
    """

    #: How the centre crop rounds an odd margin: ``"round"`` (torchvision's ``CenterCrop``,
    #: used by open_clip) or ``"floor"`` (transformers' ``CLIPImageProcessor``).
    crop_rounding: ClassVar[Literal["round", "floor"]] = "round"

    def __init__(
        self,
        model: nn.Module,
        *,
        input_size: int | None = None,
        pixel_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        pixel_std: Sequence[float] = OPENAI_CLIP_STD,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(
                f"pixel_mean and pixel_std need 3 values (RGB, 0-255 scale), got "
                f"{tuple(pixel_mean)} and {tuple(pixel_std)}"
            )
        if max(pixel_mean) <= 1.0:
            raise ValueError(
                f"pixel_mean {tuple(pixel_mean)} looks like a 0-1 scale; pass 0-255 values, "
                f"e.g. textseg.clip.OPENAI_CLIP_MEAN"
            )
        self._model = model.to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()
        self._input_size = int(input_size) if input_size is not None else self._native_input_size()
        self._mean = tuple(float(m) for m in pixel_mean)
        self._std = tuple(float(s) for s in pixel_std)
        self.name = name or type(model).__name__

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, embed_dim={self.embed_dim}, "
            f"input_size={self.input_size}, device={self.device}, dtype={self.dtype})"
        )

    # ----------------------------------------------------------------------------- properties

    @property
    def model(self) -> nn.Module:
        """The wrapped library model."""
        return self._model

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self._model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's parameters (the compute dtype)."""
        return next(self._model.parameters()).dtype

    @property
    def input_size(self) -> int:
        """Side of the square model input in pixels (224 for the OpenAI models)."""
        return self._input_size

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """Per-channel RGB mean on the 0-255 scale; also the colour of "no content" pixels."""
        return self._mean  # type: ignore[return-value]

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        """Per-channel RGB std on the 0-255 scale."""
        return self._std  # type: ignore[return-value]

    @property
    @abc.abstractmethod
    def embed_dim(self) -> int:
        """Dimension ``D`` of the joint embedding space."""

    @property
    @abc.abstractmethod
    def logit_scale(self) -> float:
        """The learned temperature as a multiplier: ``exp(log_scale)``, 100 for OpenAI CLIP.

        ``logit_scale * image_emb @ text_emb.T`` are the logits CLIP was trained with.
        """

    @property
    @abc.abstractmethod
    def context_length(self) -> int:
        """Most tokens one text may have, start and end tokens included (77 for CLIP)."""

    # ----------------------------------------------------------------------- backend hooks

    @abc.abstractmethod
    def _native_input_size(self) -> int: ...

    @abc.abstractmethod
    def _tokenize(self, texts: list[str], truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, lengths)``: ``(N, L)`` long token ids (padded) and ``(N,)`` true lengths."""

    @abc.abstractmethod
    def _text_forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``(N, D)`` text embeddings."""

    @abc.abstractmethod
    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``(N, D)`` image embeddings of preprocessed ``(N, 3, S, S)`` pixels."""

    @abc.abstractmethod
    def _vit_parts(self) -> _VitParts:
        """The ViT pieces; raises ValueError for a model that is not a plain CLIP ViT."""

    # ------------------------------------------------------------------------------- text

    def _check_texts(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError(
                f"texts: expected a sequence of strings, got the string {texts!r}; "
                f"wrap it in a list"
            )
        texts = list(texts)
        if not texts:
            raise ValueError("texts: expected at least one text, got an empty sequence")
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts: expected strings, got {', '.join(sorted(set(bad)))}")
        return texts

    def _too_long(self, texts: list[str], lengths: Sequence[int]) -> None:
        long = [(t, n) for t, n in zip(texts, lengths, strict=True) if n > self.context_length]
        if long:
            text, n = long[0]
            raise ValueError(
                f"text {text[:60]!r}{'...' if len(text) > 60 else ''} has {n} tokens, more than "
                f"the model's {self.context_length} (start and end included; {len(long)} text(s) "
                f"too long); shorten it or pass truncate=True to cut it"
            )

    @torch.inference_mode()
    def encode_text(
        self, texts: Sequence[str], *, batch_size: int = 256, truncate: bool = False
    ) -> torch.Tensor:
        """Embed texts.

        Args:
            texts: N strings.
            batch_size: Most texts per forward pass (bounds memory).
            truncate: Cut texts longer than :attr:`context_length` tokens (keeping the end
                token) instead of raising.

        Returns:
            ``(N, D)`` float32 tensor, rows L2-normalised, on :attr:`device`.

        Raises:
            TypeError: ``texts`` is a single string or holds non-strings.
            ValueError: ``texts`` is empty, or a text is too long and ``truncate`` is False.
        """
        texts = self._check_texts(texts)
        _check_batch_size(batch_size)
        out = []
        for start in range(0, len(texts), batch_size):
            ids, lengths = self._tokenize(texts[start : start + batch_size], truncate)
            emb = self._text_forward(ids.to(self.device), lengths.to(self.device))
            out.append(F.normalize(emb.float(), dim=-1))
        return torch.cat(out)

    # ----------------------------------------------------------------------------- images

    def _to_tensor(self, image: ImageInput, index: int) -> torch.Tensor:
        array = to_rgb_uint8(image, name=f"images[{index}]")
        if not array.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
            array = array.copy()
        return torch.from_numpy(array).to(self.device).permute(2, 0, 1)

    def _normalise(self, pixels_u8: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self._mean, device=pixels_u8.device).view(-1, 3, 1, 1)
        std = torch.tensor(self._std, device=pixels_u8.device).view(-1, 3, 1, 1)
        return ((pixels_u8.float() - mean) / std).to(self.dtype)

    def _crop_offset(self, length: int, crop: int) -> int:
        margin = (length - crop) / 2.0
        return round(margin) if self.crop_rounding == "round" else int(margin)

    def _resize(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        return tvf.resize(
            image, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True
        )

    def _resize_center_crop(
        self, image: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int, int, int]]:
        height, width = image.shape[-2:]
        resized = _short_side_size(height, width, size)
        image = self._resize(image, resized)
        top = self._crop_offset(resized[0], size)
        left = self._crop_offset(resized[1], size)
        return image[:, top : top + size, left : left + size], resized, (top, left, size, size)

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Preprocess images exactly as the model's library does, in torch.

        Each image's shortest side is resized to :attr:`input_size` (bicubic, antialiased, on
        uint8), the centre :attr:`input_size` square is cropped and normalised.

        Args:
            images: N images, each ``(H, W, 3)`` uint8 RGB of any size (or anything
                :func:`textseg._image.to_rgb_uint8` accepts).

        Returns:
            ``(N, 3, S, S)`` tensor in the model's dtype, on :attr:`device`.
        """
        tensors = [
            self._resize_center_crop(self._to_tensor(image, i), self.input_size)[0]
            for i, image in enumerate(_check_images(images))
        ]
        return self._normalise(torch.stack(tensors))

    @torch.inference_mode()
    def encode_images(self, images: Sequence[ImageInput], *, batch_size: int = 64) -> torch.Tensor:
        """Embed whole images (global CLIP embedding of the centre crop).

        Args:
            images: N images, each ``(H, W, 3)`` uint8 RGB of any size.
            batch_size: Most images per forward pass (bounds memory).

        Returns:
            ``(N, D)`` float32 tensor, rows L2-normalised, on :attr:`device`.

        Raises:
            TypeError: Not a sequence of images.
            ValueError: No images, or an image ``to_rgb_uint8`` refuses.
        """
        _check_batch_size(batch_size)
        images = _check_images(images)
        out = []
        for start in range(0, len(images), batch_size):
            pixels = self.preprocess(images[start : start + batch_size])
            out.append(F.normalize(self._image_forward(pixels).float(), dim=-1))
        return torch.cat(out)

    # ------------------------------------------------------------------------------ dense

    def _dense_input(
        self, image: ImageInput, size: int, crop: bool, patch: int
    ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
        tensor = self._to_tensor(image, 0)
        height, width = tensor.shape[-2:]
        if crop:
            if size % patch:
                raise ValueError(
                    f"size: with crop=True it must be a multiple of the patch size {patch}, got "
                    f"{size}; use e.g. {max(patch, size // patch * patch)}"
                )
            pixels, resized, box = self._resize_center_crop(tensor, size)
        else:
            scale = size / min(height, width)
            grid_h = max(1, round(height * scale / patch))
            grid_w = max(1, round(width * scale / patch))
            resized = (grid_h * patch, grid_w * patch)
            pixels = self._resize(tensor, resized)
            box = (0, 0, resized[0], resized[1])
        grid = (box[2] // patch, box[3] // patch)
        if grid[0] * grid[1] > MAX_DENSE_TOKENS:
            raise ValueError(
                f"dense_features: a {width}x{height} image at size={size} makes a "
                f"{grid[1]}x{grid[0]} patch grid, more than {MAX_DENSE_TOKENS} tokens; pass a "
                f"smaller size or crop=True"
            )
        return self._normalise(pixels[None]), (int(height), int(width)), resized, box

    @torch.inference_mode()
    def dense_features(
        self,
        image: ImageInput,
        *,
        size: int | None = None,
        crop: bool = False,
        attention: DenseAttention = "value",
    ) -> DenseFeatures:
        """Per-patch embeddings in the joint text-image space (MaskCLIP).

        CLIP's last block mixes the patch tokens through query-key attention so that only the
        class token carries the image's meaning; its patch tokens are not aligned with text.
        MaskCLIP (Zhou et al., ECCV 2022) replaces that last attention by the value path:
        every token keeps its own value (``attention="value"``: each token attends only to
        itself), or attends to tokens with similar values (``"value-value"``: softmax of
        ``v v^T / sqrt(d)`` per head, as in CLIP Surgery / SCLIP). The residual and the MLP of
        the block run as usual, then the post-norm and the projection are applied to every
        patch token. All earlier blocks run unchanged.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (or anything ``to_rgb_uint8`` accepts).
            size: Model-input length of the image's shortest side; defaults to
                :attr:`input_size`. Larger gives a finer grid (the positional embedding is
                interpolated bicubically).
            crop: False (default) resizes the whole image so both sides are whole numbers of
                patches, keeping the aspect ratio to within half a patch, so the grid covers
                every pixel. True uses the same geometry as :meth:`encode_images`: shortest
                side to ``size``, centre ``size x size`` crop.
            attention: ``"value"`` (MaskCLIP) or ``"value-value"``.

        Returns:
            :class:`DenseFeatures` with ``(h, w, D)`` L2-normalised float32 features and the
            resize/crop geometry to map cells to pixels.

        Raises:
            ValueError: The model is not a plain CLIP ViT (e.g. a ResNet CLIP), an unknown
                ``attention``, or a grid larger than :data:`MAX_DENSE_TOKENS` tokens.
        """
        if attention not in ("value", "value-value"):
            raise ValueError(f"attention: expected 'value' or 'value-value', got {attention!r}")
        parts = self._vit_parts()
        size = self.input_size if size is None else int(size)
        if size < parts.patch_size:
            raise ValueError(
                f"size: expected at least the patch size {parts.patch_size}, got {size}"
            )
        pixels, image_size, resized, box = self._dense_input(image, size, crop, parts.patch_size)
        grid = (box[2] // parts.patch_size, box[3] // parts.patch_size)
        x = parts.embed(pixels, grid)
        for i in range(parts.num_blocks - 1):
            x = parts.run_block(i, x)
        x = _dense_last_block(parts, x, attention)
        tokens = parts.head(x[:, 1:])
        features = F.normalize(tokens.float(), dim=-1).reshape(*grid, -1)
        return DenseFeatures(
            features=features,
            image_size=image_size,
            resized_size=(int(resized[0]), int(resized[1])),
            crop_box=tuple(int(v) for v in box),  # type: ignore[arg-type]
            patch_size=parts.patch_size,
        )


def _dense_last_block(parts: _VitParts, x: torch.Tensor, attention: DenseAttention) -> torch.Tensor:
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


def _check_images(images: Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, np.ndarray)) or not isinstance(images, Sequence):
        what = f"array of shape {images.shape}" if isinstance(images, np.ndarray) else repr(images)
        raise TypeError(
            f"images: expected a sequence (list) of images, got {type(images).__name__} "
            f"{what[:80]}; wrap a single image in a list"
        )
    if not images:
        raise ValueError("images: expected at least one image, got an empty sequence")
    return list(images)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")


# ---------------------------------------------------------------------------------- open_clip


class OpenClipEncoder(ClipEncoder):
    """:class:`ClipEncoder` over an ``open_clip`` ``CLIP`` model.

    Text goes through open_clip's own BPE tokenizer (shipped in the package, no download);
    images are preprocessed like open_clip's ``image_transform(..., is_train=False)``
    (``resize_mode="shortest"``, bicubic, torchvision ``CenterCrop``). Any open_clip image
    tower works for :meth:`encode_images`; :meth:`dense_features` needs the plain ViT
    (``open_clip.transformer.VisionTransformer`` with class-token pooling).
    """

    crop_rounding = "round"

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        from open_clip.model import CLIP

        if not isinstance(model, CLIP):
            raise TypeError(
                f"model: expected an open_clip.model.CLIP, got {type(model).__name__}; use "
                f"HfClipEncoder for transformers CLIPModel"
            )
        super().__init__(model, **kwargs)
        from open_clip.tokenizer import SimpleTokenizer

        self._tokenizer = SimpleTokenizer(context_length=self.context_length)

    def _native_input_size(self) -> int:
        size = self._model.visual.image_size
        size = size if isinstance(size, int) else size[0]
        return int(size)

    @property
    def embed_dim(self) -> int:
        proj = self._model.text_projection
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    @property
    def logit_scale(self) -> float:
        return float(self._model.logit_scale.detach().float().exp().reshape(-1)[0])

    @property
    def context_length(self) -> int:
        return int(self._model.context_length)

    def _tokenize(self, texts: list[str], truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self._tokenizer
        encoded = [[tok.sot_token_id, *tok.encode(t), tok.eot_token_id] for t in texts]
        if not truncate:
            self._too_long(texts, [len(e) for e in encoded])
        ctx = self.context_length
        ids = torch.zeros(len(encoded), ctx, dtype=torch.long)  # open_clip pads with 0
        lengths = torch.empty(len(encoded), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            if len(tokens) > ctx:
                tokens = [*tokens[: ctx - 1], tok.eot_token_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            lengths[row] = len(tokens)
        return ids, lengths

    def _text_forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._model.encode_text(ids)

    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._model.encode_image(pixels)

    def _vit_parts(self) -> _VitParts:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        visual = self._model.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"dense_features needs a ViT CLIP; {self.name!r} has a "
                f"{type(visual).__name__} image tower (ResNet and timm towers are not supported); "
                f"use a ViT model such as 'clip-vit-b-16'"
            )
        blocks = visual.transformer.resblocks
        plain = (
            visual.attn_pool is None
            and visual.pool_type == "tok"
            and not visual.final_ln_after_pool
            and all(type(b) is ResidualAttentionBlock for b in blocks)
            and not hasattr(blocks[-1], "ln_1_kv")
        )
        if not plain:
            raise ValueError(
                f"dense_features supports plain CLIP ViTs (class-token pooling, standard "
                f"blocks); {self.name!r} uses attentional pooling, average pooling or custom "
                f"blocks"
            )
        patch = visual.patch_size
        patch = patch if isinstance(patch, int) else patch[0]
        native_grid = tuple(visual.grid_size)
        batch_first = visual.transformer.batch_first

        def embed(pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
            x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
            x = x.flatten(2).transpose(1, 2)
            cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
            x = x + _interpolate_pos_embed(visual.positional_embedding, native_grid, grid).to(
                x.dtype
            )
            return visual.ln_pre(x)

        def run_block(i: int, x: torch.Tensor) -> torch.Tensor:
            if batch_first:
                return blocks[i](x)
            return blocks[i](x.transpose(0, 1)).transpose(0, 1)

        last = blocks[-1]
        attn = last.attn
        width = attn.embed_dim

        def value(y: torch.Tensor) -> torch.Tensor:
            weight = attn.in_proj_weight[2 * width :]
            bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
            return F.linear(y, weight, bias)

        def head(tokens: torch.Tensor) -> torch.Tensor:
            tokens = visual.ln_post(tokens)
            return tokens @ visual.proj if visual.proj is not None else tokens

        return _VitParts(
            patch_size=int(patch),
            num_blocks=len(blocks),
            embed=embed,
            run_block=run_block,
            ln_1=last.ln_1,
            value=value,
            out_proj=attn.out_proj,
            ls_1=last.ls_1,
            ln_2=last.ln_2,
            mlp=last.mlp,
            ls_2=last.ls_2,
            num_heads=attn.num_heads,
            head=head,
        )


# ------------------------------------------------------------------------------- transformers


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's byte-level BPE vocabulary and merges, from the file open_clip ships.

    This is the vocabulary of every OpenAI CLIP checkpoint (the ``vocab.json`` and
    ``merges.txt`` of ``openai/clip-vit-*`` on the Hugging Face hub hold the same 49408 tokens),
    so a transformers ``CLIPTokenizer`` can be built from it with no download.

    Returns:
        ``(vocab, merges)``: token -> id (49408 entries) and the 48894 merge pairs in rank order.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_hf_clip_tokenizer() -> Any:
    """A transformers ``CLIPTokenizer`` with CLIP's vocabulary, built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges)


class HfClipEncoder(ClipEncoder):
    """:class:`ClipEncoder` over a transformers ``CLIPModel``.

    Text goes through a transformers ``CLIPTokenizer`` built from CLIP's BPE vocabulary (pass
    ``tokenizer=`` to use another one, e.g. ``CLIPTokenizer.from_pretrained(repo)``); images
    are preprocessed like ``CLIPImageProcessor`` (shortest side, bicubic antialiased resize,
    centre crop rounding down).

    Args:
        model: A ``transformers.CLIPModel``.
        tokenizer: A transformers tokenizer; default built offline by
            :func:`build_hf_clip_tokenizer`.
        **kwargs: :class:`ClipEncoder` arguments.
    """

    crop_rounding = "floor"

    def __init__(self, model: nn.Module, *, tokenizer: Any = None, **kwargs: Any) -> None:
        from transformers import CLIPModel

        if not isinstance(model, CLIPModel):
            raise TypeError(
                f"model: expected a transformers CLIPModel, got {type(model).__name__}; use "
                f"OpenClipEncoder for open_clip models"
            )
        super().__init__(model, **kwargs)
        self._tokenizer = tokenizer if tokenizer is not None else build_hf_clip_tokenizer()

    def _native_input_size(self) -> int:
        return int(self._model.config.vision_config.image_size)

    @property
    def embed_dim(self) -> int:
        return int(self._model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        return float(self._model.logit_scale.detach().float().exp())

    @property
    def context_length(self) -> int:
        return int(self._model.config.text_config.max_position_embeddings)

    def _tokenize(self, texts: list[str], truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self._tokenizer(texts)["input_ids"]
        if not truncate:
            self._too_long(texts, [len(e) for e in encoded])
        ctx = self.context_length
        eos = self._model.config.text_config.eos_token_id
        encoded = [e if len(e) <= ctx else [*e[: ctx - 1], e[-1]] for e in encoded]
        length = max(len(e) for e in encoded)
        pad = self._tokenizer.pad_token_id
        ids = torch.full((len(encoded), length), pad if pad is not None else eos, dtype=torch.long)
        lengths = torch.empty(len(encoded), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            lengths[row] = len(tokens)
        return ids, lengths

    def _text_forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()
        out = self._model.text_model(input_ids=ids, attention_mask=mask)
        return self._model.text_projection(out.pooler_output)

    def _image_forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._model.vision_model(pixel_values=pixels)
        return self._model.visual_projection(out.pooler_output)

    def _vit_parts(self) -> _VitParts:
        vision = self._model.vision_model
        emb = vision.embeddings
        layers = vision.encoder.layers
        patch = int(emb.patch_size)
        side = int(emb.image_size) // patch
        native_grid = (side, side)

        def embed(pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
            x = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype))
            x = x.flatten(2).transpose(1, 2)
            cls = emb.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
            pos = _interpolate_pos_embed(emb.position_embedding.weight, native_grid, grid)
            return vision.pre_layrnorm(x + pos.to(x.dtype))

        def run_block(i: int, x: torch.Tensor) -> torch.Tensor:
            out = layers[i](x, None)
            return out[0] if isinstance(out, tuple) else out

        last = layers[-1]

        def head(tokens: torch.Tensor) -> torch.Tensor:
            return self._model.visual_projection(vision.post_layernorm(tokens))

        return _VitParts(
            patch_size=patch,
            num_blocks=len(layers),
            embed=embed,
            run_block=run_block,
            ln_1=last.layer_norm1,
            value=last.self_attn.v_proj,
            out_proj=last.self_attn.out_proj,
            ls_1=nn.Identity(),
            ln_2=last.layer_norm2,
            mlp=last.mlp,
            ls_2=nn.Identity(),
            num_heads=int(last.self_attn.num_heads),
            head=head,
        )


# ------------------------------------------------------------------------------------ loading

_BACKENDS: dict[str, type[ClipEncoder]] = {
    "open_clip": OpenClipEncoder,
    "transformers": HfClipEncoder,
}


def load_clip(
    name: str,
    *,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    tiny: bool = False,
) -> ClipEncoder:
    """Build a registered CLIP model as a :class:`ClipEncoder`.

    Weights are resolved by :func:`textseg._hub.create_model`: ``checkpoint`` > the
    ``TEXTSEG_WEIGHTS`` folder > the hub cache > a download (unless ``HF_HUB_OFFLINE``).

    Args:
        name: Registry name, see ``textseg.list_models("clip")``, e.g. ``"clip-vit-b-32"``.
        device: Where to run.
        dtype: Compute dtype (``"float32"``, ``"bfloat16"``, ``"float16"``).
        checkpoint: Explicit state dict file (or folder holding one).
        pretrained: False builds the architecture with random weights and never touches the
            disk or the network.
        tiny: Build the entry's tiny random-init variant (``--tiny``), unless a
            ``checkpoint`` is given.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).
        textseg._hub.WeightsNotFoundError: Weights not on disk and not downloadable.
    """
    from textseg._hub import create_model
    from textseg._registry import resolve_cfg

    cfg = resolve_cfg(name, "clip", tiny=tiny, checkpoint=checkpoint)
    backend = cfg.arch.get("backend")
    if backend not in _BACKENDS:
        raise ValueError(
            f"registry entry {name!r} has backend {backend!r}, expected one of {sorted(_BACKENDS)}"
        )
    model = create_model(cfg, pretrained=pretrained, checkpoint=checkpoint)
    return _BACKENDS[backend](
        model,
        input_size=cfg.input_size,
        pixel_mean=cfg.mean if cfg.mean is not None else OPENAI_CLIP_MEAN,
        pixel_std=cfg.std if cfg.std is not None else OPENAI_CLIP_STD,
        device=device,
        dtype=dtype,
        name=cfg.name,
    )
