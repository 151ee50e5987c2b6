"""State-dict converters between segment_anything ``Sam`` (ViT) and transformers ``SamModel``.

The two implementations hold the same weights under different names; tensors are passed through
unchanged (no copies, no reshapes). The mapping, segment_anything -> transformers:

* image encoder: ``image_encoder.`` -> ``vision_encoder.``, ``blocks.i`` -> ``layers.i``,
  ``norm1/2`` -> ``layer_norm1/2``, ``patch_embed.proj`` -> ``patch_embed.projection``, the neck
  ``Sequential`` (``neck.0..3``) -> ``neck.conv1``, ``layer_norm1``, ``conv2``, ``layer_norm2``;
  ``qkv``, ``proj``, ``rel_pos_h/w``, ``mlp.lin1/2`` and ``pos_embed`` keep their names;
* prompt encoder: ``point_embeddings.i`` -> ``point_embed.i``, ``mask_downscaling.0/1/3/4/6`` ->
  ``mask_embed.conv1``, ``layer_norm1``, ``conv2``, ``layer_norm2``, ``conv3``; the random-Fourier
  matrix ``pe_layer.positional_encoding_gaussian_matrix`` -> ``shared_image_embedding.
  positional_embedding`` and its tied copy ``prompt_encoder.shared_embedding.
  positional_embedding`` (one tensor, two keys);
* mask decoder: ``norm1..4`` -> ``layer_norm1..4``, ``norm_final_attn`` ->
  ``layer_norm_final_attn``, ``output_upscaling.0/1/3`` -> ``upscale_conv1``,
  ``upscale_layer_norm``, ``upscale_conv2``, and the MLP heads (hypernetworks, IoU head)
  ``layers.0 .. layers.{d-1}`` -> ``proj_in``, ``layers.0 .. layers.{d-3}``, ``proj_out``.

MobileSAM's TinyViT encoder has no transformers counterpart and is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import torch

__all__ = [
    "HF_PE_KEYS",
    "SAM_PE_KEY",
    "fill_tied_hf_keys",
    "hf_to_sam_state_dict",
    "sam_to_hf_state_dict",
]

#: The tied pair of ``SamModel``: one parameter reachable under both names.
HF_PE_KEYS = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)
SAM_PE_KEY = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

#: Constants some segment_anything checkpoints carry; ``SamModel`` has no place for them.
_SAM_CONSTANTS = {
    "pixel_mean": (123.675, 116.28, 103.53),
    "pixel_std": (58.395, 57.12, 57.375),
}

_ATTENTIONS = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _rule_templates() -> Iterator[tuple[str, str]]:
    """(segment_anything, transformers) key templates; ``{i}`` an index, ``{w}`` weight|bias."""
    enc, vis = "image_encoder", "vision_encoder"
    yield f"{enc}.pos_embed", f"{vis}.pos_embed"
    yield f"{enc}.patch_embed.proj.{{w}}", f"{vis}.patch_embed.projection.{{w}}"
    block, layer = f"{enc}.blocks.{{i}}", f"{vis}.layers.{{i}}"
    yield f"{block}.norm1.{{w}}", f"{layer}.layer_norm1.{{w}}"
    yield f"{block}.norm2.{{w}}", f"{layer}.layer_norm2.{{w}}"
    for name in ("attn.qkv", "attn.proj", "mlp.lin1", "mlp.lin2"):
        yield f"{block}.{name}.{{w}}", f"{layer}.{name}.{{w}}"
    for name in ("attn.rel_pos_h", "attn.rel_pos_w"):
        yield f"{block}.{name}", f"{layer}.{name}"
    yield f"{enc}.neck.0.weight", f"{vis}.neck.conv1.weight"
    yield f"{enc}.neck.1.{{w}}", f"{vis}.neck.layer_norm1.{{w}}"
    yield f"{enc}.neck.2.weight", f"{vis}.neck.conv2.weight"
    yield f"{enc}.neck.3.{{w}}", f"{vis}.neck.layer_norm2.{{w}}"

    pe = "prompt_encoder"
    yield f"{pe}.point_embeddings.{{i}}.weight", f"{pe}.point_embed.{{i}}.weight"
    for name in ("not_a_point_embed", "no_mask_embed"):
        yield f"{pe}.{name}.weight", f"{pe}.{name}.weight"
    for index, name in (
        (0, "conv1"),
        (1, "layer_norm1"),
        (3, "conv2"),
        (4, "layer_norm2"),
        (6, "conv3"),
    ):
        yield f"{pe}.mask_downscaling.{index}.{{w}}", f"{pe}.mask_embed.{name}.{{w}}"

    md = "mask_decoder"
    for name in ("iou_token", "mask_tokens"):
        yield f"{md}.{name}.weight", f"{md}.{name}.weight"
    tl = f"{md}.transformer.layers.{{i}}"
    for attn in _ATTENTIONS:
        for proj in _PROJECTIONS:
            yield f"{tl}.{attn}.{proj}.{{w}}", f"{tl}.{attn}.{proj}.{{w}}"
    for n in (1, 2, 3, 4):
        yield f"{tl}.norm{n}.{{w}}", f"{tl}.layer_norm{n}.{{w}}"
    for name in ("mlp.lin1", "mlp.lin2"):
        yield f"{tl}.{name}.{{w}}", f"{tl}.{name}.{{w}}"
    final = f"{md}.transformer.final_attn_token_to_image"
    for proj in _PROJECTIONS:
        yield f"{final}.{proj}.{{w}}", f"{final}.{proj}.{{w}}"
    yield f"{md}.transformer.norm_final_attn.{{w}}", f"{md}.transformer.layer_norm_final_attn.{{w}}"
    for index, name in ((0, "upscale_conv1"), (1, "upscale_layer_norm"), (3, "upscale_conv2")):
        yield f"{md}.output_upscaling.{index}.{{w}}", f"{md}.{name}.{{w}}"


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    pattern = pattern.replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{w\}", r"(?P<w>weight|bias)")
    return re.compile(pattern)


_RULES = tuple(_rule_templates())
_SAM_TO_HF = tuple((_compile(sam), hf) for sam, hf in _RULES)
_HF_TO_SAM = tuple((_compile(hf), sam) for sam, hf in _RULES)

# MLP heads: segment_anything keeps ``layers.0 .. layers.{d-1}``, transformers names the first
# and last ``proj_in`` / ``proj_out``; which index is last depends on the depth in the dict.
_SAM_MLP = re.compile(
    r"(?P<head>mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))"
    r"\.layers\.(?P<j>\d+)\.(?P<w>weight|bias)"
)
_HF_MLP = re.compile(
    r"(?P<head>mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))"
    r"\.(?:(?P<end>proj_in|proj_out)|layers\.(?P<k>\d+))\.(?P<w>weight|bias)"
)


def _map_key(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, target in rules:
        match = pattern.fullmatch(key)
        if match is not None:
            return target.format(**match.groupdict())
    return None


def _unknown(key: str, direction: str) -> ValueError:
    if direction == "sam_to_hf":
        expected = (
            "segment_anything Sam (ViT encoder) keys, e.g. 'image_encoder.blocks.0.attn.qkv.weight'"
        )
        if _map_key(key, _HF_TO_SAM) is not None or key in HF_PE_KEYS or _HF_MLP.fullmatch(key):
            hint = "; this is a transformers SamModel key: use hf_to_sam_state_dict"
        elif key.startswith("image_encoder.") and not key.startswith("image_encoder.blocks."):
            hint = "; MobileSAM's TinyViT encoder has no transformers SamModel counterpart"
        else:
            hint = ""
    else:
        expected = "transformers SamModel keys, e.g. 'vision_encoder.layers.0.attn.qkv.weight'"
        if _map_key(key, _SAM_TO_HF) is not None or key == SAM_PE_KEY or _SAM_MLP.fullmatch(key):
            hint = "; this is a segment_anything Sam key: use sam_to_hf_state_dict"
        else:
            hint = ""
    return ValueError(f"{direction}_state_dict: unknown key {key!r}; expected {expected}{hint}")


def _put(out: dict[str, torch.Tensor], key: str, value: torch.Tensor, source: str) -> None:
    if key in out:
        raise ValueError(f"state dict maps two keys to {key!r} (the second is {source!r})")
    out[key] = value


def _check_constant(key: str, value: torch.Tensor) -> None:
    expected = torch.tensor(_SAM_CONSTANTS[key], dtype=torch.float64)
    got = value.detach().to("cpu", torch.float64).flatten()
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-3):
        raise ValueError(
            f"sam_to_hf_state_dict: {key!r} is {got.tolist()}, not SAM's {expected.tolist()}; "
            f"a transformers SamModel has no {key} parameter, so this checkpoint cannot be "
            f"converted without changing its pre-processing"
        )


def sam_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """segment_anything ``Sam`` (ViT encoder) keys -> transformers ``SamModel`` keys.

    Args:
        state_dict: A ``Sam`` state dict (e.g. ``sam_vit_b_01ec64.pth``). Constant
            ``pixel_mean`` / ``pixel_std`` entries, if present, must hold SAM's defaults and
            are dropped.

    Returns:
        A new dict holding the same tensor objects under ``SamModel`` names, in input order.
        The positional-encoding matrix appears under both tied keys (:data:`HF_PE_KEYS`),
        like ``SamModel().state_dict()``.

    Raises:
        ValueError: A key is not a ``Sam`` ViT key (the message names it), or an MLP head has
            fewer than two layers.
    """
    depths: dict[str, int] = {}
    for key in state_dict:
        match = _SAM_MLP.fullmatch(key)
        if match is not None:
            head = match["head"]
            depths[head] = max(depths.get(head, 0), int(match["j"]) + 1)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in _SAM_CONSTANTS:
            _check_constant(key, value)
            continue
        if key == SAM_PE_KEY:
            for hf_key in HF_PE_KEYS:
                _put(out, hf_key, value, key)
            continue
        match = _SAM_MLP.fullmatch(key)
        if match is not None:
            head, j, depth = match["head"], int(match["j"]), depths[match["head"]]
            if depth < 2:
                raise ValueError(
                    f"sam_to_hf_state_dict: MLP head {head!r} has {depth} layer; a transformers "
                    f"SamModel head needs at least 2 (proj_in and proj_out)"
                )
            if j == 0:
                name = "proj_in"
            elif j == depth - 1:
                name = "proj_out"
            else:
                name = f"layers.{j - 1}"
            _put(out, f"{head}.{name}.{match['w']}", value, key)
            continue
        target = _map_key(key, _SAM_TO_HF)
        if target is None:
            raise _unknown(key, "sam_to_hf")
        _put(out, target, value, key)
    return out


def hf_to_sam_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``SamModel`` keys -> segment_anything ``Sam`` (ViT encoder) keys.

    Args:
        state_dict: A ``SamModel`` state dict or a published ``model.safetensors``; either or
            both of the tied positional-encoding keys (:data:`HF_PE_KEYS`) may be present.

    Returns:
        A new dict holding the same tensor objects under ``Sam`` names, in input order.

    Raises:
        ValueError: A key is not a ``SamModel`` key (the message names it), or the two tied
            positional-encoding keys hold different values.
    """
    middle: dict[str, int] = {}
    for key in state_dict:
        match = _HF_MLP.fullmatch(key)
        if match is not None and match["k"] is not None:
            head = match["head"]
            middle[head] = max(middle.get(head, 0), int(match["k"]) + 1)
    state_dict = fill_tied_hf_keys(state_dict)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in HF_PE_KEYS:
            if key == HF_PE_KEYS[0]:
                _put(out, SAM_PE_KEY, value, key)
            continue
        match = _HF_MLP.fullmatch(key)
        if match is not None:
            head = match["head"]
            if match["end"] == "proj_in":
                j = 0
            elif match["end"] == "proj_out":
                j = middle.get(head, 0) + 1
            else:
                j = int(match["k"]) + 1
            _put(out, f"{head}.layers.{j}.{match['w']}", value, key)
            continue
        target = _map_key(key, _HF_TO_SAM)
        if target is None:
            raise _unknown(key, "hf_to_sam")
        _put(out, target, value, key)
    return out


