"""Tokenizers for the detectors' text encoders, built without the network.

- Grounding DINO reads captions with BERT's uncased WordPiece tokenizer. For published weights the
  ``vocab.txt`` comes with the checkpoint (:func:`bert_tokenizer_from_file`). Test models and
  ``pretrained=False`` builds use :func:`offline_bert_tokenizer`, a small WordPiece vocabulary made
  in memory: every ASCII letter, digit and punctuation mark (so any ASCII text tokenizes without
  ``[UNK]``), the words of the COCO class names, and BERT's special tokens at BERT's ids. Those
  ids matter: the transformers model finds phrase boundaries by the ids of ``[CLS]`` (101),
  ``[SEP]`` (102), ``.`` (1012) and ``?`` (1029).
- OWLv2 uses CLIP's byte-level BPE: :func:`clip_tokenizer` and
  :func:`clip_tokenizer_from_files` are :mod:`textseg.clip.tokenizer`'s (one copy for CLIP,
  OWLv2 and SAM 3), re-exported here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from textseg.clip.tokenizer import clip_tokenizer, clip_tokenizer_from_files

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
