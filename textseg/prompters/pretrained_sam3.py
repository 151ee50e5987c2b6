"""Registered SAM 3 concept models (task ``"sam3"``: text and exemplar boxes -> every instance)
and their tiny random-init variants, for :class:`~textseg.prompters.sam3.Sam3Prompter`.

- ``sam3``: Meta's SAM 3 (``facebook/sam3``, gated, SAM License; ~840M parameters: the
  1008 px ViT, a CLIP text encoder, the DETR-style detector with its presence head and the mask
  head). The file also holds the tracker (``sam3-tracker``); each model takes its part.
- ``sam3-litetext-s0``: SAM3-LiteText, SAM 3 with the text encoder distilled into MobileCLIP-S0
  (42.5M instead of 353M text parameters), as transformers' documentation loads it
  (``yonigozlan/sam3-litetext-s0``). Its weights derive from SAM 3's, so the SAM License
  applies. The sizes are transformers' ``Sam3LiteTextConfig`` defaults, which its documentation
  gives as this checkpoint's; the S1 and L variants are not registered (their text-encoder sizes
  could not be checked offline).
- ``sam3-video`` (task ``"sam3-video"``): the same checkpoint as one ``transformers.
  Sam3VideoModel``: the concept model detects every prompt on every frame, SAM 3's video
  tracker (memory attention, memory encoder, object pointers) carries the objects, its own
  association and presence score decide births and matches. Used by
  :class:`textseg.video.sam3_video.Sam3VideoTracker` (``textseg track --preset sam3``).

No sha256 is published for either.
"""

from __future__ import annotations

from textseg._registry import Weights, register_model
from textseg.sam.modeling.sam3 import (
    SAM3_MEAN,
    SAM3_STD,
    build_sam3,
    build_sam3_lite_text,
    build_sam3_video,
    load_sam3,
    load_sam3_video,
)
from textseg.sam.pretrained_sam3 import (
    SAM3_DECODER,
    SAM3_DECODER_TINY,
    SAM3_LICENSE,
    SAM3_VISION,
    SAM3_VISION_TINY,
    SAM3_WEIGHTS,
)

_TEXT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    max_position_embeddings=32,
    projection_dim=512,
    hidden_act="gelu",  # SAM 3's; CLIP's own default is quick_gelu
)
_TEXT_TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=32,
    projection_dim=32,
    hidden_act="gelu",
)
_LITE_TEXT_S0 = dict(
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    projection_dim=512,
)
_LITE_TEXT_TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,  # RepMixer first and last, one transformer layer between
    num_attention_heads=2,
    max_position_embeddings=32,
    projection_dim=32,
)
_HEADS = dict(
    hidden_size=256,
    num_heads=8,
    ffn_size=2048,
    geometry_layers=3,
    encoder_layers=6,
    decoder_layers=6,
    num_queries=200,
)
_HEADS_TINY = dict(
    hidden_size=32,
    num_heads=2,
    ffn_size=64,
    geometry_layers=1,
    encoder_layers=1,
    decoder_layers=2,
    num_queries=12,
)
#: SAM 3's video memory (transformers' ``Sam3TrackerVideoConfig`` defaults: 4 memory-attention
#: layers, 64-channel memories); the tiny one keeps every path with one layer.
_MEMORY = dict(
    attention_layers=4, attention_ffn_size=2048, encoder_channels=64, fuser_ffn_size=1024
)
_MEMORY_TINY = dict(
    attention_layers=1, attention_ffn_size=64, encoder_channels=64, fuser_ffn_size=64
)
#: transformers' memory attention reads 64-channel memories whatever the config says, and an
#: object pointer must be wider (transformers splits it into memory-width tokens only then): the
#: tiny video model is 128 wide where the tiny image model is 32 (same depths).
_VIDEO_TINY_WIDTH = 128
_KW = dict(task="sam3", loader=load_sam3, mean=SAM3_MEAN, std=SAM3_STD)

register_model(
    "sam3",
    weights=SAM3_WEIGHTS,
    test_variant="sam3-tiny-test",
    input_size=1008,
    description="SAM 3: text/exemplar concepts -> all instances, with presence score (~840M)",
    vision=SAM3_VISION,
    text=_TEXT,
    heads=_HEADS,
    **_KW,
)(build_sam3)
register_model(
    "sam3-litetext-s0",
    weights=Weights(
        filename="sam3-litetext-s0",
        hf_repo="yonigozlan/sam3-litetext-s0",
        hf_files=("model.safetensors",),
        license=SAM3_LICENSE,
    ),
    test_variant="sam3-litetext-tiny-test",
    input_size=1008,
    description="SAM3-LiteText S0: SAM 3 with a MobileCLIP-S0 text encoder",
    vision=SAM3_VISION,
    text=_LITE_TEXT_S0,
    heads=_HEADS,
    **_KW,
)(build_sam3_lite_text)
register_model(
    "sam3-tiny-test",
    test=True,
    input_size=112,
    description="random-init tiny SAM 3 for tests",
    vision=SAM3_VISION_TINY,
    text=_TEXT_TINY,
    heads=_HEADS_TINY,
    **_KW,
)(build_sam3)
register_model(
    "sam3-litetext-tiny-test",
    test=True,
    input_size=112,
    description="random-init tiny SAM3-LiteText for tests",
    vision=SAM3_VISION_TINY,
    text=_LITE_TEXT_TINY,
    heads=_HEADS_TINY,
    **_KW,
)(build_sam3_lite_text)
_VIDEO_KW = dict(task="sam3-video", loader=load_sam3_video, mean=SAM3_MEAN, std=SAM3_STD)
register_model(
    "sam3-video",
    weights=SAM3_WEIGHTS,
    test_variant="sam3-video-tiny-test",
    input_size=1008,
    description="SAM 3 video: text concepts detected and tracked jointly, one session (~840M)",
    vision=SAM3_VISION,
    text=_TEXT,
    heads=_HEADS,
    decoder=SAM3_DECODER,
    memory=_MEMORY,
    **_VIDEO_KW,
)(build_sam3_video)
register_model(
    "sam3-video-tiny-test",
    test=True,
    input_size=112,
    description="random-init tiny SAM 3 video model for tests",
    vision={**SAM3_VISION_TINY, "fpn_hidden_size": _VIDEO_TINY_WIDTH},
    text=_TEXT_TINY,
    heads={**_HEADS_TINY, "hidden_size": _VIDEO_TINY_WIDTH},
    decoder={**SAM3_DECODER_TINY, "hidden_size": _VIDEO_TINY_WIDTH},
    memory=_MEMORY_TINY,
    **_VIDEO_KW,
)(build_sam3_video)
