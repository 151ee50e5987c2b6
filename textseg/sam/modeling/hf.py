"""Builder for the transformers ``SamModel`` family (``facebook/sam-vit-base/large/huge``).

The configuration is the published one of the Hugging Face checkpoints: ViT image encoder with
patch 16, 14x14 windows, relative positions, LayerNorm eps 1e-6, a 256-channel neck, a
random-Fourier positional encoding with 128 frequencies (``2 * 128 = 256`` channels), mask-input
channels 16 and a two-layer two-way decoder. Only the sizes in ``cfg.arch`` vary.

Note:
    The published transformers configs use LayerNorm eps 1e-6 inside the decoder's two-way
    blocks where segment_anything uses PyTorch's default 1e-5; the builder keeps the published
    value, so converted official weights give the same masks up to float rounding, not bitwise.
"""

from __future__ import annotations

from typing import Any

from textseg._registry import ModelCfg

__all__ = ["build_hf_sam", "hf_sam_config"]

_PATCH = 16
_WINDOW = 14
_MASK_IN_CHANS = 16
_EPS = 1e-6

#: The published decoder sizes (every facebook/sam-vit-* checkpoint).
_DECODER_DEFAULTS = {
    "prompt_embed_dim": 256,
    "decoder_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "iou_head_hidden_dim": 256,
}
_REQUIRED = (
    "encoder_embed_dim",
    "encoder_depth",
    "encoder_num_heads",
    "encoder_global_attn_indexes",
)


def hf_sam_config(cfg: ModelCfg) -> Any:
    """The ``transformers.SamConfig`` for a registry entry.

    Args:
        cfg: Entry whose ``arch`` has ``encoder_embed_dim``, ``encoder_depth``,
            ``encoder_num_heads`` and ``encoder_global_attn_indexes``; optionally
            ``prompt_embed_dim``, ``decoder_mlp_dim``, ``decoder_num_heads`` and
            ``iou_head_hidden_dim`` (defaults: the real SAM's 256, 2048, 8, 256).
            ``cfg.input_size`` is the square input side (default 1024).

    Raises:
        ValueError: A required ``arch`` key is missing, or the sizes do not fit together.
    """
    from transformers import SamConfig

    arch = cfg.arch
    missing = [key for key in _REQUIRED if key not in arch]
    if missing:
        raise ValueError(
            f"{cfg.name!r}: arch is missing {', '.join(missing)}; a transformers SamModel entry "
            f"needs {', '.join(_REQUIRED)}"
        )
    sizes = {key: int(arch.get(key, default)) for key, default in _DECODER_DEFAULTS.items()}
    dim = sizes["prompt_embed_dim"]
    if dim % 2:
        raise ValueError(
            f"{cfg.name!r}: prompt_embed_dim must be even (sin and cos halves of the positional "
            f"encoding), got {dim}"
        )
    image_size = int(cfg.input_size or 1024)
    if image_size % _PATCH:
        raise ValueError(
            f"{cfg.name!r}: input_size must be a multiple of the patch size {_PATCH}, "
            f"got {image_size}"
        )
    vision = {
        "hidden_size": int(arch["encoder_embed_dim"]),
        "num_hidden_layers": int(arch["encoder_depth"]),
        "num_attention_heads": int(arch["encoder_num_heads"]),
        "global_attn_indexes": [int(i) for i in arch["encoder_global_attn_indexes"]],
        "output_channels": dim,
        "num_pos_feats": dim // 2,
        "image_size": image_size,
        "patch_size": _PATCH,
        "window_size": _WINDOW,
        "mlp_ratio": 4.0,
        "layer_norm_eps": _EPS,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "use_abs_pos": True,
        "use_rel_pos": True,
    }
    prompt = {
        "hidden_size": dim,
        "image_size": image_size,
        "patch_size": _PATCH,
        "mask_input_channels": _MASK_IN_CHANS,
        "num_point_embeddings": 4,
        "hidden_act": "gelu",
        "layer_norm_eps": _EPS,
    }
    decoder = {
        "hidden_size": dim,
        "hidden_act": "relu",
        "mlp_dim": sizes["decoder_mlp_dim"],
        "num_hidden_layers": 2,
        "num_attention_heads": sizes["decoder_num_heads"],
        "attention_downsample_rate": 2,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": sizes["iou_head_hidden_dim"],
        "layer_norm_eps": _EPS,
    }
    return SamConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )


def build_hf_sam(cfg: ModelCfg) -> Any:
    """A random-init ``transformers.SamModel`` for ``cfg``, in eval mode, on CPU.

    Weights are loaded by the caller (:func:`textseg._hub.create_model`). The model's state-dict
    keys are those of the published ``model.safetensors`` files plus the tied copy of the
    positional encoding; see :func:`textseg.sam.modeling.convert.fill_tied_hf_keys`.

    Raises:
        ValueError: ``cfg.arch`` lacks an encoder size or the sizes do not fit together.
    """
    from transformers import SamModel

    model = SamModel(hf_sam_config(cfg))
    return model.eval()
