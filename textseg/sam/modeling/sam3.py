"""SAM 3 through transformers: builders and checkpoint converters for the concept model
(``Sam3Model``, ``Sam3LiteTextModel``) and the tracker (``Sam3TrackerModel``).

The architectures are built in code from the sizes in ``cfg.arch`` (no ``config.json`` is read):

- ``vision``: the ViT backbone (``hidden_size``, ``intermediate_size``, ``num_hidden_layers``,
  ``num_attention_heads``, ``image_size``, ``patch_size``, ``window_size``,
  ``global_attn_indexes``, ``pretrain_image_size``) and ``fpn_hidden_size``;
- ``text``: the CLIP text encoder (``Sam3Model``) or the MobileCLIP one (``Sam3LiteTextModel``);
- ``heads``: the DETR part (``hidden_size``, ``num_heads``, ``ffn_size``, ``geometry_layers``,
  ``encoder_layers``, ``decoder_layers``, ``num_queries``);
- ``decoder``: the tracker's SAM decoder (``hidden_size``, ``mlp_dim``, ``num_heads``,
  ``iou_head_hidden_dim``);
- ``memory``: the video tracker's memory (``attention_layers``, ``attention_ffn_size``,
  ``encoder_channels``: the memory width, ``fuser_ffn_size``), for ``Sam3VideoModel``.

The published ``facebook/sam3`` ``model.safetensors`` holds the whole SAM 3 video model:
``detector_model.*`` (the concept model), ``tracker_neck.*`` and ``tracker_model.*`` (the
tracker, whose ViT is the detector's: one backbone, two necks). :func:`sam3_detector_state_dict`
and :func:`sam3_tracker_state_dict` take each model's part of that file (the renaming
transformers applies in ``from_pretrained``) so that textseg's strict loader sees exactly the
model's keys. The text tokenizer of every SAM 3 checkpoint is CLIP's BPE (49408 tokens), built
offline from the merge list open_clip ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from textseg._registry import ModelCfg

__all__ = [
    "SAM3_MEAN",
    "SAM3_STD",
    "Sam3Net",
    "build_sam3",
    "build_sam3_lite_text",
    "build_sam3_tracker",
    "build_sam3_video",
    "sam3_config",
    "sam3_detector_state_dict",
    "sam3_tracker_state_dict",
    "sam3_video_config",
]

#: SAM 3's pixel normalisation on the 0-255 scale (``(x / 255 - 0.5) / 0.5``).
SAM3_MEAN = (127.5, 127.5, 127.5)
SAM3_STD = (127.5, 127.5, 127.5)

#: Tracker parts of the video checkpoint that an image tracker has no use for (memory, object
#: pointers, temporal encodings): dropped, as transformers' ``Sam3TrackerModel`` ignores them.
_TRACKER_VIDEO_ONLY = (
    "memory_",
    "mask_downsample",
    "object_pointer_proj",
    "temporal_positional_encoding_projection_layer",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "occlusion_spatial_embedding_parameter",
)


@dataclass
class Sam3Net:
    """A built SAM 3 concept model and its tokenizer.

    Attributes:
        model: ``transformers.Sam3Model``, ``Sam3LiteTextModel`` or ``Sam3VideoModel``
            (eval mode).
        tokenizer: CLIP's BPE tokenizer (transformers ``CLIPTokenizer``).
        name: Registry name.
    """

    model: Any
    tokenizer: Any
    name: str

    @property
    def image_size(self) -> int:
        config = getattr(self.model.config, "detector_config", self.model.config)
        return int(config.vision_config.backbone_config.image_size)

    @property
    def context_length(self) -> int:
        """Tokens per prompt, padded (the transformers ``Sam3Processor`` pads to 32)."""
        return 32

    def eval(self) -> Sam3Net:
        self.model.eval()
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()


def _vision_config(vision: Mapping[str, Any]) -> dict[str, Any]:
    grid = int(vision["image_size"]) // int(vision["patch_size"])
    backbone = {k: v for k, v in vision.items() if k != "fpn_hidden_size"}
    backbone["global_attn_indexes"] = [int(i) for i in backbone["global_attn_indexes"]]
    return {
        "model_type": "sam3_vision_model",
        "backbone_config": {"model_type": "sam3_vit_model", **backbone},
        "fpn_hidden_size": int(vision["fpn_hidden_size"]),
        "backbone_feature_sizes": [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
    }


def _heads_configs(heads: Mapping[str, Any]) -> dict[str, Any]:
    common = {
        "hidden_size": int(heads["hidden_size"]),
        "num_attention_heads": int(heads["num_heads"]),
        "intermediate_size": int(heads["ffn_size"]),
    }
    return {
        "geometry_encoder_config": {**common, "num_layers": int(heads["geometry_layers"])},
        "detr_encoder_config": {**common, "num_layers": int(heads["encoder_layers"])},
        "detr_decoder_config": {
            **common,
            "num_layers": int(heads["decoder_layers"]),
            "num_queries": int(heads["num_queries"]),
        },
        "mask_decoder_config": {
            "hidden_size": int(heads["hidden_size"]),
            "num_attention_heads": int(heads["num_heads"]),
        },
    }


def _tokenizer() -> Any:
    from textseg.detectors.tokenizers import clip_tokenizer

    return clip_tokenizer(pad_token="<|endoftext|>")


def sam3_config(cfg: ModelCfg) -> Any:
    """The ``transformers.Sam3Config`` of ``cfg`` (``vision``, ``text``, ``heads``).

    The text encoder is CLIP's with SAM 3's ``gelu`` activation: a ``text_config`` given as a
    dict starts from ``CLIPTextConfig``'s defaults (``quick_gelu``), not from the SAM 3 defaults
    ``Sam3Config`` applies when none is given, so the activation is set here (a strict load
    cannot catch a wrong activation, it has no weights).
    """
    from transformers import Sam3Config

    arch = cfg.arch
    text = {"model_type": "clip_text_model", "vocab_size": 49408, "hidden_act": "gelu"}
    return Sam3Config(
        vision_config=_vision_config(arch["vision"]),
        text_config={**text, **arch["text"]},
        **_heads_configs(arch["heads"]),
    )


def build_sam3(cfg: ModelCfg) -> Sam3Net:
    """A random-init ``transformers.Sam3Model`` for ``cfg`` (:func:`sam3_config`) with CLIP's
    tokenizer, eval mode, CPU."""
    from transformers import Sam3Model

    return Sam3Net(Sam3Model(sam3_config(cfg)).eval(), _tokenizer(), cfg.name)


def build_sam3_lite_text(cfg: ModelCfg) -> Sam3Net:
    """A random-init ``transformers.Sam3LiteTextModel`` (SAM 3 with a MobileCLIP text encoder)
    for ``cfg``, with CLIP's tokenizer, eval mode, CPU."""
    from transformers import Sam3LiteTextConfig, Sam3LiteTextModel

    arch = cfg.arch
    config = Sam3LiteTextConfig(
        vision_config=_vision_config(arch["vision"]),
        text_config={"vocab_size": 49408, **arch["text"]},
        **_heads_configs(arch["heads"]),
    )
    return Sam3Net(Sam3LiteTextModel(config).eval(), _tokenizer(), cfg.name)


