"""SAM backend over ``segment_anything.modeling.Sam`` (vit_b / vit_l / vit_h, MobileSAM)."""

from __future__ import annotations

import torch

from textseg.sam.backends.base import SamBackend

__all__ = ["SegmentAnythingBackend"]


class SegmentAnythingBackend(SamBackend):
    """Backend over ``segment_anything.modeling.Sam`` (vit_b / vit_l / vit_h, MobileSAM).

    Encoding is the model's own image encoder; decoding uses :mod:`textseg.sam.decoder`, which
    reuses the prompt-independent part of the decoder across prompts of one image.
    """

    supports_token_prompts = True
    supports_region = True

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

    @property
    def image_encoder(self) -> torch.nn.Module:
        return self.model.image_encoder

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.run_encoder(pixels)

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
        if not isinstance(up, UpscalingWeights) or not up.is_current(decoder):
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
        region: tuple[int, int] | None = None,
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
            region,
        )
