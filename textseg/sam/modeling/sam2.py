"""Builders for the SAM 2 family through transformers: ``Sam2VideoModel`` and ``EdgeTamVideoModel``.

One model object serves both the image predictor (the :class:`~textseg.sam.SamCore` backend in
:mod:`textseg.sam.backends.sam2`) and the video tracker (:mod:`textseg.video`): the video models
hold the image encoder, prompt encoder and mask decoder of the image model plus the memory
attention, memory encoder and object pointers, so a checkpoint is loaded once for both uses.

The registry entries (:mod:`textseg.sam.pretrained_sam2`) give the sizes in ``cfg.arch``:

- ``family``: ``"sam2"`` (Hiera image encoder) or ``"edgetam"`` (RepViT encoder through timm,
  2D spatial perceiver memory);
- ``version``: ``"2"`` or ``"2.1"`` (SAM 2.1 adds the temporal encoding of object pointers and
  the occlusion embedding of the spatial memory);
- Hiera sizes, named as in the official ``sam2`` configs: ``embed_dim``, ``num_heads``,
  ``stages``, ``global_att_blocks``, ``window_pos_embed_bkg_spatial_size``, ``window_spec``;
- ``hidden_size`` (256 published; a multiple of the 64 memory channels, which transformers
  fixes, and larger than 64), ``memory_layers`` (4), ``memory_ff_dim`` (2048), ``num_maskmem`` (7);
  ``cfg.input_size`` is the square input side (1024 published).

:func:`official_sam2_config` writes the same sizes as the official ``sam2`` package's hydra
config, so the tests and benchmarks build the reference model with identical architecture.
"""

from __future__ import annotations

from typing import Any

from textseg._registry import ModelCfg

__all__ = ["build_official_sam2", "build_sam2", "official_sam2_config", "sam2_config"]

#: Hiera-T (``sam2.1_hiera_t.yaml``); the other sizes are in the registry entries.
_DEFAULTS: dict[str, Any] = {
    "family": "sam2",
    "version": "2.1",
    "embed_dim": 96,
    "num_heads": 1,
    "stages": (1, 2, 7, 2),
    "global_att_blocks": (5, 7, 9),
    "window_pos_embed_bkg_spatial_size": (7, 7),
    "window_spec": (8, 4, 14, 7),
    "hidden_size": 256,
    "memory_layers": 4,
    "memory_ff_dim": 2048,
    "num_maskmem": 7,
}

#: Sizes the official ``SAM2Base`` hard-codes for the mask decoder (every checkpoint).
_DECODER_MLP = 2048
_DECODER_HEADS = 8
_IOU_HIDDEN = 256
_STRIDE = 16  # image encoder output stride (the embedding grid is input_size / 16)
#: Memory channels: transformers' memory attention fixes its key/value width at 64.
_MEM_DIM = 64


def _arch(cfg: ModelCfg) -> dict[str, Any]:
    arch = {**_DEFAULTS, **cfg.arch}
    if arch["family"] not in ("sam2", "edgetam"):
        raise ValueError(
            f"{cfg.name!r}: arch family must be 'sam2' or 'edgetam', got {arch['family']!r}"
        )
    if arch["version"] not in ("2", "2.1"):
        raise ValueError(
            f"{cfg.name!r}: arch version must be '2' or '2.1', got {arch['version']!r}"
        )
    hidden = int(arch["hidden_size"])
    if hidden % _MEM_DIM or hidden == _MEM_DIM:
        # Object pointers are split into memory-width tokens, and the official memory encoder
        # has no output projection (no weights to load) when the two widths are equal.
        raise ValueError(
            f"{cfg.name!r}: hidden_size must be a multiple of {_MEM_DIM} larger than "
            f"{_MEM_DIM}, got {hidden}"
        )
    size = int(cfg.input_size or 1024)
    if size % (4 * _STRIDE):
        raise ValueError(f"{cfg.name!r}: input_size must be a multiple of 64, got {size}")
    arch["image_size"] = size
    return arch


