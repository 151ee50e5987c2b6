"""Registered text -> boxes detectors and their tiny random-init test variants (task "detector").

Checkpoint descriptions live here, apart from the architecture code in
:mod:`textseg.detectors.grounding_dino` and :mod:`textseg.detectors.owlv2`. Architectures are
built in code from the sizes below; no ``config.json`` is read. Published transformers
checkpoints are folders of the weights plus the tokenizer files; the official Grounding DINO
``.pth`` files are converted on load and take BERT's ``vocab.txt`` from bert-base-uncased.
"""

from __future__ import annotations

import functools

from textseg._registry import ModelCfg, Weights, register_model
from textseg.detectors.grounding_dino import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_grounding_dino,
    load_hf_checkpoint,
    load_official_checkpoint,
)
from textseg.detectors.owlv2 import CLIP_MEAN, CLIP_STD, build_owlv2, load_owlv2_checkpoint

__all__ = ["BERT_VOCAB"]

# ---------------------------------------------------------------------- Grounding DINO
_BERT_BASE = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
)
_SWIN_T = dict(
    embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, image_size=224
)
_SWIN_B = dict(
    embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12, image_size=384
)
# transformers' GroundingDinoConfig defaults are the published models' settings (900 queries,
# 6+6 layers, d_model 256, 256 text tokens).
_GDINO_INPUT = dict(shortest_edge=800, longest_edge=1333)
_GDINO_T = dict(swin=_SWIN_T, text=_BERT_BASE, transformer={}, **_GDINO_INPUT)
_GDINO_B = dict(swin=_SWIN_B, text=_BERT_BASE, transformer={}, **_GDINO_INPUT)
# Same code paths at a size the test suite runs in well under a second per image: 4 feature
# levels, two-stage query selection, text enhancer, fusion, 2 decoder layers with box refinement.
_GDINO_TINY = dict(
    swin=dict(
        embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 2), window_size=7, image_size=224
    ),
    text=dict(
        vocab_size=1030,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    ),
    transformer=dict(
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=30,
    ),
    shortest_edge=128,
    longest_edge=192,
)
_GDINO_KW = dict(task="detector", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _hf_gdino(repo: str) -> Weights:
    return Weights(
        filename=repo.split("/")[-1],
        hf_repo=repo,
        hf_files=("model.safetensors", "vocab.txt"),
        license="Apache-2.0",
    )


def _official_gdino(file: str) -> Weights:
    return Weights(
        filename=file, hf_repo="ShilongLiu/GroundingDINO", hf_files=(file,), license="Apache-2.0"
    )


#: Where the official checkpoints' tokenizer vocabulary comes from (resolved like weights:
#: ``$TEXTSEG_WEIGHTS/bert-base-uncased-vocab.txt``, the hub cache, or a download).
BERT_VOCAB = ModelCfg(
    name="bert-base-uncased vocab.txt",
    task="tokenizer",
    builder=lambda cfg: None,
    weights=Weights(
        filename="bert-base-uncased-vocab.txt",
        hf_repo="google-bert/bert-base-uncased",
        hf_files=("vocab.txt",),
        license="Apache-2.0",
    ),
)
_official_loader = functools.partial(load_official_checkpoint, vocab=BERT_VOCAB)

register_model(
    "grounding-dino-tiny",
    test_variant="grounding-dino-tiny-test",
    weights=_hf_gdino("IDEA-Research/grounding-dino-tiny"),
    description="Grounding DINO Swin-T (172M), transformers checkpoint",
    loader=load_hf_checkpoint,
    **_GDINO_KW,
    **_GDINO_T,
)(build_grounding_dino)
register_model(
    "grounding-dino-base",
    test_variant="grounding-dino-tiny-test",
    weights=_hf_gdino("IDEA-Research/grounding-dino-base"),
    description="Grounding DINO Swin-B (233M), transformers checkpoint",
    loader=load_hf_checkpoint,
    **_GDINO_KW,
    **_GDINO_B,
)(build_grounding_dino)
register_model(
    "grounding-dino-swint-ogc",
    test_variant="grounding-dino-official-tiny-test",
    weights=_official_gdino("groundingdino_swint_ogc.pth"),
    description="Grounding DINO Swin-T, official checkpoint (converted on load)",
    loader=_official_loader,
    **_GDINO_KW,
    **_GDINO_T,
)(build_grounding_dino)
register_model(
    "grounding-dino-swinb-cogcoor",
    test_variant="grounding-dino-official-tiny-test",
    weights=_official_gdino("groundingdino_swinb_cogcoor.pth"),
    description="Grounding DINO Swin-B, official checkpoint (converted on load)",
    loader=_official_loader,
    **_GDINO_KW,
    **_GDINO_B,
)(build_grounding_dino)
register_model(
    "grounding-dino-tiny-test",
    test=True,
    description="random-init tiny Grounding DINO for tests (transformers layout)",
    loader=load_hf_checkpoint,
    **_GDINO_KW,
    **_GDINO_TINY,
)(build_grounding_dino)
register_model(
    "grounding-dino-official-tiny-test",
    test=True,
    description="random-init tiny Grounding DINO for tests (loads official layout)",
    loader=load_official_checkpoint,
    **_GDINO_KW,
    **_GDINO_TINY,
)(build_grounding_dino)

# ---------------------------------------------------------------------- OWLv2
_OWL_B = dict(
    vision=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=960,
        patch_size=16,
    ),
    text=dict(
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=16,
    ),
    projection_dim=512,
)
_OWL_L = dict(
    vision=dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=1008,
        patch_size=14,
    ),
    text=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=16,
    ),
    projection_dim=768,
)
_OWL_TINY = dict(
    vision=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=128,
        patch_size=16,
    ),
    text=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
    ),
    projection_dim=32,
)
_OWL_KW = dict(task="detector", mean=CLIP_MEAN, std=CLIP_STD, loader=load_owlv2_checkpoint)


def _hf_owl(repo: str) -> Weights:
    return Weights(
        filename=repo.split("/")[-1],
        hf_repo=repo,
        hf_files=("model.safetensors", "vocab.json", "merges.txt"),
        license="Apache-2.0",
    )


register_model(
    "owlv2-base",
    test_variant="owlv2-tiny-test",
    weights=_hf_owl("google/owlv2-base-patch16-ensemble"),
    input_size=960,
    description="OWLv2 ViT-B/16 ensemble",
    **_OWL_KW,
    **_OWL_B,
)(build_owlv2)
register_model(
    "owlv2-large",
    test_variant="owlv2-tiny-test",
    weights=_hf_owl("google/owlv2-large-patch14-ensemble"),
    input_size=1008,
    description="OWLv2 ViT-L/14 ensemble",
    **_OWL_KW,
    **_OWL_L,
)(build_owlv2)
register_model(
    "owlv2-tiny-test",
    test=True,
    input_size=128,
    description="random-init tiny OWLv2 for tests",
    **_OWL_KW,
    **_OWL_TINY,
)(build_owlv2)
