"""Registered SAM checkpoints (the official segment_anything family, MobileSAM and the
transformers ``SamModel`` family) and their tiny random-init test variants.

Checkpoint descriptions live here, apart from the architecture code in
:mod:`textseg.sam.modeling`.
"""

from __future__ import annotations

from typing import Any

from textseg._registry import ModelCfg, Weights, register_model
from textseg.sam.modeling.convert import fill_tied_hf_keys
from textseg.sam.modeling.sam import build_mobile_sam, build_sam_vit


def build_hf_sam(cfg: ModelCfg) -> Any:
    """transformers ``SamModel``; imported on use because transformers is slow to import."""
    from textseg.sam.modeling.hf import build_hf_sam as build

    return build(cfg)


_FAIR = "https://dl.fbaipublicfiles.com/segment_anything"
_SAM_KW = dict(task="sam", input_size=1024)

SAM_VIT_B = Weights(
    filename="sam_vit_b_01ec64.pth",
    url=f"{_FAIR}/sam_vit_b_01ec64.pth",
    sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    license="Apache-2.0",
)
SAM_VIT_L = Weights(
    filename="sam_vit_l_0b3195.pth",
    url=f"{_FAIR}/sam_vit_l_0b3195.pth",
    sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    license="Apache-2.0",
)
SAM_VIT_H = Weights(
    filename="sam_vit_h_4b8939.pth",
    url=f"{_FAIR}/sam_vit_h_4b8939.pth",
    sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    license="Apache-2.0",
)
# MobileSAM publishes no checksum for mobile_sam.pt.
MOBILE_SAM = Weights(
    filename="mobile_sam.pt",
    url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
    license="Apache-2.0",
)


def _hf(repo: str) -> Weights:
    return Weights(
        filename=repo.split("/")[-1],
        hf_repo=repo,
        hf_files=("model.safetensors",),
        license="Apache-2.0",
    )


_VIT_B = dict(
    encoder_embed_dim=768,
    encoder_depth=12,
    encoder_num_heads=12,
    encoder_global_attn_indexes=(2, 5, 8, 11),
)
_VIT_L = dict(
    encoder_embed_dim=1024,
    encoder_depth=24,
    encoder_num_heads=16,
    encoder_global_attn_indexes=(5, 11, 17, 23),
)
_VIT_H = dict(
    encoder_embed_dim=1280,
    encoder_depth=32,
    encoder_num_heads=16,
    encoder_global_attn_indexes=(7, 15, 23, 31),
)
# Small enough for the test suite (a few ms per image), same code paths as the real models:
# 1024 input, 64x64 embedding grid, windowed and global attention, two-way decoder.
_VIT_TINY = dict(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
_TINYVIT_TINY = dict(
    embed_dims=(8, 16, 16, 32),
    depths=(1, 1, 1, 1),
    num_heads=(1, 1, 1, 2),
    window_sizes=(7, 7, 14, 7),
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)

for _name, _weights, _what, _arch in (
    ("sam-vit-b", SAM_VIT_B, "SAM ViT-B (91M encoder)", _VIT_B),
    ("sam-vit-l", SAM_VIT_L, "SAM ViT-L (308M encoder)", _VIT_L),
    ("sam-vit-h", SAM_VIT_H, "SAM ViT-H (636M encoder)", _VIT_H),
):
    register_model(
        _name,
        weights=_weights,
        test_variant="sam-vit-tiny-test",
        description=_what,
        **_SAM_KW,
        **_arch,
    )(build_sam_vit)
register_model(
    "sam-vit-tiny-test",
    test=True,
    description="random-init tiny ViT SAM for tests",
    **_SAM_KW,
    **_VIT_TINY,
)(build_sam_vit)
register_model(
    "mobile-sam",
    weights=MOBILE_SAM,
    test_variant="mobile-sam-tiny-test",
    description="MobileSAM: TinyViT (5.8M) encoder",
    **_SAM_KW,
)(build_mobile_sam)
register_model(
    "mobile-sam-tiny-test",
    test=True,
    description="random-init tiny TinyViT SAM for tests",
    **_SAM_KW,
    **_TINYVIT_TINY,
)(build_mobile_sam)

for _repo, _arch, _what in (
    ("facebook/sam-vit-base", _VIT_B, "ViT-B"),
    ("facebook/sam-vit-large", _VIT_L, "ViT-L"),
    ("facebook/sam-vit-huge", _VIT_H, "ViT-H"),
):
    register_model(
        f"hf-{_repo.split('/')[-1]}",
        weights=_hf(_repo),
        test_variant="hf-sam-tiny-test",
        description=f"transformers SamModel {_what}",
        # save_pretrained keeps one of the two tied positional-embedding names.
        converter=fill_tied_hf_keys,
        **_SAM_KW,
        **_arch,
    )(build_hf_sam)
register_model(
    "hf-sam-tiny-test",
    test=True,
    description="random-init tiny transformers SamModel for tests",
    converter=fill_tied_hf_keys,
    **_SAM_KW,
    **_VIT_TINY,
)(build_hf_sam)
