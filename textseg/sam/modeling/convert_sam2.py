"""Official SAM 2 checkpoints (``sam2_hiera_*.pt``, ``sam2.1_hiera_*.pt``) in transformers' layout.

The official ``sam2`` package and transformers' ``Sam2VideoModel`` hold the same tensors under
other names; :func:`official_to_hf_state_dict` renames them (no copies, no reshapes) except for
two layout changes: the four point embeddings (``point_embeddings.0..3``, one ``(1, C)`` each)
become one ``(4, C)`` table, and the random-Fourier matrix of the prompt encoder is also stored
under the model's top-level name (transformers keeps two references to one tensor).

The mapping, official -> transformers:

* image encoder: ``image_encoder.trunk.`` -> ``vision_encoder.backbone.``,
  ``patch_embed.proj`` -> ``patch_embed.projection``, ``norm1/2`` -> ``layer_norm1/2``; the
  neck's ``convs.i.conv.`` -> ``convs.i.``;
* prompt encoder (``sam_prompt_encoder`` -> ``prompt_encoder``): ``mask_downscaling.0/1/3/4/6``
  -> ``mask_embed.conv1``, ``layer_norm1``, ``conv2``, ``layer_norm2``, ``conv3``;
* mask decoder (``sam_mask_decoder`` -> ``mask_decoder``): ``output_upscaling.0/1/3`` ->
  ``upscale_conv1``, ``upscale_layer_norm``, ``upscale_conv2``; ``norm*`` -> ``layer_norm*``;
  attention ``out_proj`` -> ``o_proj``;
* every MLP (``layers.0 .. layers.{d-1}``) -> ``proj_in``, ``layers.0 .. layers.{d-3}``,
  ``proj_out``;
* memory: ``pix_feat_proj`` -> ``feature_projection``, ``out_proj`` -> ``projection``,
  ``fuser`` -> ``memory_fuser`` (``dwconv``, ``pwconv1/2``, ``norm``, ``gamma`` ->
  ``depthwise_conv``, ``pointwise_conv1/2``, ``layer_norm``, ``scale``), the mask down-sampler's
  ``encoder.{3i}``/``encoder.{3i+1}`` -> ``layers.i.conv``/``layers.i.layer_norm`` and its last
  convolution -> ``final_conv``;
* the model's own parameters: ``no_mem_embed``, ``no_mem_pos_enc``, ``no_obj_ptr``,
  ``obj_ptr_proj``, ``obj_ptr_tpos_proj``, ``maskmem_tpos_enc``, ``no_obj_embed_spatial`` ->
  ``no_memory_embedding``, ``no_memory_positional_encoding``, ``no_object_pointer``,
  ``object_pointer_proj``, ``temporal_positional_encoding_projection_layer``,
  ``memory_temporal_positional_encoding``, ``occlusion_spatial_embedding_parameter``.

EdgeTAM's official file (``edgetam.pt``) has the same layout plus, as transformers' own
conversion maps it: the RepViT trunk ``image_encoder.trunk.body.`` ->
``vision_encoder.backbone.timm_model.``; the memory attention's ``linear1/2`` ->
``mlp.up_proj/down_proj``; the spatial perceiver's ``latents`` -> ``latents_1d``,
``attn``/``self_attn`` -> ``cross_attention``/``self_attention`` (``to_q``, ``to_out`` ->
``q_proj``, ``o_proj``; the fused ``to_kv`` split in two halves, ``k_proj`` and ``v_proj``),
``attn.norm_x``, ``attn.norm_latents``, ``self_attn.norm`` -> ``layer_norm_input``,
``layer_norm_latents``, ``layer_norm_self``, ``ff``/``self_ff`` ``.0/.1/.3`` -> ``mlp``/``self_mlp``
``.layer_norm/.up_proj/.down_proj``.

A transformers-layout state dict (``model.safetensors`` of the ``*-hf`` repos, EdgeTAM's
included: its model also has ``spatial_perceiver.*`` keys) passes through
:func:`to_hf_state_dict` unchanged, so one registry converter takes either file; the layouts
are told apart by the official-only prefixes (``image_encoder.trunk.``, ``sam_mask_decoder.``,
``sam_prompt_encoder.``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["is_official_sam2", "official_to_hf_state_dict", "to_hf_state_dict"]

#: Ordered (pattern, replacement) renames applied to every key, after the prefix renames.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.norm(\d?)\.", r".layer_norm\1."),
    (r"\.out_proj\.", ".o_proj."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.o_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.fuser\.", "memory_encoder.memory_fuser."),
    (r"\.dwconv\.", ".depthwise_conv."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"\.gamma$", ".scale"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^memory_attention\.norm\.", "memory_attention.layer_norm."),
)
#: EdgeTAM's official names (see the module docstring), applied after :data:`_RENAMES`.
_EDGETAM_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.backbone\.body\.", "vision_encoder.backbone.timm_model."),
    (r"^(memory_attention\.layers\.\d+)\.linear1\.", r"\1.mlp.up_proj."),
    (r"^(memory_attention\.layers\.\d+)\.linear2\.", r"\1.mlp.down_proj."),
)
#: EdgeTAM's spatial perceiver, official -> transformers (applied instead of _RENAMES).
_PERCEIVER_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^spatial_perceiver\.latents$", "spatial_perceiver.latents_1d"),
    (r"^spatial_perceiver\.norm\.", "spatial_perceiver.layer_norm."),
    (r"\.attn\.norm_x\.", ".layer_norm_input."),
    (r"\.attn\.norm_latents\.", ".layer_norm_latents."),
    (r"\.self_attn\.norm\.", ".layer_norm_self."),
    (r"\.attn\.to_", ".cross_attention.to_"),
    (r"\.self_attn\.to_", ".self_attention.to_"),
    (r"\.to_q\.", ".q_proj."),
    (r"\.to_out\.", ".o_proj."),
    (r"\.self_ff\.0\.", ".self_mlp.layer_norm."),
    (r"\.self_ff\.1\.", ".self_mlp.up_proj."),
    (r"\.self_ff\.3\.", ".self_mlp.down_proj."),
    (r"\.ff\.0\.", ".mlp.layer_norm."),
    (r"\.ff\.1\.", ".mlp.up_proj."),
    (r"\.ff\.3\.", ".mlp.down_proj."),
)
_MLP = re.compile(
    r"^(.*\.(?:mlp|iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head)"
    r"|obj_ptr_proj)\.layers\.(\d+)\.(weight|bias)$"
)
_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(weight|bias)$")
_POINT = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")
_PE = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

#: Keys only the official layout has (a state dict with any of them is converted).
_OFFICIAL_MARKERS = ("image_encoder.trunk.", "sam_mask_decoder.", "sam_prompt_encoder.")


def is_official_sam2(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in the official ``sam2`` layout."""
    return any(k.startswith(_OFFICIAL_MARKERS) for k in state_dict)


