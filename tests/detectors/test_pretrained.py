"""The detector registry entries: sources, licences, loaders, offline behaviour."""

from __future__ import annotations

import functools
import re

import pytest

from textseg._hub import WeightsNotFoundError, locate_weights, resolve_weights
from textseg._registry import get_model_cfg, list_models
from textseg.detectors.grounding_dino import load_hf_checkpoint, load_official_checkpoint
from textseg.detectors.owlv2 import load_owlv2_checkpoint
from textseg.detectors.pretrained import BERT_VOCAB


@pytest.mark.parametrize(
    ("name", "repo", "files", "loader"),
    [
        (
            "grounding-dino-tiny",
            "IDEA-Research/grounding-dino-tiny",
            ("model.safetensors", "vocab.txt"),
            load_hf_checkpoint,
        ),
        (
            "grounding-dino-base",
            "IDEA-Research/grounding-dino-base",
            ("model.safetensors", "vocab.txt"),
            load_hf_checkpoint,
        ),
        (
            "owlv2-base",
            "google/owlv2-base-patch16-ensemble",
            ("model.safetensors", "vocab.json", "merges.txt"),
            load_owlv2_checkpoint,
        ),
        (
            "owlv2-large",
            "google/owlv2-large-patch14-ensemble",
            ("model.safetensors", "vocab.json", "merges.txt"),
            load_owlv2_checkpoint,
        ),
        (
            "grounding-dino-swint-ogc",
            "ShilongLiu/GroundingDINO",
            ("groundingdino_swint_ogc.pth",),
            load_official_checkpoint,
        ),
        (
            "grounding-dino-swinb-cogcoor",
            "ShilongLiu/GroundingDINO",
            ("groundingdino_swinb_cogcoor.pth",),
            load_official_checkpoint,
        ),
    ],
)
def test_published_entries(name, repo, files, loader) -> None:
    cfg = get_model_cfg(name, "detector")
    assert cfg.weights is not None and not cfg.is_test
    assert cfg.weights.hf_repo == repo and cfg.weights.hf_files == files
    assert cfg.weights.license == "Apache-2.0"
    entry_loader = cfg.loader
    if isinstance(entry_loader, functools.partial):
        assert entry_loader.keywords == {"vocab": BERT_VOCAB}
        entry_loader = entry_loader.func
    assert entry_loader is loader


@pytest.mark.parametrize(
    "name", ["grounding-dino-tiny-test", "grounding-dino-official-tiny-test", "owlv2-tiny-test"]
)
def test_test_entries_need_nothing(name) -> None:
    cfg = get_model_cfg(name, "detector")
    assert cfg.is_test
    assert locate_weights(cfg).source == "random-init"


def test_listed_under_detector() -> None:
    names = list_models("detector")
    for name in (
        "grounding-dino-tiny",
        "grounding-dino-base",
        "grounding-dino-swint-ogc",
        "grounding-dino-swinb-cogcoor",
        "owlv2-base",
        "owlv2-large",
        "grounding-dino-tiny-test",
        "owlv2-tiny-test",
    ):
        assert name in names
    assert "bert-base-uncased vocab.txt" not in list_models()


@pytest.mark.parametrize("name", ["grounding-dino-tiny", "owlv2-base", "grounding-dino-swint-ogc"])
def test_offline_without_weights_is_one_clear_error(name) -> None:
    with pytest.raises(
        WeightsNotFoundError,
        match=re.escape(f"weights for {name!r} are missing (offline: HF_HUB_OFFLINE is set)"),
    ):
        resolve_weights(get_model_cfg(name, "detector"))


def test_bert_vocab_source() -> None:
    assert BERT_VOCAB.weights is not None
    assert BERT_VOCAB.weights.hf_repo == "google-bert/bert-base-uncased"
    assert BERT_VOCAB.weights.hf_files == ("vocab.txt",)
