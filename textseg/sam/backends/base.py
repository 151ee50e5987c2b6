"""The backend interface: the model-specific half of the SAM core.

A backend sees tensors in the model's input frame (the image resized so that its longest side is
``image_size``, padded bottom-right); the core (:mod:`textseg.sam.core`) owns pre-processing,
coordinate transforms, caching, chunking and post-processing, so every backend gets them alike.
"""

from __future__ import annotations

import abc

import numpy as np
import torch

__all__ = ["SamBackend", "TransformersBackend", "check_prompts"]


class SamBackend(abc.ABC):
    """Encode/decode interface over one SAM model.

    Attributes:
        image_size: Side of the square model input (1024 for every published SAM).
        low_res_size: Side of the low-resolution mask logits the decoder returns (256).
        pixel_mean: ``(3,)`` per-channel mean on the 0-255 scale.
        pixel_std: ``(3,)`` per-channel std on the 0-255 scale.
        mask_threshold: Logit threshold that turns logits into masks (0.0).
        resize_mode: How the core fits an image to the square input: ``"longest"`` (longest
            side to image_size, padded bottom-right; SAM) or ``"stretch"`` (resized to the
            square, aspect ratio not kept; SAM 2).
    """

    image_size: int = 1024
    low_res_size: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    mask_threshold: float = 0.0
    resize_mode: str = "longest"
    #: Whether :meth:`decode` accepts extra sparse token embeddings (``embeddings=``).
    supports_token_prompts: bool = False
    #: Whether :meth:`decode` accepts ``region=(rows, cols)``: only the top-left
    #: ``rows x cols`` embedding cells are upscaled (low-res logits ``(N, K, 4 rows, 4 cols)``).
    supports_region: bool = False

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Device of the model's parameters (the source of truth for device)."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """Floating dtype the model computes in."""

    @property
    def image_encoder(self) -> torch.nn.Module:
        """The model's image encoder module (quantized / compiled by :meth:`quantize_int8` and
        :meth:`compile_encoder`)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its image encoder")

    def preprocess(self, image: np.ndarray, *, video: bool = False) -> torch.Tensor | None:
        """``(H, W, 3) uint8`` RGB -> ``(1, 3, S, S)`` normalised model input, for a backend
        whose reference pre-processing is not the core's (SAM 2's official predictors); None
        (the default): the core resizes (``resize_mode``) and normalises itself.

        Args:
            video: A video frame: the reference's video loader, where it differs from its
                image predictor.
        """
        return None

    def quantize_int8(self) -> None:
        """Dynamic int8 quantization of the image encoder's linear layers (CPU, in place).

        The prompt encoder and mask decoder stay float32: they are a small share of the time
        and the masks are most sensitive to them.
        """
        from textseg._device import quantize_linear_int8

        quantize_linear_int8(self.image_encoder)

    def compile_encoder(self, **options: object) -> None:
        """Run the image encoder through ``torch.compile(encoder, **options)`` from now on
        (the module itself is left as it is; the first call compiles)."""
        self._compiled_encoder = torch.compile(self.image_encoder, **options)

    def run_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image encoder's forward, compiled when :meth:`compile_encoder` was called."""
        encoder = getattr(self, "_compiled_encoder", None) or self.image_encoder
        return encoder(pixels)

    @abc.abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings.

        Args:
            pixels: ``(B, 3, S, S)`` normalised, padded images on :attr:`device`, S = image_size.

        Returns:
            ``(B, C, h, w)`` embeddings (C = 256, h = w = 64 for published models).
        """

    def set_precision(self, dtype: torch.dtype) -> None:
        """Called once after the model is cast to ``dtype``; backends keep parts that need
        float32 (e.g. coordinate encodings) in float32 here. Default: nothing."""
        return None

    def prepare(self, embedding: torch.Tensor) -> object | None:
        """Prompt-independent decoder state for one image, kept with its cached embedding.

        Backends that can reuse work across prompts of the same image return it here; the core
        passes it back to :meth:`decode` as ``state``. The default keeps nothing.
        """
        return None

    @abc.abstractmethod
    def decode(
        self,
        embedding: torch.Tensor,
        points: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        multimask_output: bool,
        state: object | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts on one image's embedding.

        Args:
            embedding: ``(1, C, h, w)`` embedding of one image.
            points: ``(N, P, 2)`` XY in the model input frame, or None.
            point_labels: ``(N, P)`` 1 = foreground, 0 = background, -1 = padding.
            boxes: ``(N, 4)`` XYXY in the model input frame, or None.
            mask_inputs: ``(N, 1, 256, 256)`` low-res logits, or None.
            multimask_output: Return the three multimask outputs instead of the single one.
            state: What :meth:`prepare` returned for this embedding, or None.
            embeddings: ``(N, T, C)`` extra sparse tokens appended to the point/box tokens
                (only where :attr:`supports_token_prompts`).

        Returns:
            ``(N, K, 256, 256)`` float32 low-res mask logits and ``(N, K)`` predicted IoU, with
            K = 3 for multimask output, else 1.
        """


