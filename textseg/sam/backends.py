"""The model-specific half of the SAM core: encode an image, decode prompts on an embedding.

A backend sees tensors in the model's input frame (the image resized so that its longest side is
``image_size``, padded bottom-right); the core (:mod:`textseg.sam.core`) owns pre-processing,
coordinate transforms, caching, chunking and post-processing, so every backend gets them alike.
"""

from __future__ import annotations

import abc

import torch

__all__ = ["SamBackend", "SegmentAnythingBackend", "make_backend"]


class SamBackend(abc.ABC):
    """Encode/decode interface over one SAM model.

    Attributes:
        image_size: Side of the square model input (1024 for every published SAM).
        low_res_size: Side of the low-resolution mask logits the decoder returns (256).
        pixel_mean: ``(3,)`` per-channel mean on the 0-255 scale.
        pixel_std: ``(3,)`` per-channel std on the 0-255 scale.
        mask_threshold: Logit threshold that turns logits into masks (0.0).
    """

    image_size: int = 1024
    low_res_size: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    mask_threshold: float = 0.0
    #: Whether :meth:`decode` accepts extra sparse token embeddings (``embeddings=``).
    supports_token_prompts: bool = False

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Device of the model's parameters (the source of truth for device)."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """Floating dtype the model computes in."""

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


class SegmentAnythingBackend(SamBackend):
    """Backend over ``segment_anything.modeling.Sam`` (vit_b / vit_l / vit_h, MobileSAM).

    Encoding is the model's own image encoder; decoding uses :mod:`textseg.sam.decoder`, which
    reuses the prompt-independent part of the decoder across prompts of one image.
    """

    supports_token_prompts = True

    def __init__(self, model: torch.nn.Module) -> None:
        from segment_anything.modeling import Sam

        if not isinstance(model, Sam):
            raise TypeError(f"expected a segment_anything Sam model, got {type(model).__name__}")
        self.model = model.eval()
        self.image_size = int(model.image_encoder.img_size)
        self.pixel_mean = tuple(float(v) for v in model.pixel_mean.flatten())
        self.pixel_std = tuple(float(v) for v in model.pixel_std.flatten())
        self.mask_threshold = float(model.mask_threshold)
        grid = model.prompt_encoder.image_embedding_size
        self.low_res_size = 4 * int(grid[0])
        self._image_pe: torch.Tensor | None = None
        self._upscaling: object | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_precision(self, dtype: torch.dtype) -> None:
        # segment_anything encodes coordinates in float32 inside the prompt encoder, so the
        # prompt encoder stays float32; its outputs are cast to the decoder's dtype.
        self.model.prompt_encoder.float()
        self._image_pe = None
        self._upscaling = None

    @property
    def dtype(self) -> torch.dtype:
        return self.model.mask_decoder.iou_token.weight.dtype

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.image_encoder(pixels)

    def image_pe(self) -> torch.Tensor:
        """``(1, C, h, w)`` dense positional encoding, computed once per backend."""
        pe = self._image_pe
        if pe is None or pe.device != self.device or pe.dtype != self.dtype:
            pe = self.model.prompt_encoder.get_dense_pe().to(self.dtype)
            self._image_pe = pe
        return pe

    def prepare(self, embedding: torch.Tensor) -> object | None:
        from textseg.sam.decoder import UpscalingWeights, make_context

        decoder = self.model.mask_decoder
        up = self._upscaling
        if not isinstance(up, UpscalingWeights) or up.w1.device != self.device:
            up = self._upscaling = UpscalingWeights.from_decoder(decoder)
        no_mask = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        no_mask = no_mask.to(self.dtype)
        return make_context(decoder, embedding, self.image_pe(), no_mask, up)

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
        from textseg.sam.decoder import DecoderContext, decode_masks

        context = state if isinstance(state, DecoderContext) else self.prepare(embedding)
        assert isinstance(context, DecoderContext)
        sparse, dense = self.model.prompt_encoder(
            points=None if points is None else (points.float(), point_labels),
            boxes=None if boxes is None else boxes.float(),
            masks=None if mask_inputs is None else mask_inputs.float(),
        )
        sparse, dense = sparse.to(self.dtype), dense.to(self.dtype)
        if embeddings is not None:
            tokens = embeddings.to(self.dtype)
            if points is None and boxes is None:
                # No point/box tokens: the prompt encoder returned an empty batch of one.
                sparse = tokens
            else:
                sparse = torch.cat([sparse, tokens], dim=1)
        tokens = slice(1, None) if multimask_output else slice(0, 1)
        return decode_masks(
            self.model.mask_decoder,
            context,
            sparse,
            None if mask_inputs is None else dense,
            tokens,
        )


def make_backend(model: torch.nn.Module) -> SamBackend:
    """The backend for a model object: segment_anything ``Sam`` or transformers ``SamModel``."""
    from segment_anything.modeling import Sam

    if isinstance(model, SamBackend):
        return model
    if isinstance(model, Sam):
        return SegmentAnythingBackend(model)
    try:
        from transformers import SamModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        SamModel = None
    if SamModel is not None and isinstance(model, SamModel):
        from textseg.sam.backend_hf import TransformersSamBackend

        return TransformersSamBackend(model)
    raise TypeError(
        f"expected a segment_anything Sam or a transformers SamModel, got {type(model).__name__}"
    )
