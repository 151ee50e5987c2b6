"""Weights resolution order, checksums, offline errors and strict loading."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from textseg import _hub
from textseg._hub import (
    ChecksumError,
    StateDictError,
    WeightsNotFoundError,
    create_model,
    load_state_dict,
    load_strict,
    locate_weights,
    resolve_weights,
)
from textseg._registry import ModelCfg, Weights, get_model_cfg


def _tiny_linear(cfg: ModelCfg) -> torch.nn.Module:
    return torch.nn.Linear(3, 2)


def _save(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cfg(url: str, sha256: str | None = None, filename: str = "lin.pt") -> ModelCfg:
    return ModelCfg(
        name="lin",
        task="test",
        builder=_tiny_linear,
        weights=Weights(filename=filename, url=url, sha256=sha256, license="MIT"),
    )


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    source = _save(tmp_path / "remote.pt", seed=1)
    cfg = _cfg(source.as_uri())
    # 4. download (file:// URL), into TEXTSEG_CACHE
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TEXTSEG_OFFLINE")
    assert locate_weights(cfg).source == "download"
    downloaded = resolve_weights(cfg)
    assert downloaded == _hub.cache_dir() / "lin.pt" and downloaded.is_file()
    # 3. now in the cache, found without the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert locate_weights(cfg).source == "hub-cache"
    assert resolve_weights(cfg) == downloaded
    # 2. TEXTSEG_WEIGHTS wins over the cache
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    local = _save(weights_dir / "lin.pt", seed=2)
    monkeypatch.setenv("TEXTSEG_WEIGHTS", str(weights_dir))
    assert locate_weights(cfg).source == "TEXTSEG_WEIGHTS"
    assert resolve_weights(cfg) == local
    # 1. an explicit file wins over everything
    explicit = _save(tmp_path / "mine.pt", seed=3)
    assert resolve_weights(cfg, explicit) == explicit
    model = create_model(cfg, checkpoint=explicit)
    torch.testing.assert_close(model.state_dict(), torch.load(explicit, weights_only=True))


def test_offline_error_is_one_line_naming_the_file(tmp_path: Path):
    cfg = _cfg("https://example.invalid/lin.pt")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert "lin.pt" in message and "TEXTSEG_WEIGHTS" in message and "offline" in message


def test_download_with_wrong_sha256_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TEXTSEG_OFFLINE")
    source = _save(tmp_path / "remote.pt")
    cfg = _cfg(source.as_uri(), sha256="0" * 64)
    with pytest.raises(ChecksumError, match="expected 0000"):
        resolve_weights(cfg)
    assert not (_hub.cache_dir() / "lin.pt").exists()


def test_local_file_with_wrong_sha256_is_refused(tmp_path, monkeypatch):
    weights_dir = tmp_path / "w"
    weights_dir.mkdir()
    path = _save(weights_dir / "lin.pt")
    monkeypatch.setenv("TEXTSEG_WEIGHTS", str(weights_dir))
    with pytest.raises(ChecksumError):
        create_model(_cfg("https://example.invalid/lin.pt", sha256="f" * 64))
    good = _cfg("https://example.invalid/lin.pt", sha256=_sha(path))
    assert isinstance(create_model(good), torch.nn.Linear)
    # A changed file is checked again, not trusted from the stamp.
    _save(path, seed=9)
    os.utime(path, ns=(1, 1))
    with pytest.raises(ChecksumError):
        create_model(good)


def test_hf_cache_is_used(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf"
    snapshot = cache / "models--org--repo" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    _save(snapshot / "model.pt")
    (cache / "models--org--repo" / "refs").mkdir()
    (cache / "models--org--repo" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    cfg = ModelCfg(
        name="lin",
        task="test",
        builder=_tiny_linear,
        weights=Weights(filename="lin", hf_repo="org/repo", hf_files=("model.pt",)),
    )
    location = locate_weights(cfg)
    assert location.source == "hub-cache" and location.path == snapshot / "model.pt"
    assert isinstance(create_model(cfg), torch.nn.Linear)


def test_strict_loading_lists_missing_and_unexpected_keys():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(StateDictError) as info:
        load_strict(model, {"weight": torch.zeros(2, 3), "extra.w": torch.zeros(1)}, "lin")
    message = str(info.value)
    assert "missing keys: bias" in message and "unexpected keys: extra.w" in message
    with pytest.raises(StateDictError, match=r"shape mismatches .*weight \(3, 3\) vs \(2, 3\)"):
        load_strict(model, {"weight": torch.zeros(3, 3), "bias": torch.zeros(2)}, "lin")


def test_pickled_objects_are_not_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "obj": _Evil()}, path)
    with pytest.raises(StateDictError, match="cannot read a state dict"):
        load_state_dict(path)


class _Evil:
    pass


def test_wrapped_and_safetensors_state_dicts(tmp_path):
    from safetensors.torch import save_file

    sd = torch.nn.Linear(3, 2).state_dict()
    torch.save({"model": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    assert set(load_state_dict(tmp_path / "wrapped.pt")) == {"weight", "bias"}
    save_file(sd, str(tmp_path / "model.safetensors"))
    assert set(load_state_dict(tmp_path)) == {"weight", "bias"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(StateDictError, match="holds none of"):
        load_state_dict(tmp_path / "empty")


def test_random_init_models_need_no_files():
    model = create_model("sam-vit-tiny-test")
    assert isinstance(model, torch.nn.Module) and not model.training
    with pytest.raises(ValueError, match="random-init test model"):
        resolve_weights(get_model_cfg("sam-vit-tiny-test"))


def test_explicit_missing_checkpoint():
    with pytest.raises(WeightsNotFoundError, match="not found"):
        create_model("sam-vit-tiny-test", checkpoint="/no/such/file.pt")


def test_unpublished_architecture_needs_a_checkpoint(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no published weights"):
        create_model("sam-vit-b+clip-vit-b-32-text-adapter")
    random = create_model("sam-vit-b+clip-vit-b-32-text-adapter", pretrained=False)
    path = tmp_path / "adapter.pt"
    torch.save(random.state_dict(), path)
    loaded = create_model("sam-vit-b+clip-vit-b-32-text-adapter", checkpoint=path)
    for key, value in random.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize("pretrained", [True, False])
def test_a_given_checkpoint_is_loaded_whatever_pretrained_says(tmp_path, pretrained):
    torch.manual_seed(1)
    saved = create_model("sam-vit-tiny-test").state_dict()
    path = tmp_path / "sam.pt"
    torch.save(saved, path)
    torch.manual_seed(2)
    loaded = create_model("sam-vit-tiny-test", pretrained=pretrained, checkpoint=path)
    for key, value in saved.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # ... strictly: a file that does not fit is an error, not a silent random init.
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(StateDictError, match="missing keys"):
        create_model("sam-vit-tiny-test", pretrained=pretrained, checkpoint=tmp_path / "other.pt")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        create_model("sam-vit-tiny-test", pretrained=pretrained, checkpoint=tmp_path / "no.pt")


def test_registry_states_are_explicit():
    from textseg._registry import get_model_cfg

    assert get_model_cfg("sam-vit-b").status == "published"
    assert get_model_cfg("sam-vit-tiny-test").status == "test"
    assert get_model_cfg("sam-vit-b+clip-vit-b-32-text-adapter").status == "unpublished"
    assert get_model_cfg("sam-vit-b+clip-vit-b-32-text-adapter").pairing == {
        "sam": "sam-vit-b",
        "clip": "clip-vit-b-32",
    }
    # Hooks are fields of their own, not architecture sizes.
    for name in ("hf-sam-vit-base", "grounding-dino-tiny", "clip-vit-b-32"):
        cfg = get_model_cfg(name)
        assert not {"loader", "convert_state_dict", "converter", "sam", "clip"} & set(cfg.arch)
        assert (cfg.loader is None) != (cfg.converter is None)


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_hf_sam_loads_from_textseg_weights(tmp_path, monkeypatch, layout):
    """transformers SAM checkpoints found in TEXTSEG_WEIGHTS as the offline message says: the
    file named like the entry, or the hub folder holding model.safetensors."""
    import dataclasses

    from safetensors.torch import save_model

    from textseg._registry import get_model_cfg

    cfg = get_model_cfg("hf-sam-vit-base")
    # The real entry's resolution, with the tiny architecture so the test stays small.
    tiny = dataclasses.replace(cfg, builder=get_model_cfg("hf-sam-tiny-test").builder)
    tiny = dataclasses.replace(tiny, arch=get_model_cfg("hf-sam-tiny-test").arch)
    torch.manual_seed(0)
    source = create_model("hf-sam-tiny-test", pretrained=False)
    weights = tmp_path / "w"
    weights.mkdir()
    target = weights / "sam-vit-base"
    if layout == "folder":
        target.mkdir()
        target = target / "model.safetensors"
    save_model(source, str(target))
    monkeypatch.setenv("TEXTSEG_WEIGHTS", str(weights))
    assert locate_weights(tiny).source == "TEXTSEG_WEIGHTS"
    loaded = create_model(tiny)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_corrupt_safetensors_names_the_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(64)}, str(path))
    path.write_bytes(path.read_bytes()[:-40])  # truncated download
    with pytest.raises(StateDictError, match=r"model\.safetensors: not a valid safetensors"):
        load_state_dict(path)


def test_unreadable_checkpoint_never_advises_weights_only_false(tmp_path):
    path = tmp_path / "model.pt"
    import argparse

    torch.save({"w": torch.zeros(2), "code": argparse.Namespace(run="anything")}, path)
    with pytest.raises(StateDictError) as info:
        load_state_dict(path)
    assert "weights_only" not in str(info.value) and str(path) in str(info.value)
