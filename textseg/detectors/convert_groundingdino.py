"""State-dict conversion between the official Grounding DINO checkpoints and transformers.

The official release (IDEA-Research/GroundingDINO: ``groundingdino_swint_ogc.pth``,
``groundingdino_swinb_cogcoor.pth``) and ``transformers.GroundingDinoForObjectDetection`` hold the
same weights under different names. The differences:

- names: the official ``backbone.0`` (Swin), ``bert``, ``feat_map``, ``input_proj``,
  ``transformer.*`` and ``bbox_embed`` become ``model.backbone.conv_encoder.model.swin``,
  ``model.text_backbone``, ``model.text_projection``, ``model.input_proj_vision``,
  ``model.encoder/decoder.*`` and ``bbox_embed`` (see :func:`_rules`);
- fused projections: the official Swin ``attn.qkv`` and the ``nn.MultiheadAttention``
  ``in_proj_weight/bias`` of the text enhancer and decoder hold query, key and value stacked in
  that order; transformers has three separate linear layers;
- the Swin output norms: official ``norm1..3`` (after stages 1..3, counted from 0) are
  ``hidden_states_norms.stage2..4``;
- only in the official file: buffers and unused weights (Swin ``relative_position_index``, BERT
  ``position_ids``/``token_type_ids``, the BERT pooler); they are dropped;
- only in transformers: the final Swin ``layernorm``, which the backbone never applies to the
  feature maps it returns; :func:`official_to_hf_state_dict` fills it with its initial value
  (ones, zeros).

:func:`fit_hf_state_dict` further adapts a transformers checkpoint from the Hub to the installed
transformers: older releases named the Swin layers differently and saved tied weights once.

Both converters are strict: a key that matches no rule is an error, never silently dropped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping

import torch

__all__ = ["fit_hf_state_dict", "hf_to_official_state_dict", "official_to_hf_state_dict"]

_SWIN_O = "backbone.0."
_SWIN_H = "model.backbone.conv_encoder.model."
_W = "{w}"  # weight | bias

#: Official keys with no place in transformers (buffers the model recomputes, unused weights).
_OFFICIAL_DROPPED = (
    re.compile(r".*\.relative_position_index"),
    re.compile(r"bert\.embeddings\.(position_ids|token_type_ids)"),
    re.compile(r"bert\.pooler\..*"),
)
#: transformers keys with no place in the official checkpoint (unused by the backbone outputs).
_HF_ONLY = re.compile(re.escape(_SWIN_H) + r"swin\.layernorm\.(weight|bias)")


def _rules() -> Iterator[tuple[str, str]]:
    """(official, transformers) key templates; ``{i}``, ``{j}``: indices, ``{w}``: weight|bias,
    ``{rest}``: any suffix."""
    o, h = _SWIN_O, _SWIN_H
    yield f"{o}patch_embed.proj.{_W}", f"{h}swin.embeddings.patch_embeddings.projection.{_W}"
    yield f"{o}patch_embed.norm.{_W}", f"{h}swin.embeddings.norm.{_W}"
    ob, hb = f"{o}layers.{{i}}.blocks.{{j}}.", f"{h}swin.encoder.layers.{{i}}.blocks.{{j}}."
    for a, b in (
        (f"norm1.{_W}", f"layernorm_before.{_W}"),
        (f"norm2.{_W}", f"layernorm_after.{_W}"),
        (f"attn.proj.{_W}", f"attention.o_proj.{_W}"),
        (
            "attn.relative_position_bias_table",
            "attention.relative_position_bias.relative_position_bias_table",
        ),
        (f"mlp.fc1.{_W}", f"mlp.fc1.{_W}"),
        (f"mlp.fc2.{_W}", f"mlp.fc2.{_W}"),
    ):
        yield ob + a, hb + b
    yield (
        f"{o}layers.{{i}}.downsample.reduction.weight",
        (f"{h}swin.encoder.layers.{{i}}.downsample.reduction.weight"),
    )
    yield (
        f"{o}layers.{{i}}.downsample.norm.{_W}",
        f"{h}swin.encoder.layers.{{i}}.downsample.norm.{_W}",
    )

    yield f"input_proj.{{i}}.{{j}}.{_W}", f"model.input_proj_vision.{{i}}.{{j}}.{_W}"
    yield f"feat_map.{_W}", f"model.text_projection.{_W}"
    yield "bert.{rest}", "model.text_backbone.{rest}"
    yield "transformer.level_embed", "model.level_embed"
    yield "transformer.tgt_embed.weight", "model.query_position_embeddings.weight"
    yield f"transformer.enc_output.{_W}", f"model.enc_output.{_W}"
    yield f"transformer.enc_output_norm.{_W}", f"model.enc_output_norm.{_W}"
    yield (
        f"transformer.enc_out_bbox_embed.layers.{{i}}.{_W}",
        f"model.encoder_output_bbox_embed.layers.{{i}}.{_W}",
    )
    yield f"transformer.decoder.norm.{_W}", f"model.decoder.layer_norm.{_W}"
    yield (
        f"transformer.decoder.ref_point_head.layers.{{i}}.{_W}",
        f"model.decoder.reference_points_head.layers.{{i}}.{_W}",
    )
    yield (
        f"transformer.decoder.bbox_embed.{{i}}.layers.{{j}}.{_W}",
        f"model.decoder.bbox_embed.{{i}}.layers.{{j}}.{_W}",
    )
    yield f"bbox_embed.{{i}}.layers.{{j}}.{_W}", f"bbox_embed.{{i}}.layers.{{j}}.{_W}"

    oe, he = "transformer.encoder.layers.{i}.", "model.encoder.layers.{i}.deformable_layer."
    for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
        yield f"{oe}self_attn.{name}.{_W}", f"{he}self_attn.{name}.{_W}"
    for a, b in (
        ("norm1", "self_attn_layer_norm"),
        ("linear1", "fc1"),
        ("linear2", "fc2"),
        ("norm2", "final_layer_norm"),
    ):
        yield f"{oe}{a}.{_W}", f"{he}{b}.{_W}"

    ot, ht = "transformer.encoder.text_layers.{i}.", "model.encoder.layers.{i}.text_enhancer_layer."
    for a, b in (
        ("self_attn.out_proj", "self_attn.out_proj"),
        ("linear1", "fc1"),
        ("linear2", "fc2"),
        ("norm1", "layer_norm_before"),
        ("norm2", "layer_norm_after"),
    ):
        yield f"{ot}{a}.{_W}", f"{ht}{b}.{_W}"

    of, hf = "transformer.encoder.fusion_layers.{i}.", "model.encoder.layers.{i}.fusion_layer."
    yield f"{of}gamma_v", f"{hf}vision_param"
    yield f"{of}gamma_l", f"{hf}text_param"
    for a, b in (
        ("layer_norm_v", "layer_norm_vision"),
        ("layer_norm_l", "layer_norm_text"),
        ("attn.v_proj", "attn.vision_proj"),
        ("attn.l_proj", "attn.text_proj"),
        ("attn.values_v_proj", "attn.values_vision_proj"),
        ("attn.values_l_proj", "attn.values_text_proj"),
        ("attn.out_v_proj", "attn.out_vision_proj"),
        ("attn.out_l_proj", "attn.out_text_proj"),
    ):
        yield f"{of}{a}.{_W}", f"{hf}{b}.{_W}"

    od, hd = "transformer.decoder.layers.{i}.", "model.decoder.layers.{i}."
    for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
        yield f"{od}cross_attn.{name}.{_W}", f"{hd}encoder_attn.{name}.{_W}"
    for a, b in (
        ("norm1", "encoder_attn_layer_norm"),
        ("ca_text.out_proj", "encoder_attn_text.out_proj"),
        ("catext_norm", "encoder_attn_text_layer_norm"),
        ("self_attn.out_proj", "self_attn.out_proj"),
        ("norm2", "self_attn_layer_norm"),
        ("linear1", "fc1"),
        ("linear2", "fc2"),
        ("norm3", "final_layer_norm"),
    ):
        yield f"{od}{a}.{_W}", f"{hd}{b}.{_W}"


def _fused_rules() -> Iterator[tuple[str, tuple[str, str, str]]]:
    """(official fused key, transformers query/key/value keys); stacked q, k, v along dim 0."""
    yield (
        f"{_SWIN_O}layers.{{i}}.blocks.{{j}}.attn.qkv.{_W}",
        tuple(
            f"{_SWIN_H}swin.encoder.layers.{{i}}.blocks.{{j}}.attention.{p}_proj.{_W}"
            for p in "qkv"
        ),
    )  # type: ignore[misc]
    for official, hf in (
        (
            "transformer.encoder.text_layers.{i}.self_attn.in_proj_{w}",
            "model.encoder.layers.{i}.text_enhancer_layer.self_attn.{p}.{w}",
        ),
        (
            "transformer.decoder.layers.{i}.self_attn.in_proj_{w}",
            "model.decoder.layers.{i}.self_attn.{p}.{w}",
        ),
        (
            "transformer.decoder.layers.{i}.ca_text.in_proj_{w}",
            "model.decoder.layers.{i}.encoder_attn_text.{p}.{w}",
        ),
    ):
        yield (
            official,
            tuple(  # type: ignore[misc]
                hf.replace("{p}", p) for p in ("query", "key", "value")
            ),
        )


_GROUP = {
    "{i}": r"(?P<i>\d+)",
    "{j}": r"(?P<j>\d+)",
    "{w}": r"(?P<w>weight|bias)",
    "{rest}": r"(?P<rest>.+)",
}


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for field, group in _GROUP.items():
        pattern = pattern.replace(re.escape(field), group)
    return re.compile(pattern)


def _render(template: str, groups: Mapping[str, str | None]) -> str:
    out = template
    for key, value in groups.items():
        if value is not None:
            out = out.replace("{" + key + "}", value)
    return out


class _Table:
    """The rules compiled once, for both directions."""

    def __init__(self) -> None:
        rules = list(_rules())
        self.to_hf = [(_compile(o), h) for o, h in rules]
        self.to_official = [(_compile(h), o) for o, h in rules]
        fused = list(_fused_rules())
        self.fused_to_hf = [(_compile(o), hs) for o, hs in fused]
        self.fused_to_official = [(_compile(hs[0]), o, hs) for o, hs in fused]
        self.fused_rest = [_compile(h) for _, hs in fused for h in hs[1:]]
        self.swin_norm_o = re.compile(re.escape(_SWIN_O) + r"norm(?P<n>\d+)\.(?P<w>weight|bias)")
        self.swin_norm_h = re.compile(
            re.escape(_SWIN_H) + r"hidden_states_norms\.stage(?P<n>\d+)\.(?P<w>weight|bias)"
        )


@functools.lru_cache(maxsize=1)
def _table() -> _Table:
    return _Table()  # compiled on first use, not at import


def _split3(value: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if value.shape[0] % 3:
        raise ValueError(
            f"{key}: expected a fused q/k/v tensor with 3*d rows, got {tuple(value.shape)}"
        )
    q, k, v = value.chunk(3, dim=0)
    return q.clone(), k.clone(), v.clone()


def official_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official Grounding DINO state dict to ``GroundingDinoForObjectDetection``'s.

    Args:
        state_dict: The official checkpoint's ``"model"`` dict (a ``"module."`` prefix, as
            written by distributed training, is removed).

    Returns:
        A state dict that loads strictly into the transformers model of the same size.

    Raises:
        ValueError: A key matches no rule (the message lists them), or a fused tensor has a
            shape that does not split into query, key and value.
    """
    table = _table()
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    last_norm: torch.Tensor | None = None
    for raw_key, value in state_dict.items():
        key = raw_key.removeprefix("module.")
        if any(p.fullmatch(key) for p in _OFFICIAL_DROPPED):
            continue
        match = table.swin_norm_o.fullmatch(key)
        if match is not None:
            stage = int(match["n"]) + 1
            out[f"{_SWIN_H}hidden_states_norms.stage{stage}.{match['w']}"] = value
            if match["w"] == "weight" and (last_norm is None or value.numel() >= last_norm.numel()):
                last_norm = value
            continue
        for pattern, targets in table.fused_to_hf:
            match = pattern.fullmatch(key)
            if match is not None:
                for target, part in zip(targets, _split3(value, key)):
                    out[_render(target, match.groupdict())] = part
                break
        else:
            for pattern, target in table.to_hf:
                match = pattern.fullmatch(key)
                if match is not None:
                    out[_render(target, match.groupdict())] = value
                    break
            else:
                unknown.append(key)
    if unknown:
        raise ValueError(
            f"official_to_hf_state_dict: {len(unknown)} keys match no rule: {_preview(unknown)}; "
            f"is this an official Grounding DINO (Swin + BERT) checkpoint?"
        )
    if last_norm is not None:
        # The final Swin layernorm exists only in transformers and never touches the returned
        # feature maps; give it the value it is initialised with.
        out[f"{_SWIN_H}swin.layernorm.weight"] = torch.ones_like(last_norm)
        out[f"{_SWIN_H}swin.layernorm.bias"] = torch.zeros_like(last_norm)
    return out


