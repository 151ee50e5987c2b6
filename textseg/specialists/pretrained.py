"""Registered specialist architectures (task ``"specialist"``) and their tiny test variants.

A specialist is a small, fast model trained by ``textseg train`` on a COCO dataset. Its head is
sized to the dataset's classes when training starts, so what the registry describes, builds and
loads is the part that has published weights: the **backbone**. ``create_model(name)`` returns
that backbone with its pretrained weights (resolved as for every other model: ``checkpoint=``
> ``TEXTSEG_WEIGHTS`` > hub cache > download) and :mod:`textseg.specialists.nets` builds the whole
specialist around it.

- SegFormer (semantic, the default): transformers ``SegformerModel``, the MiT encoders
  ``nvidia/mit-b0`` .. ``mit-b5`` pre-trained on ImageNet-1k. The transformers code is
  Apache-2.0; NVIDIA published the MiT weights under its own licence ("other" on the hub: the
  NVIDIA Source Code License for SegFormer, research and non-commercial use). Those checkpoints
  are ``SegformerForImageClassification`` state dicts: the loader keeps the ``segformer.``
  encoder keys and loads them strictly (the ImageNet classifier is dropped).
- Mask R-CNN (instance): torchvision's ResNet-50 (BSD-3-Clause), ImageNet weights
  ``IMAGENET1K_V1``, the backbone torchvision's own ``maskrcnn_resnet50_fpn`` starts from.
- YOLO-seg (instance, optional, ``pip install 'textseg[yolo]'``): ultralytics' YOLO11 segmentation
  models, **AGPL-3.0**. Built from ultralytics' bundled model YAMLs with random weights. The
  published ``yolo11*-seg.pt`` files are pickled Python objects, which textseg does not
  unpickle (it loads only tensors); a state dict of the same architecture (safetensors or a
  plain torch file) loads with ``checkpoint=PATH``. Its entries are "unpublished" for that
  reason.

The tiny variants (``*-tiny-test``) are a few thousand to a few hundred thousand parameters:
``textseg train --tiny`` and the tests train them offline in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from textseg._registry import ModelCfg, Weights, register_model

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_resnet", "build_segformer_encoder"]

#: ImageNet statistics on the 0-255 scale (both backbones were pre-trained with them).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

_SEGFORMER_KEYS = ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "num_channels")


def build_segformer_encoder(cfg: ModelCfg) -> Any:
    """A transformers ``SegformerModel`` (the MiT encoder) with random weights."""
    from transformers import SegformerConfig, SegformerModel

    return SegformerModel(SegformerConfig(**segformer_config_kwargs(cfg.arch)))


def segformer_config_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    """``SegformerConfig`` keyword arguments from a registry entry's sizes."""
    kwargs = {k: arch[k] for k in _SEGFORMER_KEYS if k in arch}
    kwargs["decoder_hidden_size"] = arch["decoder_hidden_size"]
    kwargs["num_encoder_blocks"] = len(arch["depths"])
    kwargs["patch_sizes"] = arch.get("patch_sizes", [7, 3, 3, 3][: len(arch["depths"])])
    kwargs["strides"] = arch.get("strides", [4, 2, 2, 2][: len(arch["depths"])])
    kwargs["mlp_ratios"] = arch.get("mlp_ratios", [4] * len(arch["depths"]))
    return kwargs


#: transformers 5 renamed SegFormer's modules; the hub's MiT checkpoints keep the old names.
#: The same renaming transformers applies when it loads them (its ``conversion_mapping``).
_MIT_RENAMES = (
    (r"^encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"^encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"^encoder\.layer_norm\.(\d+)", r"stages.\1.layer_norm"),
    (r"attention\.self\.query", "attention.q_proj"),
    (r"attention\.self\.key", "attention.k_proj"),
    (r"attention\.self\.value", "attention.v_proj"),
    (r"attention\.self\.sr", "attention.sequence_reduction.sequence_reduction"),
    (r"attention\.self\.layer_norm", "attention.sequence_reduction.layer_norm"),
    (r"attention\.output\.dense", "attention.o_proj"),
    (r"mlp\.dense1", "mlp.fc1"),
    (r"mlp\.dense2", "mlp.fc2"),
    (r"layer_norm_1", "layernorm_before"),
    (r"layer_norm_2", "layernorm_after"),
)


def convert_mit_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ``nvidia/mit-b*`` checkpoint (``SegformerForImageClassification``, transformers 4
    names) -> the state dict of transformers 5's ``SegformerModel``: the ``segformer.`` keys
    renamed, the ImageNet ``classifier.*`` dropped. Keys already in the new layout pass."""
    import re

    if any(k.startswith("segformer.") for k in state):
        state = {k[len("segformer.") :]: v for k, v in state.items() if k.startswith("segformer.")}
    out = {}
    for key, value in state.items():
        for pattern, repl in _MIT_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_mit_encoder(model: Any, path: Path) -> None:
    """Load an ``nvidia/mit-b*`` checkpoint into the encoder, strictly
    (:func:`convert_mit_state_dict` first)."""
    from textseg._hub import load_state_dict, load_strict

    load_strict(model, convert_mit_state_dict(load_state_dict(path)), "SegFormer MiT encoder")


def build_resnet(cfg: ModelCfg) -> Any:
    """A torchvision ``ResNet`` with random weights: ``block`` ``"bottleneck"`` or ``"basic"``,
    ``layers`` blocks per stage."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    block = {"bottleneck": Bottleneck, "basic": BasicBlock}[cfg.arch["block"]]
    return ResNet(block, list(cfg.arch["layers"]), width_per_group=cfg.arch.get("width", 64))


