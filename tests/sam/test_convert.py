"""State-dict converters segment_anything <-> transformers; the transformers SamModel builder."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from textseg._hub import StateDictError, create_model
from textseg._registry import get_model_cfg
from textseg.sam.modeling.convert import (
    HF_PE_KEYS,
    SAM_PE_KEY,
    fill_tied_hf_keys,
    hf_to_sam_state_dict,
    sam_to_hf_state_dict,
)
from textseg.sam.modeling.hf import hf_sam_config

# (segment_anything entry, transformers entry) at the tiny test size and the real ViT-B size.
PAIRS = {
    "tiny": ("sam-vit-tiny-test", "hf-sam-tiny-test"),
    "vit_b": ("sam-vit-b", "hf-sam-vit-base"),
}


@pytest.fixture(scope="module", params=sorted(PAIRS))
def state_dicts(request: pytest.FixtureRequest) -> tuple[dict, dict]:
    """(segment_anything state dict, transformers state dict) of random-init models."""
    sam_name, hf_name = PAIRS[request.param]
    torch.manual_seed(0)
    sam = create_model(sam_name, task="sam", pretrained=False)
    hf = create_model(hf_name, task="sam", pretrained=False)
    return sam.state_dict(), hf.state_dict()


def test_sam_to_hf_gives_the_sammodel_keys_and_shapes(state_dicts: tuple[dict, dict]) -> None:
    sam_sd, hf_sd = state_dicts
    converted = sam_to_hf_state_dict(sam_sd)
    assert sorted(converted) == sorted(hf_sd)
    shapes = {k: (tuple(v.shape), tuple(hf_sd[k].shape)) for k, v in converted.items()}
    assert all(a == b for a, b in shapes.values()), {
        k: s for k, s in shapes.items() if s[0] != s[1]
    }


def test_hf_to_sam_gives_the_sam_keys_and_shapes(state_dicts: tuple[dict, dict]) -> None:
    sam_sd, hf_sd = state_dicts
    converted = hf_to_sam_state_dict(hf_sd)
    assert sorted(converted) == sorted(sam_sd)
    assert all(tuple(v.shape) == tuple(sam_sd[k].shape) for k, v in converted.items())


def test_round_trip_is_identity_on_keys_and_values(state_dicts: tuple[dict, dict]) -> None:
    sam_sd, _ = state_dicts
    back = hf_to_sam_state_dict(sam_to_hf_state_dict(sam_sd))
    assert list(back) == list(sam_sd)  # same keys, same order
    # The converters rename only: every value is the very same tensor object.
    assert all(back[k] is v for k, v in sam_sd.items())


def test_reverse_round_trip_is_identity(state_dicts: tuple[dict, dict]) -> None:
    _, hf_sd = state_dicts
    back = sam_to_hf_state_dict(hf_to_sam_state_dict(hf_sd))
    assert sorted(back) == sorted(hf_sd)
    assert all(torch.equal(back[k], v) for k, v in hf_sd.items())


def test_positional_encoding_fills_both_tied_keys() -> None:
    sam = create_model("sam-vit-tiny-test", pretrained=False)
    sam_sd = sam.state_dict()
    converted = sam_to_hf_state_dict(sam_sd)
    matrix = sam_sd[SAM_PE_KEY]
    assert all(converted[key] is matrix for key in HF_PE_KEYS)


def test_converted_weights_load_strictly_both_ways() -> None:
    torch.manual_seed(1)
    sam = create_model("sam-vit-tiny-test", pretrained=False)
    hf = create_model("hf-sam-tiny-test", pretrained=False)
    hf.load_state_dict(sam_to_hf_state_dict(sam.state_dict()), strict=True)
    assert torch.equal(
        hf.vision_encoder.layers[1].attn.rel_pos_h, sam.image_encoder.blocks[1].attn.rel_pos_h
    )
    assert torch.equal(
        hf.mask_decoder.iou_prediction_head.proj_out.weight,
        sam.mask_decoder.iou_prediction_head.layers[2].weight,
    )
    fresh = create_model("sam-vit-tiny-test", pretrained=False)
    fresh.load_state_dict(hf_to_sam_state_dict(hf.state_dict()), strict=True)
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("kept", [0, 1], ids=["shared_image_embedding", "prompt_encoder"])
def test_hf_to_sam_accepts_one_tied_key(kept: int) -> None:
    hf_sd = create_model("hf-sam-tiny-test", pretrained=False).state_dict()
    del hf_sd[HF_PE_KEYS[1 - kept]]
    converted = hf_to_sam_state_dict(hf_sd)
    assert converted[SAM_PE_KEY] is hf_sd[HF_PE_KEYS[kept]]


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 1}),
        ({"b": 1}, {"a": 1, "b": 1}),
        ({"a": 1, "b": 1}, {"a": 1, "b": 1}),
        ({}, {}),
    ],
    ids=["first-only", "second-only", "both", "neither"],
)
def test_fill_tied_hf_keys(present: dict[str, int], expected: dict[str, int]) -> None:
    names = dict(zip("ab", HF_PE_KEYS, strict=True))
    values = {1: torch.arange(4.0).reshape(2, 2)}
    sd = {names[k]: values[v] for k, v in present.items()} | {"other": torch.zeros(1)}
    out = fill_tied_hf_keys(sd)
    assert sorted(out) == sorted([names[k] for k in expected] + ["other"])
    assert all(out[names[k]] is values[v] for k, v in expected.items())
    assert len(sd) == len(present) + 1  # the input dict is left as it was


def test_fill_tied_hf_keys_rejects_different_values() -> None:
    sd = {HF_PE_KEYS[0]: torch.zeros(2, 2), HF_PE_KEYS[1]: torch.ones(2, 2)}
    message = (
        f"the tied keys {HF_PE_KEYS[0]!r} and {HF_PE_KEYS[1]!r} hold different values; "
        f"SamModel ties them to one parameter, so the checkpoint is inconsistent"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        fill_tied_hf_keys(sd)
    with pytest.raises(ValueError, match=re.escape(message)):
        hf_to_sam_state_dict(sd)


_SAM_EXPECTED = (
    "expected segment_anything Sam (ViT encoder) keys, "
    "e.g. 'image_encoder.blocks.0.attn.qkv.weight'"
)
_HF_EXPECTED = "expected transformers SamModel keys, e.g. 'vision_encoder.layers.0.attn.qkv.weight'"


@pytest.mark.parametrize(
    ("convert", "key", "message"),
    [
        (
            sam_to_hf_state_dict,
            "image_encoder.blocks.0.attn.qkvx.weight",
            f"sam_to_hf_state_dict: unknown key 'image_encoder.blocks.0.attn.qkvx.weight'; "
            f"{_SAM_EXPECTED}",
        ),
        (
            sam_to_hf_state_dict,
            "image_encoder.blocks.0.norm1.running_mean",
            f"sam_to_hf_state_dict: unknown key 'image_encoder.blocks.0.norm1.running_mean'; "
            f"{_SAM_EXPECTED}",
        ),
        (
            sam_to_hf_state_dict,
            "vision_encoder.layers.0.attn.qkv.weight",
            f"sam_to_hf_state_dict: unknown key 'vision_encoder.layers.0.attn.qkv.weight'; "
            f"{_SAM_EXPECTED}; this is a transformers SamModel key: use hf_to_sam_state_dict",
        ),
        (
            sam_to_hf_state_dict,
            "image_encoder.layers.0.blocks.0.attn.qkv.weight",
            f"sam_to_hf_state_dict: unknown key 'image_encoder.layers.0.blocks.0.attn.qkv.weight'; "
            f"{_SAM_EXPECTED}; MobileSAM's TinyViT encoder has no transformers SamModel "
            f"counterpart",
        ),
        (
            hf_to_sam_state_dict,
            "vision_encoder.layers.0.attn.qkvx.weight",
            f"hf_to_sam_state_dict: unknown key 'vision_encoder.layers.0.attn.qkvx.weight'; "
            f"{_HF_EXPECTED}",
        ),
        (
            hf_to_sam_state_dict,
            "mask_decoder.output_upscaling.0.weight",
            f"hf_to_sam_state_dict: unknown key 'mask_decoder.output_upscaling.0.weight'; "
            f"{_HF_EXPECTED}; this is a segment_anything Sam key: use sam_to_hf_state_dict",
        ),
    ],
    ids=["typo", "unknown-tail", "hf-key-to-sam2hf", "tinyvit", "hf-typo", "sam-key-to-hf2sam"],
)
def test_unknown_key_is_named(convert, key: str, message: str) -> None:
    good = create_model("sam-vit-tiny-test", pretrained=False).state_dict()
    if convert is hf_to_sam_state_dict:
        good = sam_to_hf_state_dict(good)
    sd = dict(good) | {key: torch.zeros(1)}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        convert(sd)


def test_default_pixel_constants_are_dropped_custom_ones_rejected() -> None:
    sd = create_model("sam-vit-tiny-test", pretrained=False).state_dict()
    with_defaults = dict(sd) | {
        "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
        "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1),
    }
    assert sorted(sam_to_hf_state_dict(with_defaults)) == sorted(sam_to_hf_state_dict(sd))
    custom = dict(sd) | {"pixel_mean": torch.tensor([0.5, 0.5, 0.5])}
    with pytest.raises(ValueError, match=r"^sam_to_hf_state_dict: 'pixel_mean' is \[0\.5, 0\.5"):
        sam_to_hf_state_dict(custom)


# --- the transformers SamModel builder (textseg.sam.modeling.hf) -------------------------------

# Published facebook/sam-vit-* config.json values (vision part; the rest is shared).
_PUBLISHED_VISION = {
    "hf-sam-vit-base": (768, 12, 12, [2, 5, 8, 11], 3072),
    "hf-sam-vit-large": (1024, 24, 16, [5, 11, 17, 23], 4096),
    "hf-sam-vit-huge": (1280, 32, 16, [7, 15, 23, 31], 5120),
}


@pytest.mark.parametrize("name", sorted(_PUBLISHED_VISION))
def test_config_matches_the_published_checkpoints(name: str) -> None:
    config = hf_sam_config(get_model_cfg(name, task="sam"))
    v, p, d = config.vision_config, config.prompt_encoder_config, config.mask_decoder_config
    hidden, depth, heads, global_attn, mlp_dim = _PUBLISHED_VISION[name]
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads) == (hidden, depth, heads)
    assert list(v.global_attn_indexes) == global_attn and v.mlp_dim == mlp_dim
    assert (v.image_size, v.patch_size, v.window_size, v.output_channels) == (1024, 16, 14, 256)
    assert (v.num_pos_feats, v.layer_norm_eps, v.qkv_bias) == (128, 1e-6, True)
    assert (v.use_abs_pos, v.use_rel_pos, v.hidden_act) == (True, True, "gelu")
    assert (p.hidden_size, p.image_embedding_size, p.mask_input_channels) == (256, 64, 16)
    assert (p.num_point_embeddings, p.layer_norm_eps) == (4, 1e-6)
    assert (d.hidden_size, d.mlp_dim, d.num_attention_heads, d.num_hidden_layers) == (
        256,
        2048,
        8,
        2,
    )
    assert (d.iou_head_depth, d.iou_head_hidden_dim, d.num_multimask_outputs) == (3, 256, 3)
    assert (d.attention_downsample_rate, d.layer_norm_eps, d.hidden_act) == (2, 1e-6, "relu")


def test_tiny_model_is_built_in_eval_mode_with_the_tiny_sizes() -> None:
    cfg = get_model_cfg("hf-sam-tiny-test", task="sam")
    model = cfg.builder(cfg)
    assert not model.training
    assert model.shared_image_embedding.positional_embedding.shape == (2, 16)
    assert model.mask_decoder.iou_prediction_head.proj_in.out_features == 32


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        (
            {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2},
            "'bad': arch is missing encoder_global_attn_indexes; a transformers SamModel entry "
            "needs encoder_embed_dim, encoder_depth, encoder_num_heads, "
            "encoder_global_attn_indexes",
        ),
        (
            {
                "encoder_embed_dim": 32,
                "encoder_depth": 2,
                "encoder_num_heads": 2,
                "encoder_global_attn_indexes": (1,),
                "prompt_embed_dim": 33,
            },
            "'bad': prompt_embed_dim must be even (sin and cos halves of the positional "
            "encoding), got 33",
        ),
    ],
    ids=["missing-key", "odd-dim"],
)
def test_config_rejects_bad_arch(arch: dict, message: str) -> None:
    cfg = dataclasses.replace(get_model_cfg("hf-sam-tiny-test"), name="bad", arch=arch)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        hf_sam_config(cfg)


def test_checkpoint_round_trip_through_build_model(tmp_path) -> None:
    torch.manual_seed(2)
    model = create_model("hf-sam-tiny-test", pretrained=False)
    path = tmp_path / "hf-tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = create_model("hf-sam-tiny-test", checkpoint=path)
    assert not loaded.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_safetensors_file_without_the_tied_twin_needs_fill_tied_hf_keys(tmp_path) -> None:
    from safetensors.torch import load_file, save_model

    torch.manual_seed(3)
    model = create_model("hf-sam-tiny-test", pretrained=False)
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))  # drops one name of the tied pair, like save_pretrained
    assert sum(key in load_file(str(path)) for key in HF_PE_KEYS) == 1

    cfg = get_model_cfg("hf-sam-tiny-test")
    plain = dataclasses.replace(cfg, converter=None)
    with pytest.raises(StateDictError, match=r"missing keys: .*positional_embedding"):
        create_model(plain, checkpoint=path)

    hooked = dataclasses.replace(cfg, converter=fill_tied_hf_keys)
    loaded = create_model(hooked, checkpoint=path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
