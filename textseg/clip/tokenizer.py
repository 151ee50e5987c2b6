"""CLIP's byte-level BPE tokenizer, built without the network: the one copy that the CLIP
encoders (:class:`~textseg.clip.HfClipEncoder`), OWLv2 and SAM 3's text encoder use.

open_clip ships CLIP's merge list (``bpe_simple_vocab_16e6.txt.gz``) inside its package;
:func:`clip_bpe_vocab` builds the 49408-entry vocabulary of every OpenAI CLIP checkpoint from it
(the ``vocab.json`` and ``merges.txt`` of ``openai/clip-vit-*`` on the Hugging Face hub hold the
same tokens), so test models and random-weight builds need no download. Published checkpoints
that bring their own files load through :func:`clip_tokenizer_from_files`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "build_hf_clip_tokenizer",
    "clip_bpe_vocab",
    "clip_tokenizer",
    "clip_tokenizer_from_files",
]

_CLIP_MERGES = 49152 - 256 - 2  # merges CLIP uses out of the file (as open_clip/OpenAI do)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters.

    The order matters: the vocabulary lists the printable bytes first, then the others.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _open_clip_bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "open_clip is needed for the offline CLIP tokenizer (it ships CLIP's BPE merges); "
            "pip install open_clip_torch"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


@functools.lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    with gzip.open(_open_clip_bpe_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : _CLIP_MERGES + 1]
    merges = tuple(tuple(line.split()) for line in lines)
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's byte-level BPE vocabulary and merges, from the file open_clip ships.

    Returns:
        ``(vocab, merges)``: token -> id (49408 entries) and the 48894 merge pairs in rank order
        (fresh copies: the caller may change them).
    """
    vocab, merges = _clip_vocab_and_merges()
    return dict(vocab), list(merges)


def clip_tokenizer(pad_token: str = "!") -> Any:
    """CLIP's BPE tokenizer (a transformers ``CLIPTokenizer``, 49408 ids), built offline.

    Args:
        pad_token: Padding token; OWLv2's tokenizer pads with ``"!"`` (id 0), OpenAI CLIP's
            with ``"<|endoftext|>"``.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token)


def build_hf_clip_tokenizer() -> Any:
    """OpenAI CLIP's ``CLIPTokenizer`` (padding with ``<|endoftext|>``), built offline."""
    return clip_tokenizer(pad_token="<|endoftext|>")


def clip_tokenizer_from_files(folder: str | os.PathLike[str], pad_token: str = "!") -> Any:
    """CLIP's tokenizer from a checkpoint folder holding ``vocab.json`` and ``merges.txt``.

    Raises:
        FileNotFoundError: A file is missing.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token)