def _mlp_depths(keys: list[str]) -> dict[str, int]:
    depths: dict[str, int] = {}
    for key in keys:
        m = _MLP.match(key)
        if m:
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(2)) + 1)
    return depths


def _perceiver_entries(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One official EdgeTAM ``spatial_perceiver.*`` entry in transformers' names (two for a
    fused ``to_kv`` projection: its first half is the keys', the second the values')."""
    for pattern, repl in _PERCEIVER_RENAMES:
        key = re.sub(pattern, repl, key)
    if ".to_kv." in key:
        k, v = torch.chunk(value, 2, dim=0)
        return {key.replace(".to_kv.", ".k_proj."): k, key.replace(".to_kv.", ".v_proj."): v}
    return {key: value}


def official_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official SAM 2 / 2.1 or EdgeTAM state dict to ``Sam2VideoModel``'s /
    ``EdgeTamVideoModel``'s keys.

    Args:
        state_dict: The official checkpoint's ``"model"`` entry (``torch.load(...)["model"]``).

    Returns:
        A new dict over the same tensors (the point embeddings concatenated into one table,
        EdgeTAM's fused key-value projections split).

    Raises:
        ValueError: The point embeddings or the prompt encoder's positional matrix are
            missing (not an official SAM 2 checkpoint).
    """
    keys = list(state_dict)
    edgetam = any(k.startswith("spatial_perceiver.") for k in keys)
    renames = _RENAMES + (_EDGETAM_RENAMES if edgetam else ())
    depths = _mlp_depths(keys)
    downsampler = [int(m.group(1)) for k in keys if (m := _DOWNSAMPLER.match(k))]
    last_conv = max(downsampler) if downsampler else -1
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for key, value in state_dict.items():
        if m := _POINT.match(key):
            points[int(m.group(1))] = value
            continue
        if key.startswith("spatial_perceiver."):
            out.update(_perceiver_entries(key, value))
            continue
        new = key
        if m := _MLP.match(key):
            prefix, index, kind = m.group(1), int(m.group(2)), m.group(3)
            depth = depths[prefix]
            if index == 0:
                part = "proj_in"
            elif index == depth - 1:
                part = "proj_out"
            else:
                part = f"layers.{index - 1}"
            new = f"{prefix}.{part}.{kind}"
        elif m := _DOWNSAMPLER.match(key):
            index, kind = int(m.group(1)), m.group(2)
            if index == last_conv:
                part = "final_conv"
            else:
                part = f"layers.{index // 3}." + ("conv" if index % 3 == 0 else "layer_norm")
            new = f"memory_encoder.mask_downsampler.{part}.{kind}"
        for pattern, repl in renames:
            new = re.sub(pattern, repl, new)
        out[new] = value
    if sorted(points) != list(range(len(points))) or not points or _PE not in state_dict:
        raise ValueError(
            "state dict: expected an official SAM 2 checkpoint with "
            "sam_prompt_encoder.point_embeddings.0..3 and the positional matrix "
            f"{_PE}; got keys like {keys[:3]}"
        )
    out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)])
    pe = out.pop("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
    out["prompt_encoder.shared_embedding.positional_embedding"] = pe
    out["shared_image_embedding.positional_embedding"] = pe
    return out


def to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The registry converter: official layout converted, transformers layout as it is.

    Both SAM 2 and EdgeTAM, either layout (told apart by :func:`is_official_sam2`).
    transformers' ``save_pretrained`` may keep only one of the two names of the prompt
    encoder's positional matrix; the other is filled in from it.
    """
    if is_official_sam2(state_dict):
        return official_to_hf_state_dict(state_dict)
    out = dict(state_dict)
    pair = (
        "shared_image_embedding.positional_embedding",
        "prompt_encoder.shared_embedding.positional_embedding",
    )
    for have, want in (pair, pair[::-1]):
        if have in out and want not in out:
            out[want] = out[have]
    return out