def _tracker_parts(vision: Mapping[str, Any], decoder: Mapping[str, Any]) -> dict[str, Any]:
    """The vision, prompt-encoder and mask-decoder configs of SAM 3's tracker (image or video)."""
    return {
        "vision_config": _vision_config(vision),
        "prompt_encoder_config": {
            "hidden_size": int(decoder["hidden_size"]),
            "image_size": int(vision["image_size"]),
            "patch_size": int(vision["patch_size"]),
        },
        "mask_decoder_config": {
            "hidden_size": int(decoder["hidden_size"]),
            "mlp_dim": int(decoder["mlp_dim"]),
            "num_attention_heads": int(decoder["num_heads"]),
            "iou_head_hidden_dim": int(decoder["iou_head_hidden_dim"]),
        },
    }


def build_sam3_tracker(cfg: ModelCfg) -> Any:
    """A random-init ``transformers.Sam3TrackerModel`` (SAM 3's promptable visual segmentation:
    points, boxes, masks) for ``cfg`` (``vision``, ``decoder``), eval mode, CPU."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    arch = cfg.arch
    config = Sam3TrackerConfig(**_tracker_parts(arch["vision"], arch["decoder"]))
    return Sam3TrackerModel(config).eval()


def sam3_video_config(cfg: ModelCfg) -> Any:
    """The ``transformers.Sam3VideoConfig`` of ``cfg``: the concept model of
    :func:`sam3_config` as the detector and SAM 3's video tracker (``vision``, ``decoder``,
    ``memory``), with the detection, association and hotstart settings at transformers'
    defaults (those of ``facebook/sam3``)."""
    from transformers import Sam3TrackerVideoConfig, Sam3VideoConfig

    arch = cfg.arch
    vision, memory = arch["vision"], arch["memory"]
    grid = int(vision["image_size"]) // int(vision["patch_size"])
    fpn = int(vision["fpn_hidden_size"])
    tracker = Sam3TrackerVideoConfig(
        image_size=int(vision["image_size"]),
        **_tracker_parts(vision, arch["decoder"]),
        memory_attention_hidden_size=fpn,
        memory_attention_num_layers=int(memory["attention_layers"]),
        memory_attention_feed_forward_hidden_size=int(memory["attention_ffn_size"]),
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=fpn,
        memory_encoder_output_channels=int(memory["encoder_channels"]),
        mask_downsampler_embed_dim=fpn,
        memory_fuser_embed_dim=fpn,
        memory_fuser_intermediate_dim=int(memory["fuser_ffn_size"]),
    )
    return Sam3VideoConfig(
        detector_config=sam3_config(cfg).to_dict(),
        tracker_config=tracker.to_dict(),
        low_res_mask_size=4 * grid,
    )


def build_sam3_video(cfg: ModelCfg) -> Sam3Net:
    """A random-init ``transformers.Sam3VideoModel`` (detector, tracker and their shared ViT)
    for ``cfg`` (:func:`sam3_video_config`), with CLIP's tokenizer, eval mode, CPU."""
    from transformers import Sam3VideoModel

    return Sam3Net(Sam3VideoModel(sam3_video_config(cfg)).eval(), _tokenizer(), cfg.name)