def build_yolo_seg(cfg: ModelCfg) -> Any:
    """An ultralytics ``SegmentationModel`` built from its bundled YAML, random weights.

    Raises:
        ImportError: ultralytics is not installed (``pip install 'textseg[yolo]'``; AGPL-3.0).
    """
    from textseg.specialists.yolo import build_segmentation_model

    return build_segmentation_model(cfg.arch["yaml"], cfg.arch.get("scale"), nc=1)


def _mit(variant: str) -> Weights:
    return Weights(
        filename=f"mit-{variant}.bin",
        hf_repo=f"nvidia/mit-{variant}",
        hf_files=("pytorch_model.bin",),
        license="other (NVIDIA Source Code License for SegFormer: research, non-commercial)",
    )


_MIT_B0 = dict(hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256)
_MIT_WIDE = dict(hidden_sizes=[64, 128, 320, 512])
_SEGFORMER_SIZES: dict[str, dict[str, Any]] = {
    "b0": dict(_MIT_B0, depths=[2, 2, 2, 2], params="3.7M"),
    "b1": dict(_MIT_WIDE, depths=[2, 2, 2, 2], decoder_hidden_size=256, params="13.7M"),
    "b2": dict(_MIT_WIDE, depths=[3, 4, 6, 3], decoder_hidden_size=768, params="27.4M"),
    "b3": dict(_MIT_WIDE, depths=[3, 4, 18, 3], decoder_hidden_size=768, params="47.3M"),
    "b4": dict(_MIT_WIDE, depths=[3, 8, 27, 3], decoder_hidden_size=768, params="64.1M"),
    "b5": dict(_MIT_WIDE, depths=[3, 6, 40, 3], decoder_hidden_size=768, params="84.7M"),
}
_SEGFORMER_COMMON: dict[str, Any] = dict(
    task="specialist",
    loader=load_mit_encoder,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    num_attention_heads=[1, 2, 5, 8],
    sr_ratios=[8, 4, 2, 1],
    kind="semantic",
    family="segformer",
)
for _variant, _sizes in _SEGFORMER_SIZES.items():
    _sizes = dict(_sizes)
    _params = _sizes.pop("params")
    register_model(
        f"segformer-{_variant}",
        weights=_mit(_variant),
        test_variant="segformer-tiny-test",
        input_size=512,
        description=f"SegFormer-{_variant.upper()} semantic specialist: MiT encoder "
        f"(ImageNet-1k) + all-MLP head, {_params} (transformers, Apache-2.0 code)",
        **_sizes,
        **_SEGFORMER_COMMON,
    )(build_segformer_encoder)

register_model(
    "segformer-tiny-test",
    test=True,
    input_size=64,
    description="random-init tiny SegFormer semantic specialist for tests and --tiny",
    hidden_sizes=[8, 16, 24, 32],
    depths=[1, 1, 1, 1],
    decoder_hidden_size=16,
    **dict(_SEGFORMER_COMMON, num_attention_heads=[1, 1, 1, 1]),
)(build_segformer_encoder)

RESNET50_IMAGENET = Weights(
    filename="resnet50-0676ba61.pth",
    url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
    license="BSD-3-Clause (torchvision)",
)

register_model(
    "maskrcnn-r50-fpn",
    weights=RESNET50_IMAGENET,
    test_variant="maskrcnn-tiny-test",
    input_size=800,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    description="Mask R-CNN instance specialist: ResNet-50 (ImageNet) + FPN, 44M "
    "(torchvision, BSD-3-Clause)",
    task="specialist",
    kind="instance",
    family="maskrcnn",
    block="bottleneck",
    layers=[3, 4, 6, 3],
    fpn_channels=256,
    box_hidden=1024,
    mask_layers=[256, 256, 256, 256],
    max_size=1333,
)(build_resnet)

register_model(
    "maskrcnn-tiny-test",
    test=True,
    input_size=64,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    description="random-init tiny Mask R-CNN instance specialist for tests and --tiny",
    task="specialist",
    kind="instance",
    family="maskrcnn",
    block="basic",
    layers=[1, 1, 1, 1],
    width=64,
    fpn_channels=16,
    box_hidden=32,
    mask_layers=[16],
    max_size=96,
)(build_resnet)

_YOLO_COMMON: dict[str, Any] = dict(
    task="specialist", kind="instance", family="yolo", mean=(0.0,) * 3, std=(255.0,) * 3
)
for _scale, _params in (("n", "2.9M"), ("s", "10.1M"), ("m", "22.4M")):
    register_model(
        f"yolo11{_scale}-seg",
        test_variant="yolo-seg-tiny-test",
        input_size=640,
        description=f"YOLO11{_scale}-seg instance specialist, {_params} (ultralytics, "
        f"AGPL-3.0; optional extra textseg[yolo])",
        yaml="yolo11-seg.yaml",
        scale=_scale,
        **_YOLO_COMMON,
    )(build_yolo_seg)

register_model(
    "yolo-seg-tiny-test",
    test=True,
    input_size=64,
    description="random-init YOLO11n-seg at a 64-pixel input for tests and --tiny (AGPL-3.0)",
    yaml="yolo11-seg.yaml",
    scale="n",
    **_YOLO_COMMON,
)(build_yolo_seg)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
