"""Registered SAM 2 family checkpoints (SAM 2, SAM 2.1 Hiera T/S/B+/L, EdgeTAM) and their tiny
random-init test variants.

Every entry builds transformers' video model (``Sam2VideoModel``, ``EdgeTamVideoModel``), which
serves both the image pipelines (as a :class:`~textseg.sam.SamCore` backend) and the video
tracker (:mod:`textseg.video`), so one checkpoint is loaded once for both.

The weights are Meta's official ``.pt`` files from their Hugging Face repos, converted to
transformers' layout on load (:mod:`textseg.sam.modeling.convert_sam2`); a transformers-layout
``model.safetensors`` of the same model (the ``*-hf`` repos) also loads, from
``TEXTSEG_WEIGHTS`` or ``checkpoint=``. Meta publishes no checksums for these files; the Hub
client verifies its downloads.

EdgeTAM loads from the transformers-layout port its transformers integration uses
(``yonigozlan/EdgeTAM-hf``, converted by the transformers maintainers from Meta's
``edgetam.pt``); Meta's ``edgetam.pt`` itself loads too, converted as transformers converts it
(:mod:`textseg.sam.modeling.convert_sam2`).
"""

from __future__ import annotations

from typing import Any

from textseg._registry import ModelCfg, Weights, register_model

__all__: list[str] = []


def _build(cfg: ModelCfg) -> Any:
    """Imported on use: transformers is slow to import."""
    from textseg.sam.modeling.sam2 import build_sam2

    return build_sam2(cfg)


def _convert(state_dict: dict[str, Any]) -> dict[str, Any]:
    from textseg.sam.modeling.convert_sam2 import to_hf_state_dict

    return to_hf_state_dict(state_dict)


_KW: dict[str, Any] = dict(
    task="sam",
    input_size=1024,
    mean=(123.675, 116.28, 103.53),
    std=(58.395, 57.12, 57.375),
)

#: Hiera sizes of the official configs (``configs/sam2.1/sam2.1_hiera_*.yaml``).
_HIERA: dict[str, dict[str, Any]] = {
    "tiny": dict(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 14, 7),
    ),
    "small": dict(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 14, 7),
    ),
    "base-plus": dict(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
        window_spec=(8, 4, 14, 7),
    ),
    "large": dict(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
    ),
}
#: Parameters of the published models (the SAM 2 / 2.1 model cards).
_PARAMS = {"tiny": "38.9M", "small": "46M", "base-plus": "80.8M", "large": "224.4M"}

#: Small enough for the test suite (a 256 input: 64/32/16 feature grids, a 16x16 memory), the
#: same code paths as the real models (windowed and global Hiera attention, FPN, memory
#: attention with RoPE, object pointers). hidden_size 128: transformers fixes the memory width
#: at 64 and the official memory encoder only has an output projection when the widths differ.
TINY_SAM2: dict[str, Any] = dict(
    embed_dim=8,
    num_heads=1,
    stages=(1, 1, 2, 1),
    global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(4, 4),
    window_spec=(8, 4, 4, 4),
    hidden_size=128,
    memory_layers=2,
    memory_ff_dim=64,
)

for _version, _prefix in (("2.1", "sam2.1"), ("2", "sam2")):
    for _size, _hiera in _HIERA.items():
        _file = f"{_prefix}_hiera_{_size.replace('-', '_')}.pt"
        register_model(
            f"{_prefix}-hiera-{_size}",
            weights=Weights(
                filename=_file,
                hf_repo=f"facebook/{_prefix}-hiera-{_size}",
                hf_files=(_file,),
                license="Apache-2.0",
            ),
            converter=_convert,
            test_variant=f"{_prefix}-tiny-test",
            description=f"SAM {_version} Hiera-{_size} ({_PARAMS[_size]}), images and video",
            family="sam2",
            version=_version,
            **_KW,
            **_hiera,
        )(_build)
    register_model(
        f"{_prefix}-tiny-test",
        test=True,
        converter=_convert,
        description=f"random-init tiny SAM {_version} (Hiera) for tests",
        family="sam2",
        version=_version,
        **{**_KW, "input_size": 256},
        **TINY_SAM2,
    )(_build)

register_model(
    "edgetam",
    weights=Weights(
        filename="EdgeTAM-hf",
        hf_repo="yonigozlan/EdgeTAM-hf",
        hf_files=("model.safetensors",),
        license="Apache-2.0",
    ),
    converter=_convert,
    test_variant="edgetam-tiny-test",
    description="EdgeTAM (RepViT-M1, 2D spatial perceiver memory; 13.9M), images and video",
    family="edgetam",
    version="2",
    **_KW,
)(_build)
register_model(
    "edgetam-tiny-test",
    test=True,
    converter=_convert,
    description="random-init EdgeTAM at a 256 input for tests (the real sizes otherwise)",
    family="edgetam",
    version="2",
    **{**_KW, "input_size": 256},
)(_build)