def fill_tied_hf_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Complete the tied positional-encoding pair of a ``SamModel`` state dict.

    ``SamModel`` reaches one parameter under two names (:data:`HF_PE_KEYS`), and its
    ``state_dict()`` lists both, but files written with tied weights removed (safetensors,
    ``save_pretrained``) hold only one. Use as ``convert_state_dict`` of the ``hf-sam-*``
    registry entries so that strict loading sees every key.

    Returns:
        A new dict: the input plus the missing twin (the same tensor object). Unchanged when
        neither key is present (strict loading then reports it missing).

    Raises:
        ValueError: Both keys are present with different values.
    """
    out = dict(state_dict)
    present = [key for key in HF_PE_KEYS if key in out]
    if len(present) == 1:
        twin = HF_PE_KEYS[1] if present[0] == HF_PE_KEYS[0] else HF_PE_KEYS[0]
        out[twin] = out[present[0]]
    elif len(present) == 2:
        a, b = (out[key] for key in HF_PE_KEYS)
        if a.shape != b.shape or not torch.equal(a, b):
            raise ValueError(
                f"the tied keys {HF_PE_KEYS[0]!r} and {HF_PE_KEYS[1]!r} hold different values; "
                f"SamModel ties them to one parameter, so the checkpoint is inconsistent"
            )
    return out