def _drop_buffers(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Remove entries of buffers the model recomputes (RoPE frequencies, position ids) that an
    older save may hold; they are not part of ``model.state_dict()``."""
    recomputed = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    for key in recomputed & set(state_dict):
        del state_dict[key]


def sam3_detector_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """The concept model's part of a SAM 3 checkpoint, in ``Sam3Model`` key names.

    A video-model file (``facebook/sam3``: ``detector_model.*``, ``tracker_*``) gives its
    ``detector_model.*`` entries with the prefix removed; a file saved from a ``Sam3Model`` (no
    prefix) is taken as it is.

    Args:
        state_dict: The checkpoint's tensors.
        model: When given, entries of buffers it recomputes are dropped.
    """
    prefix = "detector_model."
    if any(k.startswith(prefix) for k in state_dict):
        out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    else:
        out = dict(state_dict)
    if model is not None:
        _drop_buffers(out, model)
    return out


def sam3_tracker_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """The tracker's part of a SAM 3 checkpoint, in ``Sam3TrackerModel`` key names.

    From a video-model file: the detector's ViT (``detector_model.vision_encoder.backbone.*``,
    shared by both models), the tracker's own neck (``tracker_neck.*`` ->
    ``vision_encoder.neck.*``) and ``tracker_model.*`` without its prefix, less the video-only
    parts (memory, object pointers). A file saved from a ``Sam3TrackerModel`` is taken as it is.
    """
    if not any(k.startswith(("tracker_model.", "tracker_neck.")) for k in state_dict):
        out = dict(state_dict)
    else:
        out = {}
        backbone = "detector_model.vision_encoder.backbone."
        for key, value in state_dict.items():
            if key.startswith(backbone):
                out["vision_encoder.backbone." + key[len(backbone) :]] = value
            elif key.startswith("tracker_neck."):
                out["vision_encoder.neck." + key[len("tracker_neck.") :]] = value
            elif key.startswith("tracker_model."):
                name = key[len("tracker_model.") :]
                if not name.startswith(_TRACKER_VIDEO_ONLY):
                    out[name] = value
    if model is not None:
        _drop_buffers(out, model)
    return out


def load_sam3(net: Sam3Net, path: Any) -> None:
    """Registry loader of the concept models: the checkpoint (file, or folder holding
    ``model.safetensors``) converted by :func:`sam3_detector_state_dict`, loaded strictly.

    Raises:
        StateDictError: The weights do not fit the model (missing, unexpected, mis-shaped keys).
    """
    from textseg._hub import load_state_dict, load_strict

    state_dict = sam3_detector_state_dict(load_state_dict(path), net.model)
    load_strict(net.model, state_dict, net.name)


def load_sam3_tracker(model: torch.nn.Module, path: Any) -> None:
    """Registry loader of the tracker: :func:`sam3_tracker_state_dict`, loaded strictly."""
    from textseg._hub import load_state_dict, load_strict

    state_dict = sam3_tracker_state_dict(load_state_dict(path), model)
    load_strict(model, state_dict, type(model).__name__)


def load_sam3_video(net: Sam3Net, path: Any) -> None:
    """Registry loader of the video model: the published file is ``Sam3VideoModel``'s own
    layout (``detector_model.*``, ``tracker_neck.*``, ``tracker_model.*``), loaded strictly.

    Raises:
        StateDictError: The weights do not fit the model (missing, unexpected, mis-shaped keys).
    """
    from textseg._hub import load_state_dict, load_strict

    state_dict = dict(load_state_dict(path))
    _drop_buffers(state_dict, net.model)
    load_strict(net.model, state_dict, net.name)
