"""CLIP encoders: one interface over open_clip and transformers CLIP models.

:class:`ClipEncoder` turns texts and images into L2-normalised embeddings in CLIP's joint space,
preprocessing images in torch exactly as the model's own library does (resize the shortest side
with antialiased bicubic interpolation, centre crop, normalise with the model's mean and std),
and computes dense, spatially meaningful patch embeddings MaskCLIP-style
(:meth:`ClipEncoder.dense_features`).

Two backends:

- :class:`OpenClipEncoder` wraps an ``open_clip`` ``CLIP`` model;
- :class:`HfClipEncoder` wraps a transformers ``CLIPModel``.

:func:`load_clip` builds one from the registry (``textseg.list_models("clip")``). The package
is split like :mod:`textseg.sam.backends`: the interface (:mod:`.base`), the dense path
(:mod:`.dense`), one module per library (:mod:`.openclip`, :mod:`.hf`); CLIP's tokenizer is
:mod:`textseg.clip.tokenizer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from textseg.clip.encoders.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipEncoder
from textseg.clip.encoders.dense import MAX_DENSE_TOKENS, DenseAttention, DenseFeatures
from textseg.clip.encoders.hf import HfClipEncoder
from textseg.clip.encoders.openclip import OpenClipEncoder
from textseg.clip.tokenizer import build_hf_clip_tokenizer, clip_bpe_vocab

if TYPE_CHECKING:
    import os

__all__ = [
    "MAX_DENSE_TOKENS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ClipEncoder",
    "DenseAttention",
    "DenseFeatures",
    "HfClipEncoder",
    "OpenClipEncoder",
    "build_hf_clip_tokenizer",
    "clip_bpe_vocab",
    "load_clip",
]

_BACKENDS: dict[str, type[ClipEncoder]] = {
    "open_clip": OpenClipEncoder,
    "transformers": HfClipEncoder,
}


def load_clip(
    name: str,
    *,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    tiny: bool = False,
) -> ClipEncoder:
    """Build a registered CLIP model as a :class:`ClipEncoder`.

    Weights are resolved by :func:`textseg._hub.create_model`: ``checkpoint`` > the
    ``TEXTSEG_WEIGHTS`` folder > the hub cache > a download (unless ``HF_HUB_OFFLINE``).

    Args:
        name: Registry name, see ``textseg.list_models("clip")``, e.g. ``"clip-vit-b-32"``.
        device: Where to run.
        dtype: Compute dtype (``"float32"``, ``"bfloat16"``, ``"float16"``).
        checkpoint: Explicit state dict file (or folder holding one).
        pretrained: False builds the architecture with random weights and never touches the
            disk or the network.
        tiny: Build the entry's tiny random-init variant (``--tiny``), unless a
            ``checkpoint`` is given.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).
        textseg._hub.WeightsNotFoundError: Weights not on disk and not downloadable.
    """
    from textseg._hub import create_model
    from textseg._registry import resolve_cfg

    cfg = resolve_cfg(name, "clip", tiny=tiny, checkpoint=checkpoint)
    backend = cfg.arch.get("backend")
    if backend not in _BACKENDS:
        raise ValueError(
            f"registry entry {name!r} has backend {backend!r}, expected one of {sorted(_BACKENDS)}"
        )
    model = create_model(cfg, pretrained=pretrained, checkpoint=checkpoint)
    return _BACKENDS[backend](
        model,
        input_size=cfg.input_size,
        pixel_mean=cfg.mean if cfg.mean is not None else OPENAI_CLIP_MEAN,
        pixel_std=cfg.std if cfg.std is not None else OPENAI_CLIP_STD,
        device=device,
        dtype=dtype,
        name=cfg.name,
    )