def _grids(size: int) -> list[list[int]]:
    """Spatial sizes of the three feature levels the mask decoder reads (stride 4, 8, 16)."""
    return [[size // 4] * 2, [size // 8] * 2, [size // 16] * 2]


def sam2_config(cfg: ModelCfg) -> Any:
    """The transformers ``Sam2VideoConfig`` (or ``EdgeTamVideoConfig``) of a registry entry.

    Raises:
        ValueError: Unknown family or version, or an input size that is not a multiple of 64.
    """
    arch = _arch(cfg)
    size, hidden = arch["image_size"], int(arch["hidden_size"])
    sam21 = arch["version"] == "2.1"
    prompt = {"hidden_size": hidden, "image_size": size, "patch_size": _STRIDE}
    decoder = {
        "hidden_size": hidden,
        "mlp_dim": _DECODER_MLP,
        "num_attention_heads": _DECODER_HEADS,
        "iou_head_hidden_dim": _IOU_HIDDEN,
    }
    if arch["family"] == "edgetam":
        from transformers import EdgeTamVideoConfig, EdgeTamVisionConfig, TimmWrapperConfig

        # RepViT-M1 through timm (random init: no download), the official EdgeTAM sizes;
        # the spatial perceiver pools the memory into a (S/64)^2 grid of 2D latents.
        backbone = TimmWrapperConfig(
            architecture=str(arch.get("backbone", "repvit_m1")),
            model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
        )
        vision = EdgeTamVisionConfig(
            backbone_config=backbone,
            backbone_feature_sizes=_grids(size),
            fpn_hidden_size=hidden,
        )
        grid = size // (4 * _STRIDE)
        return EdgeTamVideoConfig(
            vision_config=vision,
            prompt_encoder_config=prompt,
            mask_decoder_config=decoder,
            image_size=size,
            enable_temporal_pos_encoding_for_object_pointers=sam21,
            enable_occlusion_spatial_embedding=sam21,
            memory_attention_rope_feat_sizes=[size // _STRIDE] * 2,
            memory_attention_rope_k_sizes=[grid, grid],
            perceiver_resampler_num_latents_2d=grid * grid,
        )
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig

    embed, heads = int(arch["embed_dim"]), int(arch["num_heads"])
    stages = [int(s) for s in arch["stages"]]
    dims = [embed * 2**i for i in range(len(stages))]
    backbone = Sam2HieraDetConfig(
        hidden_size=embed,
        num_attention_heads=heads,
        image_size=[size, size],
        blocks_per_stage=stages,
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[heads * 2**i for i in range(len(stages))],
        window_size_per_stage=[int(w) for w in arch["window_spec"]],
        global_attention_blocks=[int(b) for b in arch["global_att_blocks"]],
        window_positional_embedding_background_size=[
            int(s) for s in arch["window_pos_embed_bkg_spatial_size"]
        ],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=dims[::-1],
        backbone_feature_sizes=_grids(size),
        fpn_hidden_size=hidden,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=prompt,
        mask_decoder_config=decoder,
        image_size=size,
        num_maskmem=int(arch["num_maskmem"]),
        enable_temporal_pos_encoding_for_object_pointers=sam21,
        enable_occlusion_spatial_embedding=sam21,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=int(arch["memory_layers"]),
        memory_attention_feed_forward_hidden_size=int(arch["memory_ff_dim"]),
        memory_attention_rope_feat_sizes=[size // _STRIDE] * 2,
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=_MEM_DIM,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=4 * hidden,
    )


def build_sam2(cfg: ModelCfg) -> Any:
    """A random-init ``Sam2VideoModel`` (or ``EdgeTamVideoModel``) for ``cfg``, eval mode, CPU.

    Weights are loaded by the caller (:func:`textseg._hub.create_model`): the transformers
    layout as it is, the official ``.pt`` checkpoints through
    :func:`textseg.sam.modeling.convert_sam2.official_to_hf_state_dict`.

    Raises:
        ValueError: ``cfg.arch`` does not describe a SAM 2 family model.
    """
    config = sam2_config(cfg)
    if _arch(cfg)["family"] == "edgetam":
        from transformers import EdgeTamVideoModel

        model: Any = EdgeTamVideoModel(config)
    else:
        from transformers import Sam2VideoModel

        model = Sam2VideoModel(config)
    return model.eval()


def official_sam2_config(cfg: ModelCfg) -> dict[str, Any]:
    """The official ``sam2`` package's hydra model config for the same sizes as ``cfg``.

    ``hydra.utils.instantiate(omegaconf.OmegaConf.create(config))`` builds the reference
    ``SAM2VideoPredictor`` (random weights); ``config["_target_"]`` can be changed to
    ``sam2.modeling.sam2_base.SAM2Base``. The values not listed in ``cfg.arch`` are those of
    the published ``configs/sam2.1/sam2.1_hiera_*.yaml`` (``sam2_hiera_*.yaml`` for version 2),
    with the post-processing options that ``build_sam2_video_predictor`` adds (dynamic multimask
    fallback, binarised masks from clicks in the memory encoder) except hole filling.

    Raises:
        ValueError: An EdgeTAM entry (the official EdgeTAM code is not the ``sam2`` package).
    """
    arch = _arch(cfg)
    if arch["family"] != "sam2":
        raise ValueError(f"{cfg.name!r}: the official sam2 package builds SAM 2 models only")
    size, hidden, mem = arch["image_size"], int(arch["hidden_size"]), _MEM_DIM
    embed = int(arch["embed_dim"])
    stages = [int(s) for s in arch["stages"]]
    sam21 = arch["version"] == "2.1"

    def sine(feats: int) -> dict[str, Any]:
        return {
            "_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine",
            "num_pos_feats": feats,
            "normalize": True,
            "scale": None,
            "temperature": 10000,
        }

    def rope(**extra: Any) -> dict[str, Any]:
        return {
            "_target_": "sam2.modeling.sam.transformer.RoPEAttention",
            "rope_theta": 10000.0,
            "feat_sizes": [size // _STRIDE] * 2,
            "embedding_dim": hidden,
            "num_heads": 1,
            "downsample_rate": 1,
            "dropout": 0.1,
            **extra,
        }

    model: dict[str, Any] = {
        "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        "image_encoder": {
            "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder",
            "scalp": 1,
            "trunk": {
                "_target_": "sam2.modeling.backbones.hieradet.Hiera",
                "embed_dim": embed,
                "num_heads": int(arch["num_heads"]),
                "stages": stages,
                "global_att_blocks": [int(b) for b in arch["global_att_blocks"]],
                "window_pos_embed_bkg_spatial_size": [
                    int(s) for s in arch["window_pos_embed_bkg_spatial_size"]
                ],
                "window_spec": [int(w) for w in arch["window_spec"]],
            },
            "neck": {
                "_target_": "sam2.modeling.backbones.image_encoder.FpnNeck",
                "position_encoding": sine(hidden),
                "d_model": hidden,
                "backbone_channel_list": [embed * 2**i for i in range(len(stages))][::-1],
                "fpn_top_down_levels": [2, 3],
                "fpn_interp_model": "nearest",
            },
        },
        "memory_attention": {
            "_target_": "sam2.modeling.memory_attention.MemoryAttention",
            "d_model": hidden,
            "pos_enc_at_input": True,
            "num_layers": int(arch["memory_layers"]),
            "layer": {
                "_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer",
                "activation": "relu",
                "dim_feedforward": int(arch["memory_ff_dim"]),
                "dropout": 0.1,
                "pos_enc_at_attn": False,
                "d_model": hidden,
                "pos_enc_at_cross_attn_keys": True,
                "pos_enc_at_cross_attn_queries": False,
                "self_attention": rope(),
                "cross_attention": rope(rope_k_repeat=True, kv_in_dim=mem),
            },
        },
        "memory_encoder": {
            "_target_": "sam2.modeling.memory_encoder.MemoryEncoder",
            "out_dim": mem,
            "in_dim": hidden,
            "position_encoding": sine(mem),
            "mask_downsampler": {
                "_target_": "sam2.modeling.memory_encoder.MaskDownSampler",
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
                "embed_dim": hidden,
            },
            "fuser": {
                "_target_": "sam2.modeling.memory_encoder.Fuser",
                "num_layers": 2,
                "layer": {
                    "_target_": "sam2.modeling.memory_encoder.CXBlock",
                    "dim": hidden,
                    "kernel_size": 7,
                    "padding": 3,
                    "layer_scale_init_value": 1e-6,
                    "use_dwconv": True,
                },
            },
        },
        "num_maskmem": int(arch["num_maskmem"]),
        "image_size": size,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True,
        "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": True,
        "multimask_output_in_sam": True,
        "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True,
        "add_tpos_enc_to_obj_ptrs": sam21,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False,
        # As build_sam2_video_predictor sets it (transformers binarizes the same way);
        # its fill_hole_area needs the CUDA extension and is left at 0 (transformers has none).
        "binarize_mask_from_pts_for_mem_enc": True,
        "sam_mask_decoder_extra_args": {
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
    }
    if sam21:
        model.update(
            no_obj_embed_spatial=True,
            proj_tpos_enc_in_obj_ptrs=True,
            use_signed_tpos_enc_to_obj_ptrs=True,
        )
    return model


def build_official_sam2(cfg: ModelCfg, *, video: bool = True) -> Any:
    """The official ``sam2`` package's model with ``cfg``'s sizes and random weights: the
    reference the parity tests and benchmarks compare against (``pip install sam2``, which
    brings hydra-core and iopath; not a dependency of textseg itself).

    Args:
        cfg: A SAM 2 registry entry.
        video: Build ``SAM2VideoPredictor`` (True) or the bare ``SAM2Base`` (False; what
            ``SAM2ImagePredictor`` wraps).

    Raises:
        ImportError: The ``sam2`` package is not installed.
    """
    try:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the official SAM 2 reference needs the sam2 package: pip install sam2 "
            "(SAM2_BUILD_CUDA=0 on machines without CUDA)"
        ) from err
    config = official_sam2_config(cfg)
    if not video:
        config["_target_"] = "sam2.modeling.sam2_base.SAM2Base"
    return instantiate(OmegaConf.create(config), _recursive_=True).eval()
