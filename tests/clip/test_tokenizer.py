"""CLIP's BPE tokenizer has one home (textseg.clip.tokenizer): the CLIP encoders, OWLv2 and the
old import paths all reach the same functions."""

from __future__ import annotations

import importlib

import pytest

from textseg.clip import tokenizer


def test_one_tokenizer_for_clip_and_the_detectors() -> None:
    from textseg.clip import encoders
    from textseg.detectors import tokenizers

    assert tokenizers.clip_tokenizer is tokenizer.clip_tokenizer
    assert tokenizers.clip_tokenizer_from_files is tokenizer.clip_tokenizer_from_files
    assert encoders.build_hf_clip_tokenizer is tokenizer.build_hf_clip_tokenizer
    assert encoders.clip_bpe_vocab is tokenizer.clip_bpe_vocab


def test_vocabulary_and_padding() -> None:
    vocab, merges = tokenizer.clip_bpe_vocab()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    vocab.clear()  # a copy: the cached vocabulary is untouched
    assert len(tokenizer.clip_bpe_vocab()[0]) == 49408
    owl = tokenizer.clip_tokenizer()
    assert owl.pad_token == "!" and owl("a cat")["input_ids"] == [49406, 320, 2368, 49407]
    assert tokenizer.build_hf_clip_tokenizer().pad_token == "<|endoftext|>"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "textseg.clip.encoders",
            "MAX_DENSE_TOKENS OPENAI_CLIP_MEAN OPENAI_CLIP_STD ClipEncoder DenseFeatures "
            "HfClipEncoder OpenClipEncoder build_hf_clip_tokenizer clip_bpe_vocab load_clip",
        ),
        (
            "textseg.clip",
            "OPENAI_CLIP_MEAN OPENAI_CLIP_STD ClipEncoder DenseFeatures HfClipEncoder "
            "OpenClipEncoder load_clip",
        ),
    ],
)
def test_public_names_stay_importable(module: str, names: str) -> None:
    mod = importlib.import_module(module)
    for name in names.split():
        assert hasattr(mod, name), f"{module}.{name}"
