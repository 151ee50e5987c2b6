"""HQ-SAM (SAM-HQ) through transformers ``SamHQModel``: builder and the official-layout converter.

HQ-SAM keeps SAM's ViT encoder, prompt encoder and two-way decoder and adds a high-quality output
token, its MLP, and a fusion of the first global-attention block's ViT features with the image
embedding ("HQ features"). The architecture is built in code from the sizes in ``cfg.arch``
(the same keys as the ``SamModel`` entries, plus ``decoder_layer_norm_eps``); no ``config.json``
is read.

Two checkpoint layouts exist:

- the official ``segment-anything-hq`` files (``lkeab/hq-sam``: ``sam_hq_vit_{b,l,h}.pth``), in
  segment_anything's key names plus ``hf_token``, ``hf_mlp``, ``compress_vit_feat``,
  ``embedding_encoder`` and ``embedding_maskfeature``: :func:`sam_hq_to_hf_state_dict` renames
  them (tensors pass through unchanged);
- the transformers ports (``syscv-community/sam-hq-vit-{base,large,huge}``), loaded as they are.

Note:
    segment_anything(-hq) uses PyTorch's default LayerNorm eps (1e-5) in the decoder's two-way
    blocks, the transformers configs 1e-6. Entries that load the official files build the
    decoder with 1e-5 (``decoder_layer_norm_eps``), so they give the official masks to float
    rounding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from textseg._registry import ModelCfg
from textseg.sam.modeling.convert import fill_tied_hf_keys, sam_to_hf_state_dict
from textseg.sam.modeling.hf import hf_sam_config

__all__ = [
    "build_hf_sam_hq",
    "hf_sam_hq_config",
    "load_sam_hq_state_dict",
    "sam_hq_to_hf_state_dict",
]

_HQ_SEQUENTIALS = {
    "compress_vit_feat": ("compress_vit_conv1", "compress_vit_norm", None, "compress_vit_conv2"),
    "embedding_encoder": ("encoder_conv1", "encoder_norm", None, "encoder_conv2"),
    "embedding_maskfeature": ("mask_conv1", "mask_norm", None, "mask_conv2"),
}
_HQ_SEQ = re.compile(
    r"mask_decoder\.(?P<seq>compress_vit_feat|embedding_encoder|embedding_maskfeature)"
    r"\.(?P<i>\d+)\.(?P<w>weight|bias)"
)
_HQ_MLP = re.compile(r"mask_decoder\.hf_mlp\.layers\.(?P<j>\d+)\.(?P<w>weight|bias)")
_HQ_TOKEN = "mask_decoder.hf_token.weight"


def _sub_config(config: Any, cls: type) -> dict[str, Any]:
    """The fields of a ``Sam*Config`` that the matching ``SamHQ*Config`` has."""
    wanted = set(cls().to_dict()) - {"model_type", "transformers_version", "architectures"}
    return {k: v for k, v in config.to_dict().items() if k in wanted}


def hf_sam_hq_config(cfg: ModelCfg) -> Any:
    """The ``transformers.SamHQConfig`` of a registry entry.

    Args:
        cfg: As for :func:`textseg.sam.modeling.hf.hf_sam_config` (``encoder_embed_dim``,
            ``encoder_depth``, ``encoder_num_heads``, ``encoder_global_attn_indexes`` and the
            optional decoder sizes), plus ``decoder_layer_norm_eps`` (default 1e-6, the
            transformers configs'; 1e-5 for the official layout).

    Raises:
        ValueError: A required size is missing or the sizes do not fit together.
    """
    from transformers import SamHQConfig
    from transformers.models.sam_hq.configuration_sam_hq import (
        SamHQMaskDecoderConfig,
        SamHQPromptEncoderConfig,
        SamHQVisionConfig,
    )

    base = hf_sam_config(cfg)
    decoder = _sub_config(base.mask_decoder_config, SamHQMaskDecoderConfig)
    decoder["vit_dim"] = int(cfg.arch["encoder_embed_dim"])
    decoder["layer_norm_eps"] = float(cfg.arch.get("decoder_layer_norm_eps", 1e-6))
    return SamHQConfig(
        vision_config=_sub_config(base.vision_config, SamHQVisionConfig),
        prompt_encoder_config=_sub_config(base.prompt_encoder_config, SamHQPromptEncoderConfig),
        mask_decoder_config=decoder,
    )


def build_hf_sam_hq(cfg: ModelCfg) -> Any:
    """A random-init ``transformers.SamHQModel`` for ``cfg``, in eval mode, on CPU.

    Raises:
        ValueError: ``cfg.arch`` lacks an encoder size or the sizes do not fit together.
    """
    from transformers import SamHQModel

    return SamHQModel(hf_sam_hq_config(cfg)).eval()


def sam_hq_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``segment_anything_hq`` (ViT) keys -> transformers ``SamHQModel`` keys.

    SAM's own keys go through :func:`~textseg.sam.modeling.convert.sam_to_hf_state_dict`; the
    HQ parts are renamed: ``hf_token`` -> ``hq_token``, ``hf_mlp.layers.0/1/2`` ->
    ``hq_mask_mlp.proj_in/layers.0/proj_out``, and the three ``Sequential`` fusions (indices
    0, 1, 3: conv, LayerNorm2d, conv) -> ``compress_vit_*``, ``encoder_*``, ``mask_*``.

    Returns:
        A new dict holding the same tensor objects, with both tied positional-encoding keys.

    Raises:
        ValueError: A key is neither SAM's nor HQ-SAM's (the message names it).
    """
    sam_part: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    depth = 1 + max(
        (int(m["j"]) for k in state_dict if (m := _HQ_MLP.fullmatch(k)) is not None), default=0
    )
    for key, value in state_dict.items():
        if key == _HQ_TOKEN:
            out["mask_decoder.hq_token.weight"] = value
            continue
        match = _HQ_MLP.fullmatch(key)
        if match is not None:
            j = int(match["j"])
            name = "proj_in" if j == 0 else "proj_out" if j == depth - 1 else f"layers.{j - 1}"
            out[f"mask_decoder.hq_mask_mlp.{name}.{match['w']}"] = value
            continue
        match = _HQ_SEQ.fullmatch(key)
        if match is not None:
            names = _HQ_SEQUENTIALS[match["seq"]]
            index = int(match["i"])
            target = names[index] if index < len(names) else None
            if target is None:
                raise ValueError(
                    f"sam_hq_to_hf_state_dict: unknown key {key!r}; {match['seq']} has "
                    f"parameters at indices 0, 1 and 3 only"
                )
            out[f"mask_decoder.{target}.{match['w']}"] = value
            continue
        sam_part[key] = value
    converted = sam_to_hf_state_dict(sam_part)
    clash = set(converted) & set(out)
    if clash:
        raise ValueError(f"sam_hq_to_hf_state_dict: keys mapped twice: {sorted(clash)}")
    return {**converted, **out}


def load_sam_hq_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The registry converter of the transformers-layout entries: fill the tied twin of the
    positional encoding (``save_pretrained`` keeps one of the two names)."""
    return fill_tied_hf_keys(state_dict)
