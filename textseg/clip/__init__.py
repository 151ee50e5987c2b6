"""CLIP, shared by the labeler, the CLIP prompters, the mask selector and the trainers.

- :class:`ClipEncoder` embeds texts and images in CLIP's joint space (open_clip or transformers
  models behind one interface) and computes dense MaskCLIP patch features; :func:`load_clip`
  builds a registered model (``textseg.list_models("clip")``).
- :class:`TextEmbedder` embeds a vocabulary once (templates, class ensembles, reject texts).
- :func:`masked_crop` cuts the crop CLIP judges a mask by (outside the mask blanked).
- :mod:`textseg.clip.tokenizer` is CLIP's BPE tokenizer, built offline (also OWLv2's and
  SAM 3's).
"""

from textseg.clip.crops import mask_box, masked_crop
from textseg.clip.encoders import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ClipEncoder,
    DenseFeatures,
    HfClipEncoder,
    OpenClipEncoder,
    load_clip,
)
from textseg.clip.text import (
    DEFAULT_BACKGROUND,
    DEFAULT_TEMPLATES,
    TextEmbedder,
    VocabularyEmbeddings,
    embed_texts,
)

__all__ = [
    "DEFAULT_BACKGROUND",
    "DEFAULT_TEMPLATES",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ClipEncoder",
    "DenseFeatures",
    "HfClipEncoder",
    "OpenClipEncoder",
    "TextEmbedder",
    "VocabularyEmbeddings",
    "embed_texts",
    "load_clip",
    "mask_box",
    "masked_crop",
]