class TransformersBackend(SamBackend):
    """The part shared by backends over a transformers SAM-family model (``SamModel``,
    ``SamHQModel``, SAM 2): device and dtype from its parameters, and the dense positional
    encoding of the embedding grid, computed once per device and dtype.

    Subclasses set ``self.model``.
    """

    model: torch.nn.Module
    _image_pe: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def image_pe(self) -> torch.Tensor:
        """``(1, C, h, w)`` dense positional encoding of the embedding grid, computed once."""
        pe = self._image_pe
        if pe is None or pe.device != self.device or pe.dtype != self.dtype:
            with torch.inference_mode():
                pe = self.model.get_image_wide_positional_embeddings().to(self.dtype)
            self._image_pe = pe
        return pe


def _rows(name: str, tensor: torch.Tensor | None, shape: tuple[int | None, ...]) -> int | None:
    """Check ``tensor`` against ``shape`` (None: any size) and return its first dimension."""
    if tensor is None:
        return None
    sizes = tuple(tensor.shape)
    if len(sizes) != len(shape) or any(
        want is not None and got != want for got, want in zip(sizes, shape, strict=False)
    ):
        wanted = ", ".join(
            str(want) if want is not None else "N" if i == 0 else "*"
            for i, want in enumerate(shape)
        )
        raise ValueError(f"{name}: expected shape ({wanted}), got {sizes}")
    return sizes[0]


def check_prompts(
    embedding: torch.Tensor,
    points: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_inputs: torch.Tensor | None,
    *,
    channels: int | None,
    grid: int,
    low_res_size: int,
) -> int:
    """Validate the inputs of :meth:`SamBackend.decode` for backends that call a model's own
    prompt encoder: ``embedding`` ``(1, channels, grid, grid)`` (None: any channels), then the
    prompt fields' documented shapes and one common N.

    Returns:
        N, the number of prompts.

    Raises:
        ValueError: No prompt, a shape other than the documented one, ``points`` without
            ``point_labels`` (or the reverse), or fields with different numbers of prompts.
    """
    _rows("embedding", embedding, (1, channels, grid, grid))
    if (points is None) != (point_labels is None):
        raise ValueError("points and point_labels must be given together (or both None)")
    counts = {
        "points": _rows("points", points, (None, None, 2)),
        "point_labels": _rows(
            "point_labels", point_labels, (None, None if points is None else points.shape[1])
        ),
        "boxes": _rows("boxes", boxes, (None, 4)),
        "mask_inputs": _rows("mask_inputs", mask_inputs, (None, 1, low_res_size, low_res_size)),
    }
    given = {name: n for name, n in counts.items() if n is not None}
    if not given:
        raise ValueError("decode: no prompt; give points, boxes or mask_inputs")
    if len(set(given.values())) > 1:
        raise ValueError(
            f"decode: every prompt field needs the same number of prompts N, got {given}"
        )
    return next(iter(given.values()))
