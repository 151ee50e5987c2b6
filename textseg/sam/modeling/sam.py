"""Builders for ``segment_anything.modeling.Sam`` with a ViT or a TinyViT (MobileSAM) encoder.

The module classes come from the ``segment-anything`` package, so official checkpoints load into
them unchanged; the builders only choose sizes (the official ``build_sam`` hard-codes the
decoder size and cannot build the tiny test variants).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from textseg._registry import ModelCfg
from textseg.sam.modeling.attention import use_sdpa_attention

__all__ = ["build_mobile_sam", "build_sam_vit"]

_PATCH = 16


def _prompt_and_decoder(arch: dict[str, Any], image_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    dim = arch.get("prompt_embed_dim", 256)
    grid = image_size // _PATCH
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2,
            embedding_dim=dim,
            mlp_dim=arch.get("decoder_mlp_dim", 2048),
            num_heads=arch.get("decoder_num_heads", 8),
        ),
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=arch.get("iou_head_hidden_dim", 256),
    )
    return prompt_encoder, mask_decoder


def build_sam_vit(cfg: ModelCfg) -> Sam:
    """SAM with the ViT image encoder (vit_b / vit_l / vit_h and the tiny test variant).

    The encoder's attention is :class:`~textseg.sam.modeling.attention.SdpaRelPosAttention`
    (same parameters as the official module, fused kernel); ``arch["sdpa_attention"] = False``
    keeps the official one.
    """
    arch = cfg.arch
    image_size = cfg.input_size or 1024
    encoder = ImageEncoderViT(
        depth=arch["encoder_depth"],
        embed_dim=arch["encoder_embed_dim"],
        img_size=image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=arch["encoder_num_heads"],
        patch_size=_PATCH,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(arch["encoder_global_attn_indexes"]),
        window_size=14,
        out_chans=arch.get("prompt_embed_dim", 256),
    )
    if arch.get("sdpa_attention", True):
        use_sdpa_attention(encoder)
    prompt_encoder, mask_decoder = _prompt_and_decoder(arch, image_size)
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)


def build_mobile_sam(cfg: ModelCfg) -> Sam:
    """MobileSAM: SAM's prompt encoder and decoder behind a TinyViT image encoder (vit_t)."""
    from textseg.sam.modeling.tiny_vit import TinyViT

    arch = cfg.arch
    image_size = cfg.input_size or 1024
    encoder = TinyViT(
        img_size=image_size,
        embed_dims=tuple(arch.get("embed_dims", (64, 128, 160, 320))),
        depths=tuple(arch.get("depths", (2, 2, 6, 2))),
        num_heads=tuple(arch.get("num_heads", (2, 4, 5, 10))),
        window_sizes=tuple(arch.get("window_sizes", (7, 7, 14, 7))),
        out_chans=arch.get("prompt_embed_dim", 256),
    )
    prompt_encoder, mask_decoder = _prompt_and_decoder(arch, image_size)
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)
