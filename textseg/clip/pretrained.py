"""Registered CLIP checkpoints (task ``"clip"``) and their tiny random-init test variants.

Two families, one per backend of :mod:`textseg.clip.encoders`:

- open_clip ``CLIP`` models (names ``clip-*``), architectures from the model configs bundled
  with open_clip (``open_clip.get_model_config``), OpenAI weights from the Hugging Face repos
  open_clip's own pretrained table points to (``timm/vit_*_clip_224.openai``);
- transformers ``CLIPModel`` (names ``hf-clip-*``), architectures written out below, weights
  from the ``openai/clip-vit-*`` repos.

The OpenAI CLIP weights were released under the MIT licence (github.com/openai/CLIP); the timm
re-uploads are tagged apache-2.0 on the hub, the weights themselves are OpenAI's.

Checkpoint descriptions live here, apart from the encoder code. Nothing is imported from
open_clip or transformers until a model is built (both are slow to import).
"""

from __future__ import annotations

from typing import Any

import torch

from textseg._registry import ModelCfg, Weights, register_model
from textseg.clip.encoders import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Keys some open_clip/OpenAI checkpoints carry that are not parameters of open_clip's CLIP.
_OPEN_CLIP_EXTRA_KEYS = ("attn_mask", "input_resolution", "context_length", "vocab_size")
# Buffers older transformers versions saved and transformers 5 no longer persists.
_HF_EXTRA_KEYS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def convert_open_clip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the non-parameter entries OpenAI / older open_clip checkpoints carry."""
    return {k: v for k, v in state_dict.items() if k not in _OPEN_CLIP_EXTRA_KEYS}


def convert_hf_clip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``position_ids`` buffers that transformers < 4.31 saved in CLIP checkpoints."""
    return {k: v for k, v in state_dict.items() if k not in _HF_EXTRA_KEYS}


