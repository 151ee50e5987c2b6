"""The embedding cache counts everything it holds (embedding and decoder state) and stays
within its byte budget over many images."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from textseg._hub import create_model
from textseg.sam import SamCore


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _storages(obj: object, out: dict[int, int]) -> dict[int, int]:
    if isinstance(obj, torch.Tensor):
        try:
            out[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
        except NotImplementedError:  # an opaque (packed) weight of the decoder
            out[id(obj)] = obj.numel() * obj.element_size()
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _storages(getattr(obj, f.name), out)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _storages(item, out)
    return out


def _really_held(core: SamCore) -> int:
    """Bytes of every tensor storage the cache's entries hold, each once, measured apart from
    the cache's own accounting."""
    storages: dict[int, int] = {}
    for entry in core.cache._entries.values():
        _storages((entry.embedding, entry.state), storages)
    return sum(storages.values())


def test_cache_counts_the_decoder_state_and_stays_in_budget() -> None:
    torch.manual_seed(0)
    sam = create_model("sam-vit-tiny-test", pretrained=False)
    probe = SamCore(sam)
    emb = probe.encode(_image(99))
    embedding_bytes = emb.embedding.numel() * emb.embedding.element_size()
    probe.predict(_image(99), boxes=[4, 4, 40, 30])  # adds the decoder state
    assert emb.state is not None
    assert emb.nbytes > 2 * embedding_bytes  # the state is counted, not only the embedding

    budget = 3 * emb.nbytes
    core = SamCore(sam, cache_bytes=budget)
    for seed in range(10):
        core.predict(_image(seed), boxes=[4, 4, 40, 30])
        assert core.cache.nbytes == _really_held(core)
        assert _really_held(core) <= budget
    assert 2 <= len(core.cache) <= 3
