"""The CLIP encoder interface (:class:`ClipEncoder`): texts and images to L2-normalised
embeddings, preprocessing in torch exactly as the model's own library does (resize the shortest
side with antialiased bicubic interpolation, centre crop, normalise with the model's mean and
std), batching, and the MaskCLIP dense path (:meth:`ClipEncoder.dense_features`). The library
backends (:mod:`.openclip`, :mod:`.hf`) fill in tokenising and the forward passes."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from textseg._device import resolve_device, resolve_dtype
from textseg._image import ImageInput, to_rgb_uint8
from textseg.clip.encoders.dense import (
    MAX_DENSE_TOKENS,
    DenseAttention,
    DenseFeatures,
    VitParts,
    dense_last_block,
)

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "ClipEncoder"]

#: Pixel mean of OpenAI CLIP's training data, RGB, 0-255 scale.
OPENAI_CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
#: Pixel std of OpenAI CLIP's training data, RGB, 0-255 scale.
OPENAI_CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)


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
    def _vit_parts(self) -> VitParts:
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
        x = dense_last_block(parts, x, attention)
        tokens = parts.head(x[:, 1:])
        features = F.normalize(tokens.float(), dim=-1).reshape(*grid, -1)
        return DenseFeatures(
            features=features,
            image_size=image_size,
            resized_size=(int(resized[0]), int(resized[1])),
            crop_box=tuple(int(v) for v in box),  # type: ignore[arg-type]
            patch_size=parts.patch_size,
        )


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
