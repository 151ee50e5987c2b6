"""CLIP registry entries: architectures, checkpoint sources, loading through textseg._hub."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from textseg._hub import StateDictError, WeightsNotFoundError, resolve_weights
from textseg._registry import get_model_cfg, list_models
from textseg.clip import HfClipEncoder, OpenClipEncoder, load_clip

# name -> (backend class, parameter count of the published architecture, embed dim, patch)
REAL = {
    "clip-vit-b-32": (OpenClipEncoder, 151_277_313, 512, 32),
    "clip-vit-b-16": (OpenClipEncoder, 149_620_737, 512, 16),
    "clip-vit-l-14": (OpenClipEncoder, 427_616_513, 768, 14),
    "hf-clip-vit-b-32": (HfClipEncoder, 151_277_313, 512, 32),
    "hf-clip-vit-l-14": (HfClipEncoder, 427_616_513, 768, 14),
}
TINY = ["clip-vit-tiny-test", "hf-clip-vit-tiny-test"]


def test_registered_names() -> None:
    assert set(list_models("clip")) == set(REAL) | set(TINY)
    for name in TINY:
        assert get_model_cfg(name, "clip").is_test
    for name in REAL:
        weights = get_model_cfg(name, "clip").weights
        assert weights is not None and weights.hf_repo is not None and weights.license == "MIT"


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_architectures_on_meta_device(name: str) -> None:
    """The architecture the registry builds has exactly the published parameter count."""
    cfg = get_model_cfg(name, "clip")
    with torch.device("meta"):
        model = cfg.builder(cfg)
    assert sum(p.numel() for p in model.parameters()) == REAL[name][1]
    assert cfg.input_size == 224


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_weights_offline_error(name: str) -> None:
    cfg = get_model_cfg(name, "clip")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert f"weights for {name!r} are missing (offline" in message
    assert cfg.weights is not None and cfg.weights.hf_repo in message


@pytest.mark.slow
def test_real_vit_b_32_size() -> None:
    encoder = load_clip("clip-vit-b-32", pretrained=False)
    assert isinstance(encoder, OpenClipEncoder)
    assert (encoder.embed_dim, encoder.input_size, encoder.context_length) == (512, 224, 77)
    image = np.zeros((480, 640, 3), np.uint8)
    assert encoder.encode_images([image]).shape == (1, 512)
    assert encoder.dense_features(image).grid_size == (7, 9)  # 224 x 298 -> 7 x 9 patches of 32


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_state_dict_round_trip(name: str, fmt: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = load_clip(name)
    state = original.model.state_dict()
    path = tmp_path / f"weights.{fmt}"
    if fmt == "pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(1)  # a different random init, fully overwritten by the checkpoint
    loaded = load_clip(name, checkpoint=path)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert torch.equal(loaded.encode_images([image]), original.encode_images([image]))
    assert torch.equal(loaded.encode_text(["a cat"]), original.encode_text(["a cat"]))


@pytest.mark.parametrize(
    ("name", "extra_key"),
    [
        ("clip-vit-tiny-test", "attn_mask"),  # OpenAI / old open_clip checkpoints
        ("clip-vit-tiny-test", "input_resolution"),
        ("hf-clip-vit-tiny-test", "text_model.embeddings.position_ids"),  # transformers < 4.31
        ("hf-clip-vit-tiny-test", "vision_model.embeddings.position_ids"),
    ],
)
def test_known_extra_keys_are_dropped(name: str, extra_key: str, tmp_path: Path) -> None:
    state = load_clip(name).model.state_dict()
    state[extra_key] = torch.zeros(1, 77, dtype=torch.long)
    torch.save(state, tmp_path / "w.pt")
    load_clip(name, checkpoint=tmp_path / "w.pt")


def test_wrong_checkpoint_is_refused(tmp_path: Path) -> None:
    """An open_clip state dict does not silently load into the transformers model."""
    torch.save(load_clip("clip-vit-tiny-test").model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(
        StateDictError,
        match=r"state dict does not fit 'hf-clip-vit-tiny-test': missing keys: .*unexpected keys: ",
    ):
        load_clip("hf-clip-vit-tiny-test", checkpoint=tmp_path / "w.pt")


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown clip model 'clip-vit-b32'\. Did you mean "):
        load_clip("clip-vit-b32")
