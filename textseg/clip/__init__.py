"""CLIP encoders shared by the labeler and the CLIP prompters.

:class:`ClipEncoder` embeds texts and images in CLIP's joint space (open_clip or transformers
models behind one interface) and computes dense MaskCLIP patch features;
:func:`load_clip` builds a registered model (``textseg.list_models("clip")``).
"""

from textseg.clip.encoders import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ClipEncoder,
    DenseFeatures,
    HfClipEncoder,
    OpenClipEncoder,
    load_clip,
)

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ClipEncoder",
    "DenseFeatures",
    "HfClipEncoder",
    "OpenClipEncoder",
    "load_clip",
]
