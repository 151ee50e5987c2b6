"""Official <-> transformers Grounding DINO state dicts, on the tiny random model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from textseg._hub import StateDictError, create_model
from textseg.detectors import GroundingDinoDetector
from textseg.detectors.convert_groundingdino import (
    fit_hf_state_dict,
    hf_to_official_state_dict,
    official_to_hf_state_dict,
)
from textseg.vocab import Vocabulary


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("grounding-dino-tiny-test", task="detector")


@pytest.fixture(scope="module")
def hf_sd(net) -> dict[str, torch.Tensor]:
    return net.state_dict()


def test_hf_official_hf_is_identical(hf_sd) -> None:
    official = hf_to_official_state_dict(hf_sd)
    back = official_to_hf_state_dict(official)
    assert set(back) == set(hf_sd)
    for key, value in hf_sd.items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize(
    ("official_key", "hf_key"),
    [
        (
            "backbone.0.patch_embed.proj.weight",
            "model.backbone.conv_encoder.model.swin.embeddings.patch_embeddings.projection.weight",
        ),
        (
            "backbone.0.layers.0.blocks.0.norm1.weight",
            "model.backbone.conv_encoder.model.swin.encoder.layers.0.blocks.0.layernorm_before.weight",
        ),
        (
            "backbone.0.layers.2.downsample.reduction.weight",
            "model.backbone.conv_encoder.model.swin.encoder.layers.2.downsample.reduction.weight",
        ),
        (
            "backbone.0.norm1.bias",
            "model.backbone.conv_encoder.model.hidden_states_norms.stage2.bias",
        ),
        (
            "backbone.0.norm3.weight",
            "model.backbone.conv_encoder.model.hidden_states_norms.stage4.weight",
        ),
        (
            "bert.embeddings.word_embeddings.weight",
            "model.text_backbone.embeddings.word_embeddings.weight",
        ),
        ("feat_map.weight", "model.text_projection.weight"),
        ("input_proj.3.1.bias", "model.input_proj_vision.3.1.bias"),
        ("transformer.tgt_embed.weight", "model.query_position_embeddings.weight"),
        (
            "transformer.encoder.fusion_layers.0.gamma_v",
            "model.encoder.layers.0.fusion_layer.vision_param",
        ),
        (
            "transformer.encoder.text_layers.0.norm2.weight",
            "model.encoder.layers.0.text_enhancer_layer.layer_norm_after.weight",
        ),
        (
            "transformer.decoder.layers.1.catext_norm.bias",
            "model.decoder.layers.1.encoder_attn_text_layer_norm.bias",
        ),
        (
            "transformer.decoder.bbox_embed.1.layers.2.weight",
            "model.decoder.bbox_embed.1.layers.2.weight",
        ),
        (
            "transformer.enc_out_bbox_embed.layers.0.bias",
            "model.encoder_output_bbox_embed.layers.0.bias",
        ),
    ],
)
def test_key_mapping(hf_sd, official_key: str, hf_key: str) -> None:
    official = hf_to_official_state_dict(hf_sd)
    assert torch.equal(official[official_key], hf_sd[hf_key])


@pytest.mark.parametrize(
    ("official_key", "hf_prefix"),
    [
        (
            "backbone.0.layers.1.blocks.0.attn.qkv",
            "model.backbone.conv_encoder.model.swin.encoder.layers.1.blocks.0.attention.{}_proj",
        ),
        (
            "transformer.encoder.text_layers.0.self_attn.in_proj",
            "model.encoder.layers.0.text_enhancer_layer.self_attn.{}",
        ),
        (
            "transformer.decoder.layers.0.ca_text.in_proj",
            "model.decoder.layers.0.encoder_attn_text.{}",
        ),
    ],
)
def test_fused_qkv_is_query_key_value_stacked(hf_sd, official_key: str, hf_prefix: str) -> None:
    official = hf_to_official_state_dict(hf_sd)
    names = ("q", "k", "v") if "_proj" in hf_prefix else ("query", "key", "value")
    sep = "." if official_key.endswith("qkv") else "_"
    for what in ("weight", "bias"):
        fused = official[f"{official_key}{sep}{what}"]
        parts = [hf_sd[f"{hf_prefix.format(n)}.{what}"] for n in names]
        assert torch.equal(fused, torch.cat(parts))


def test_official_extras_are_dropped_and_module_prefix_removed(hf_sd) -> None:
    official = {f"module.{k}": v for k, v in hf_to_official_state_dict(hf_sd).items()}
    official["module.bert.embeddings.position_ids"] = torch.arange(256)[None]
    official["module.bert.pooler.dense.weight"] = torch.zeros(32, 32)
    official["module.backbone.0.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49)
    back = official_to_hf_state_dict(official)
    assert set(back) == set(hf_sd)


def test_unknown_official_keys_are_errors(hf_sd) -> None:
    official = hf_to_official_state_dict(hf_sd)
    official["transformer.some_new_head.weight"] = torch.zeros(2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "official_to_hf_state_dict: 1 keys match no rule: transformer.some_new_head.weight; "
            "is this an official Grounding DINO (Swin + BERT) checkpoint?"
        ),
    ):
        official_to_hf_state_dict(official)


def test_unknown_hf_keys_are_errors(hf_sd) -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("hf_to_official_state_dict: 1 keys match no rule: model.extra.weight"),
    ):
        hf_to_official_state_dict({**hf_sd, "model.extra.weight": torch.zeros(1)})


def test_converted_official_checkpoint_loads_strictly(tmp_path, net, data_dir) -> None:
    """An official-layout .pth (wrapped in {"model": ...}) loads through the registry strictly
    and gives the same detections as the original model."""
    path = tmp_path / "groundingdino_tiny.pth"
    torch.save({"model": hf_to_official_state_dict(net.state_dict()), "epoch": 3}, path)
    official = GroundingDinoDetector("grounding-dino-official-tiny-test", checkpoint=path)
    original = GroundingDinoDetector(net)
    for key, value in net.state_dict().items():
        assert torch.equal(official.model.state_dict()[key], value), key
    image = next((data_dir / "coco-dev" / "images").glob("*.jpg"))
    vocab = Vocabulary(["person", "car"])
    a = original.detect(image, vocab, box_threshold=0.0)
    b = official.detect(image, vocab, box_threshold=0.0)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)


def test_official_checkpoint_with_a_missing_key_fails_loudly(tmp_path, net) -> None:
    official = hf_to_official_state_dict(net.state_dict())
    del official["feat_map.weight"]
    path = tmp_path / "broken.pth"
    torch.save({"model": official}, path)
    with pytest.raises(
        StateDictError,
        match=re.escape(
            "state dict does not fit 'grounding-dino-official-tiny-test': missing keys: "
            "model.text_projection.weight"
        ),
    ):
        create_model("grounding-dino-official-tiny-test", task="detector", checkpoint=path)


def legacy_hub_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tiny model's weights as transformers 4.x saved Hub checkpoints: old Swin names, a
    relative_position_index buffer, no final Swin layernorm, tied box heads saved once."""
    renames = [
        (
            "attention.relative_position_bias.relative_position_bias_table",
            "attention.self.relative_position_bias_table",
        ),
        ("attention.q_proj.", "attention.self.query."),
        ("attention.k_proj.", "attention.self.key."),
        ("attention.v_proj.", "attention.self.value."),
        ("attention.o_proj.", "attention.output.dense."),
        ("mlp.fc1.", "intermediate.dense."),
        ("mlp.fc2.", "output.dense."),
    ]
    out = {}
    for key, value in state_dict.items():
        if "swin.layernorm" in key or re.fullmatch(
            r"model\.decoder\.bbox_embed\..*|bbox_embed\.[1-9]\d*\..*", key
        ):
            continue
        key = key.replace("conv_encoder.model.swin.", "conv_encoder.model.")
        for new, old in renames:
            key = key.replace(new, old)
        out[key] = value
    out[
        "model.backbone.conv_encoder.model.encoder.layers.0.blocks.0.attention.self."
        "relative_position_index"
    ] = torch.zeros(49, dtype=torch.long)
    return out


def test_fit_hf_state_dict_upgrades_legacy_hub_checkpoints(net) -> None:
    legacy = legacy_hub_layout(net.state_dict())
    assert (
        "model.backbone.conv_encoder.model.encoder.layers.0.blocks.0.attention.self.query.weight"
        in legacy
    )
    fitted = fit_hf_state_dict(legacy, net.model)
    expected = net.state_dict()
    assert set(fitted) == set(expected)
    for key, value in expected.items():
        assert torch.equal(fitted[key], value), key


def test_legacy_hub_checkpoint_loads_through_the_registry(tmp_path, net) -> None:
    from safetensors.torch import save_file

    legacy = {k: v.clone().contiguous() for k, v in legacy_hub_layout(net.state_dict()).items()}
    save_file(legacy, str(tmp_path / "model.safetensors"))
    loaded = create_model(
        "grounding-dino-tiny-test", task="detector", checkpoint=tmp_path / "model.safetensors"
    )
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
