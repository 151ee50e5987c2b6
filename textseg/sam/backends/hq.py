"""SAM backend over transformers ``SamHQModel`` (HQ-SAM: high-quality masks, fine boundaries).

HQ-SAM's decoder reads two image features: the image embedding (as SAM) and the output of the
first global-attention block of the ViT. :meth:`SamHQBackend.encode` returns both in one tensor,
concatenated along channels, ``(B, 256 + vit_dim, 64, 64)`` (the SAM core caches one tensor per
image); :meth:`SamHQBackend.prepare` computes the prompt-independent "HQ features" (the fusion of
the two, ``(1, 32, 256, 256)``) once per image, where the official predictor and transformers'
``SamHQMaskDecoder.forward`` compute them again at every call.

Decoding runs the model's own modules (prompt encoder, two-way transformer, upscaling, HQ fusion,
hypernetwork MLPs, IoU head) in the order of the official ``segment_anything_hq``
``MaskDecoderHQ``, so the masks equal the official package's on the same weights
(``tests/sam/test_backends_hq.py``). transformers' ``SamHQMaskDecoder.forward`` (5.x) upscales
the decoder's *input* embedding (transposed) instead of the two-way transformer's output, so
``SamHQModel.forward`` gives other masks; it is not called here.

Outputs follow the official semantics: each mask is SAM's mask of a decoder token plus the HQ
token's mask (``hq_token_only=True``: the HQ mask alone). With multimask output the three
candidates are tokens 1-3 (each plus the HQ mask), in token order; the core's choice by predicted
IoU is the official predictor's ``multimask_output=True`` result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from textseg.sam.backends.base import TransformersBackend, check_prompts

__all__ = ["SamHQBackend"]


@dataclass
class _HQState:
    """Per-image decoder state: the HQ features ``(1, C/8, 4h, 4w)``."""

    hq_features: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.hq_features.numel() * self.hq_features.element_size()


class SamHQBackend(TransformersBackend):
    """Backend over a transformers ``SamHQModel``.

    Args:
        model: A ``transformers.SamHQModel``; put in eval mode. Its parameters decide the device
            and dtype.
        hq_token_only: Masks from the HQ token alone (the official option; default False:
            SAM's token mask plus the HQ mask, the official default).

    Raises:
        TypeError: ``model`` is not a ``SamHQModel``.
    """

    def __init__(self, model: torch.nn.Module, *, hq_token_only: bool = False) -> None:
        from transformers import SamHQModel

        if not isinstance(model, SamHQModel):
            raise TypeError(f"expected a transformers SamHQModel, got {type(model).__name__}")
        self.model = model.eval()
        config: Any = model.config
        self.image_size = int(config.vision_config.image_size)
        self.grid = int(config.prompt_encoder_config.image_embedding_size)
        self.low_res_size = 4 * self.grid
        self.embed_dim = int(config.mask_decoder_config.hidden_size)
        self.vit_dim = int(config.mask_decoder_config.vit_dim)
        self.hq_token_only = bool(hq_token_only)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised, padded images -> ``(B, 256 + vit_dim, S/16, S/16)``: the
        image embedding and the first global block's ViT features, concatenated.

        Raises:
            ValueError: ``pixels`` is not ``(B, 3, image_size, image_size)``.
        """
        s = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise ValueError(
                f"pixels: expected (B, 3, {s}, {s}) normalised, padded images, "
                f"got {tuple(pixels.shape)}"
            )
        out = self.model.vision_encoder(pixels.to(self.device, self.dtype))
        vit = out.intermediate_embeddings[0].permute(0, 3, 1, 2)
        return torch.cat([out.last_hidden_state, vit], dim=1)

    def split(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 256 + vit_dim, h, w)`` -> image embedding ``(B, 256, h, w)`` and ViT features
        ``(B, vit_dim, h, w)``.

        Raises:
            ValueError: Not an embedding of this backend (wrong channel count).
        """
        want = self.embed_dim + self.vit_dim
        if embedding.ndim != 4 or embedding.shape[1] != want:
            raise ValueError(
                f"embedding: expected (B, {want}, {self.grid}, {self.grid}) (image embedding and "
                f"ViT features of SamHQBackend.encode), got {tuple(embedding.shape)}"
            )
        return embedding[:, : self.embed_dim], embedding[:, self.embed_dim :]

    @torch.inference_mode()
    def prepare(self, embedding: torch.Tensor) -> _HQState:
        """The HQ features of one image: ``embedding_encoder(image embedding) +
        compress_vit_feat(ViT features)``, ``(1, 32, 256, 256)`` for published models."""
        image, vit = self.split(embedding.to(self.device, self.dtype))
        dec = self.model.mask_decoder
        act = dec.activation
        encoded = dec.encoder_conv2(act(dec.encoder_norm(dec.encoder_conv1(image))))
        vit = dec.compress_vit_conv2(act(dec.compress_vit_norm(dec.compress_vit_conv1(vit))))
        return _HQState(encoded + vit)

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        points: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        multimask_output: bool,
        state: object | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts on one image's embedding (see :meth:`SamBackend.decode`).

        Returns:
            ``(N, K, 256, 256)`` float32 low-res logits and ``(N, K)`` float32 predicted IoU,
            K = 3 with ``multimask_output`` (tokens 1..3), else 1 (token 0); each mask plus the
            HQ token's mask (or the HQ mask alone with ``hq_token_only``).

        Raises:
            ValueError: No prompt, shapes that are not the documented ones, or fields with
                different numbers of prompts.
        """
        grid = self.grid
        n = check_prompts(
            embedding, points, point_labels, boxes, mask_inputs,
            channels=self.embed_dim + self.vit_dim, grid=grid, low_res_size=self.low_res_size,
        )  # fmt: skip
        hq = state if isinstance(state, _HQState) else self.prepare(embedding)

        device, dtype = self.device, self.dtype
        model = self.model
        dec = model.mask_decoder
        sparse, dense = model.prompt_encoder(
            input_points=None if points is None else points.to(device, torch.float32)[:, None],
            input_labels=None if point_labels is None else point_labels.to(device)[:, None],
            input_boxes=None if boxes is None else boxes.to(device, torch.float32)[:, None],
            input_masks=None if mask_inputs is None else mask_inputs.to(device, dtype),
        )
        image, _ = self.split(embedding.to(device, dtype))
        # Output tokens: IoU, 4 mask tokens, HQ token; then the prompt's sparse tokens.
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hq_token.weight])
        tokens = tokens[None, None].expand(n, 1, -1, -1)
        if sparse is not None:
            tokens = torch.cat([tokens, sparse.to(dtype)], dim=2)
        src = image.expand(n, -1, -1, -1) + dense.to(dtype)
        pe = self.image_pe().expand(n, -1, -1, -1)
        queries, keys = dec.transformer(
            point_embeddings=tokens,
            image_embeddings=src,
            image_positional_embeddings=pe,
            attention_similarity=None,
        )
        queries, keys = queries[:, 0], keys[:, 0]  # point-batch axis of size 1
        c, h, w = src.shape[1:]
        src = keys.transpose(1, 2).reshape(n, c, h, w)
        act = dec.activation
        up = act(dec.upscale_conv2(act(dec.upscale_layer_norm(dec.upscale_conv1(src)))))
        up_hq = dec.mask_conv2(act(dec.mask_norm(dec.mask_conv1(up)))) + hq.hq_features.to(dtype)
        sam_tokens = dec.num_mask_tokens - 1  # 4: the single-mask token and three multimask
        hyper = torch.stack(
            [dec.output_hypernetworks_mlps[i](queries[:, 1 + i]) for i in range(sam_tokens)],
            dim=1,
        )
        hyper_hq = dec.hq_mask_mlp(queries[:, 1 + sam_tokens])[:, None]
        b, cu, hu, wu = up.shape
        masks_sam = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        masks_hq = (hyper_hq @ up_hq.reshape(b, cu, hu * wu)).reshape(b, 1, hu, wu)
        iou = dec.iou_prediction_head(queries[:, 0])
        picked = slice(1, sam_tokens) if multimask_output else slice(0, 1)
        masks = masks_sam[:, picked]
        masks = masks_hq.expand_as(masks) if self.hq_token_only else masks + masks_hq
        return masks.float(), iou[:, picked].float()
