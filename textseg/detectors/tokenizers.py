"""Tokenizers for the detectors' text encoders, built without the network.

- Grounding DINO reads captions with BERT's uncased WordPiece tokenizer. For published weights the
  ``vocab.txt`` comes with the checkpoint (:func:`bert_tokenizer_from_file`). Test models and
  ``pretrained=False`` builds use :func:`offline_bert_tokenizer`, a small WordPiece vocabulary made
  in memory: every ASCII letter, digit and punctuation mark (so any ASCII text tokenizes without
  ``[UNK]``), the words of the COCO class names, and BERT's special tokens at BERT's ids. Those
  ids matter: the transformers model finds phrase boundaries by the ids of ``[CLS]`` (101),
  ``[SEP]`` (102), ``.`` (1012) and ``?`` (1029).
- OWLv2 uses CLIP's byte-level BPE. open_clip ships CLIP's merge list
  (``bpe_simple_vocab_16e6.txt.gz``) inside its package; :func:`clip_tokenizer` builds the same
  49408-entry vocabulary from it, so test models and random-weight builds need no download.
  Published checkpoints bring ``vocab.json`` and ``merges.txt`` (:func:`clip_tokenizer_from_files`).
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
    "BERT_SPECIAL_IDS",
    "bert_tokenizer_from_file",
    "clip_tokenizer",
    "clip_tokenizer_from_files",
    "offline_bert_tokenizer",
]

#: Ids the transformers Grounding DINO model hard-codes as phrase delimiters (bert-base-uncased).
BERT_SPECIAL_IDS = {
    "[PAD]": 0,
    "[UNK]": 100,
    "[CLS]": 101,
    "[SEP]": 102,
    "[MASK]": 103,
    ".": 1012,
    "?": 1029,
}

_COCO_WORDS = """
person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop
sign parking meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack
umbrella handbag tie suitcase frisbee skis snowboard sports ball kite baseball bat glove
skateboard surfboard tennis racket bottle wine glass cup fork knife spoon bowl banana apple
sandwich orange broccoli carrot hot pizza donut cake chair couch potted plant bed dining
table toilet tv laptop mouse remote keyboard cell phone microwave oven toaster sink
refrigerator book clock vase scissors teddy hair drier toothbrush door wheel window toy
picture photo a an the of and with red blue green white black
"""

_CLIP_MERGES = 49152 - 256 - 2  # merges CLIP uses out of the file (as open_clip/OpenAI do)


@functools.lru_cache(maxsize=1)
def _offline_bert_vocab() -> dict[str, int]:
    tokens: list[str] = []
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper() and chr(c) not in ".?"]
    pieces = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    words = list(dict.fromkeys(w for w in _COCO_WORDS.split() if len(w) > 1))
    ordinary = iter(chars + pieces + words)
    size = max(BERT_SPECIAL_IDS.values()) + 1
    by_id = {i: t for t, i in BERT_SPECIAL_IDS.items()}
    unused = 0
    for i in range(size):
        if i in by_id:
            tokens.append(by_id[i])
            continue
        token = next(ordinary, None) if i > BERT_SPECIAL_IDS["[MASK]"] else None
        if token is None:
            token = f"[unused{unused}]"
            unused += 1
        tokens.append(token)
    return {t: i for i, t in enumerate(tokens)}


def offline_bert_tokenizer() -> Any:
    """A BERT uncased WordPiece tokenizer over a small in-memory vocabulary (1030 ids).

    Special tokens sit at bert-base-uncased's ids (``[CLS]`` 101, ``[SEP]`` 102, ``.`` 1012,
    ``?`` 1029); words outside the vocabulary are spelled with single-character pieces.
    """
    from transformers import BertTokenizer

    return BertTokenizer(vocab=dict(_offline_bert_vocab()), do_lower_case=True)


def bert_tokenizer_from_file(vocab_file: str | os.PathLike[str]) -> Any:
    """An uncased BERT tokenizer from a ``vocab.txt`` (one token per line, id = line number).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The vocabulary lacks the special tokens Grounding DINO needs at their ids.
    """
    from transformers import BertTokenizer

    path = Path(vocab_file)
    lines = path.read_text(encoding="utf-8").splitlines()
    vocab = {line.rstrip("\n"): i for i, line in enumerate(lines)}
    wrong = [
        f"{t!r} (expected id {i}, found {vocab.get(t)})"
        for t, i in BERT_SPECIAL_IDS.items()
        if vocab.get(t) != i
    ]
    if wrong:
        raise ValueError(
            f"{path}: not a bert-base-uncased vocabulary, Grounding DINO needs these ids: "
            f"{', '.join(wrong)}"
        )
    return BertTokenizer(vocab=vocab, do_lower_case=True)


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


def clip_tokenizer(pad_token: str = "!") -> Any:
    """CLIP's BPE tokenizer (49408 ids) built from the merge list open_clip ships.

    Args:
        pad_token: Padding token; OWLv2's tokenizer pads with ``"!"`` (id 0).
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token)


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