def build_open_clip(cfg: ModelCfg) -> Any:
    """An open_clip ``CLIP`` with random weights.

    ``cfg.arch`` holds either ``open_clip_config`` (the name of a config bundled with open_clip,
    e.g. ``"ViT-B-32"``) or ``embed_dim``, ``vision_cfg`` and ``text_cfg`` written out, plus
    ``quick_gelu`` (True for the OpenAI weights).
    """
    import open_clip
    from open_clip.model import CLIP

    arch = cfg.arch
    if "open_clip_config" in arch:
        model_cfg = open_clip.get_model_config(arch["open_clip_config"])
        if model_cfg is None:
            raise ValueError(
                f"{cfg.name}: open_clip has no bundled config {arch['open_clip_config']!r}"
            )
    else:
        model_cfg = {k: arch[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    model_cfg = {k: v for k, v in model_cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg")}
    return CLIP(**model_cfg, quick_gelu=arch.get("quick_gelu", False))


def build_hf_clip(cfg: ModelCfg) -> Any:
    """A transformers ``CLIPModel`` with random weights from ``text_config``,
    ``vision_config`` and ``projection_dim`` in ``cfg.arch``."""
    from transformers import CLIPConfig, CLIPModel

    arch = cfg.arch
    config = CLIPConfig(
        text_config=dict(arch["text_config"]),
        vision_config=dict(arch["vision_config"]),
        projection_dim=arch["projection_dim"],
    )
    return CLIPModel(config)


def _openai_timm(repo: str, filename: str) -> Weights:
    return Weights(
        filename=filename,
        hf_repo=repo,
        hf_files=("open_clip_model.safetensors",),
        license="MIT",
    )


CLIP_VIT_B_32 = _openai_timm("timm/vit_base_patch32_clip_224.openai", "clip-vit-b-32.safetensors")
CLIP_VIT_B_16 = _openai_timm("timm/vit_base_patch16_clip_224.openai", "clip-vit-b-16.safetensors")
CLIP_VIT_L_14 = _openai_timm("timm/vit_large_patch14_clip_224.openai", "clip-vit-l-14.safetensors")
# openai/clip-vit-base-patch32 has model.safetensors only on a conversion PR branch, so the
# main branch's pytorch_model.bin (a plain state dict, read with weights_only=True) is used.
HF_CLIP_VIT_B_32 = Weights(
    filename="hf-clip-vit-b-32.bin",
    hf_repo="openai/clip-vit-base-patch32",
    hf_files=("pytorch_model.bin",),
    license="MIT",
)
HF_CLIP_VIT_L_14 = Weights(
    filename="hf-clip-vit-l-14.safetensors",
    hf_repo="openai/clip-vit-large-patch14",
    hf_files=("model.safetensors",),
    license="MIT",
)

_COMMON: dict[str, Any] = dict(task="clip", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
_OPEN_CLIP: dict[str, Any] = dict(
    _COMMON, backend="open_clip", quick_gelu=True, converter=convert_open_clip_state_dict
)
_HF: dict[str, Any] = dict(_COMMON, backend="transformers", converter=convert_hf_clip_state_dict)

register_model(
    "clip-vit-b-32",
    test_variant="clip-vit-tiny-test",
    weights=CLIP_VIT_B_32,
    input_size=224,
    description="OpenAI CLIP ViT-B/32 (open_clip, 151M)",
    open_clip_config="ViT-B-32",
    **_OPEN_CLIP,
)(build_open_clip)
register_model(
    "clip-vit-b-16",
    test_variant="clip-vit-tiny-test",
    weights=CLIP_VIT_B_16,
    input_size=224,
    description="OpenAI CLIP ViT-B/16 (open_clip, 150M)",
    open_clip_config="ViT-B-16",
    **_OPEN_CLIP,
)(build_open_clip)
register_model(
    "clip-vit-l-14",
    test_variant="clip-vit-tiny-test",
    weights=CLIP_VIT_L_14,
    input_size=224,
    description="OpenAI CLIP ViT-L/14 (open_clip, 428M)",
    open_clip_config="ViT-L-14",
    **_OPEN_CLIP,
)(build_open_clip)

# Tiny variants: real tokenizer and vocabulary (49408 tokens, 77 context), tiny widths; a
# 64x64 input cut into a 4x4 grid of 16-pixel patches. Built in well under a second.
_TINY_TEXT = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)
_TINY_VISION = dict(image_size=64, layers=2, width=32, patch_size=16, head_width=16)
register_model(
    "clip-vit-tiny-test",
    test=True,
    input_size=64,
    description="random-init tiny open_clip ViT CLIP for tests",
    embed_dim=16,
    vision_cfg=_TINY_VISION,
    text_cfg=_TINY_TEXT,
    **_OPEN_CLIP,
)(build_open_clip)

_HF_TEXT_B = dict(
    hidden_size=512,
    intermediate_size=2048,
    num_attention_heads=8,
    num_hidden_layers=12,
    max_position_embeddings=77,
    vocab_size=49408,
)
_HF_TEXT_L = dict(_HF_TEXT_B, hidden_size=768, intermediate_size=3072, num_attention_heads=12)
register_model(
    "hf-clip-vit-b-32",
    test_variant="hf-clip-vit-tiny-test",
    weights=HF_CLIP_VIT_B_32,
    input_size=224,
    description="OpenAI CLIP ViT-B/32 (transformers CLIPModel, 151M)",
    text_config=_HF_TEXT_B,
    projection_dim=512,
    vision_config=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        image_size=224,
        patch_size=32,
    ),
    **_HF,
)(build_hf_clip)
register_model(
    "hf-clip-vit-l-14",
    test_variant="hf-clip-vit-tiny-test",
    weights=HF_CLIP_VIT_L_14,
    input_size=224,
    description="OpenAI CLIP ViT-L/14 (transformers CLIPModel, 428M)",
    text_config=_HF_TEXT_L,
    projection_dim=768,
    vision_config=dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=24,
        image_size=224,
        patch_size=14,
    ),
    **_HF,
)(build_hf_clip)
register_model(
    "hf-clip-vit-tiny-test",
    test=True,
    input_size=64,
    description="random-init tiny transformers CLIPModel for tests",
    text_config=dict(
        hidden_size=32,
        intermediate_size=128,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=77,
        vocab_size=49408,
    ),
    vision_config=dict(
        hidden_size=32,
        intermediate_size=128,
        num_attention_heads=2,
        num_hidden_layers=2,
        image_size=64,
        patch_size=16,
    ),
    projection_dim=16,
    **_HF,
)(build_hf_clip)
