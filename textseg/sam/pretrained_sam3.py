"""Registered SAM 3 tracker checkpoints (task ``"sam"``) and their tiny random-init variants.

``Sam3TrackerModel`` is SAM 3's promptable visual segmentation (points, boxes, masks: what SAM 1
and 2 do), run by the SAM core through :class:`~textseg.sam.backends.sam3.Sam3TrackerBackend`.
Its weights are part of the gated ``facebook/sam3`` checkpoint (the SAM License, not Apache:
accept it on the model page and log in with ``huggingface-cli login`` before the download),
converted on load by :func:`~textseg.sam.modeling.sam3.sam3_tracker_state_dict`. No sha256 is
published.

The sizes below are the published ones (transformers' ``Sam3Config`` / ``Sam3TrackerConfig``
defaults, which describe ``facebook/sam3``); the SAM 3 concept models in
:mod:`textseg.prompters.pretrained_sam3` share ``SAM3_VISION``.
"""

from __future__ import annotations

from textseg._registry import Weights, register_model
from textseg.sam.modeling.sam3 import SAM3_MEAN, SAM3_STD, build_sam3_tracker, load_sam3_tracker

__all__ = [
    "SAM3_DECODER",
    "SAM3_DECODER_TINY",
    "SAM3_LICENSE",
    "SAM3_VISION",
    "SAM3_VISION_TINY",
    "SAM3_WEIGHTS",
]

#: The licence of every SAM 3 checkpoint (Meta's "SAM License"; no SPDX id).
SAM3_LICENSE = "SAM License"

#: The gated ``facebook/sam3`` checkpoint (detector and tracker in one file).
SAM3_WEIGHTS = Weights(
    filename="sam3",
    hf_repo="facebook/sam3",
    hf_files=("model.safetensors",),
    license=SAM3_LICENSE,
)

#: SAM 3's ViT-L-like backbone (1008 px input, 14 px patches, 72x72 tokens) and FPN width.
SAM3_VISION = dict(
    hidden_size=1024,
    intermediate_size=4736,
    num_hidden_layers=32,
    num_attention_heads=16,
    image_size=1008,
    patch_size=14,
    window_size=24,
    global_attn_indexes=(7, 15, 23, 31),
    pretrain_image_size=336,
    fpn_hidden_size=256,
)
#: Same code paths in milliseconds: windowed and global RoPE attention, tiled position
#: embeddings, the 4-level FPN (8x8 tokens at 112 px).
SAM3_VISION_TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=112,
    patch_size=14,
    window_size=4,
    global_attn_indexes=(1,),
    pretrain_image_size=56,
    fpn_hidden_size=32,
)
#: The tracker's SAM mask decoder (also the video tracker's).
SAM3_DECODER = dict(hidden_size=256, mlp_dim=2048, num_heads=8, iou_head_hidden_dim=256)
SAM3_DECODER_TINY = dict(hidden_size=32, mlp_dim=64, num_heads=2, iou_head_hidden_dim=32)
_KW = dict(task="sam", loader=load_sam3_tracker, mean=SAM3_MEAN, std=SAM3_STD)

register_model(
    "sam3-tracker",
    weights=SAM3_WEIGHTS,
    test_variant="sam3-tracker-tiny-test",
    input_size=1008,
    description="SAM 3 tracker: points/boxes -> masks (ViT 1008 px, shares SAM 3's backbone)",
    vision=SAM3_VISION,
    decoder=SAM3_DECODER,
    **_KW,
)(build_sam3_tracker)
register_model(
    "sam3-tracker-tiny-test",
    test=True,
    input_size=112,
    description="random-init tiny SAM 3 tracker for tests",
    vision=SAM3_VISION_TINY,
    decoder=SAM3_DECODER_TINY,
    **_KW,
)(build_sam3_tracker)