def hf_to_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`official_to_hf_state_dict` (without the dropped buffers/pooler).

    Raises:
        ValueError: A key matches no rule, or one of the query/key/value triple is missing.
    """
    table = _table()
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if _HF_ONLY.fullmatch(key):
            continue
        match = table.swin_norm_h.fullmatch(key)
        if match is not None:
            out[f"{_SWIN_O}norm{int(match['n']) - 1}.{match['w']}"] = value
            continue
        if any(p.fullmatch(key) for p in table.fused_rest):
            continue  # a key or value half, consumed with its query below
        fused = False
        for first, official, parts in table.fused_to_official:
            match = first.fullmatch(key)
            if match is not None:
                groups = match.groupdict()
                names = [_render(p, groups) for p in parts]
                missing = [n for n in names if n not in state_dict]
                if missing:
                    raise ValueError(f"hf_to_official_state_dict: {key} present but not {missing}")
                out[_render(official, groups)] = torch.cat([state_dict[n] for n in names], dim=0)
                fused = True
                break
        if fused:
            continue
        for pattern, target in table.to_official:
            match = pattern.fullmatch(key)
            if match is not None:
                out[_render(target, match.groupdict())] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"hf_to_official_state_dict: {len(unknown)} keys match no rule: {_preview(unknown)}"
        )
    return out


# ---------------------------------------------------------------------- Hub checkpoints
#: Swin names of transformers < 5 (as in the Hub's model.safetensors) -> current names, applied
#: inside the backbone; longer patterns first so that "attention.output.dense" is not
#: mistaken for "output.dense".
_LEGACY_SWIN = (
    (
        "attention.self.relative_position_bias_table",
        "attention.relative_position_bias.relative_position_bias_table",
    ),
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_TIED_BBOX = re.compile(r"(model\.decoder\.)?bbox_embed\.(?P<i>\d+)\.(?P<rest>.+)")


def _upgrade_key(key: str) -> str:
    if not key.startswith(_SWIN_H):
        return key
    rest = key[len(_SWIN_H) :]
    if rest.startswith(("embeddings.", "encoder.", "layernorm.")):
        rest = "swin." + rest
    for old, new in _LEGACY_SWIN:
        if old in rest:
            rest = rest.replace(old, new)
            break
    return _SWIN_H + rest


def fit_hf_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Adapt a transformers Grounding DINO checkpoint to the installed model's keys.

    - legacy Swin names (transformers < 5) are renamed;
    - keys of buffers the model does not save (``relative_position_index``, ``position_ids``)
      are dropped;
    - tied box heads (``bbox_embed.N`` and ``model.decoder.bbox_embed.N`` share one module when
      ``decoder_bbox_embed_share``) saved once are copied to every name the model expects;
    - a missing final Swin ``layernorm`` (unused by the backbone outputs) takes the model's value.

    Everything else is left for :func:`textseg._hub.load_strict` to check.
    """
    expected = model.state_dict()
    non_persistent = {name for name, _ in model.named_buffers()} - set(expected)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _upgrade_key(key)
        if new in non_persistent or new.endswith(".relative_position_index"):
            continue
        out[new] = value
    # Tied box heads: fill each missing name from a present member of its group. The group is
    # every bbox_embed.* when the decoder shares one head, else bbox_embed.i with its decoder copy.
    shared = bool(getattr(getattr(model, "config", None), "decoder_bbox_embed_share", False))
    groups: dict[str, list[str]] = {}
    for key in expected:
        match = _TIED_BBOX.fullmatch(key)
        if match is not None:
            group = match["rest"] if shared else f"{match['i']}.{match['rest']}"
            groups.setdefault(group, []).append(key)
    for members in groups.values():
        present = [k for k in members if k in out]
        if present:
            for k in members:
                out.setdefault(k, out[present[0]])
    for key in (f"{_SWIN_H}swin.layernorm.weight", f"{_SWIN_H}swin.layernorm.bias"):
        if key in expected and key not in out:
            out[key] = expected[key].clone()
    return out


def _preview(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")
