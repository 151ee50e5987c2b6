"""Registered HQ-SAM (SAM-HQ) checkpoints and their tiny random-init test variants.

Two sources of the same weights (Apache-2.0, ETH VIS group): the official
``segment-anything-hq`` files on the Hugging Face hub (``lkeab/hq-sam``), converted on load
(:func:`~textseg.sam.modeling.hq.sam_hq_to_hf_state_dict`), and the transformers ports
(``syscv-community/sam-hq-vit-*``). Every entry builds a transformers ``SamHQModel``, which the
SAM core runs through :class:`~textseg.sam.backends.hq.SamHQBackend`. No sha256 is published for
either source. The official ``sam_hq_vit_tiny.pth`` (HQ on MobileSAM's TinyViT) has no
transformers counterpart and is not registered.
"""

from __future__ import annotations

from textseg._registry import Weights, register_model
from textseg.sam.modeling.hq import build_hf_sam_hq, load_sam_hq_state_dict, sam_hq_to_hf_state_dict
from textseg.sam.pretrained import _VIT_B, _VIT_H, _VIT_L, _VIT_TINY

_KW = dict(task="sam", input_size=1024)
#: segment_anything(-hq)'s two-way blocks use PyTorch's default LayerNorm eps.
_OFFICIAL_EPS = dict(decoder_layer_norm_eps=1e-5)


def _official(size: str) -> Weights:
    return Weights(
        filename=f"sam_hq_vit_{size}.pth",
        hf_repo="lkeab/hq-sam",
        hf_files=(f"sam_hq_vit_{size}.pth",),
        license="Apache-2.0",
    )


def _hf(repo: str) -> Weights:
    return Weights(
        filename=repo.split("/")[-1],
        hf_repo=repo,
        hf_files=("model.safetensors",),
        license="Apache-2.0",
    )


for _size, _arch, _what in (("b", _VIT_B, "ViT-B"), ("l", _VIT_L, "ViT-L"), ("h", _VIT_H, "ViT-H")):
    register_model(
        f"sam-hq-vit-{_size}",
        weights=_official(_size),
        test_variant="sam-hq-official-tiny-test",
        converter=sam_hq_to_hf_state_dict,
        description=f"HQ-SAM {_what}, official segment-anything-hq checkpoint (converted)",
        **_KW,
        **_arch,
        **_OFFICIAL_EPS,
    )(build_hf_sam_hq)

for _repo, _arch, _what in (
    ("syscv-community/sam-hq-vit-base", _VIT_B, "ViT-B"),
    ("syscv-community/sam-hq-vit-large", _VIT_L, "ViT-L"),
    ("syscv-community/sam-hq-vit-huge", _VIT_H, "ViT-H"),
):
    register_model(
        f"hf-{_repo.split('/')[-1]}",
        weights=_hf(_repo),
        test_variant="hf-sam-hq-tiny-test",
        converter=load_sam_hq_state_dict,
        description=f"HQ-SAM {_what}, transformers SamHQModel checkpoint",
        **_KW,
        **_arch,
    )(build_hf_sam_hq)

register_model(
    "sam-hq-official-tiny-test",
    test=True,
    converter=sam_hq_to_hf_state_dict,
    description="random-init tiny HQ-SAM for tests (loads the official layout)",
    **_KW,
    **_VIT_TINY,
    **_OFFICIAL_EPS,
)(build_hf_sam_hq)
register_model(
    "hf-sam-hq-tiny-test",
    test=True,
    converter=load_sam_hq_state_dict,
    description="random-init tiny transformers SamHQModel for tests",
    **_KW,
    **_VIT_TINY,
)(build_hf_sam_hq)
