"""The embedding cache: each image is encoded once, then every prompt is answered from it."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["CacheStats", "EmbeddingCache", "ImageEmbedding", "held_storages", "image_key"]


def held_storages(obj: object) -> dict[int, int]:
    """``{storage address: bytes}`` of every tensor ``obj`` holds: a tensor, or dataclasses,
    tuples, lists and dicts of them (a backend's decoder state), each storage once (views
    such as ``embedding.flatten(2)`` share their base's storage and are not counted again)."""
    out: dict[int, int] = {}
    for tensor in _tensors(obj, depth=0):
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):
            # Opaque layouts (mkldnn, some quantized) expose no storage: the tensor's own size,
            # keyed by the tensor (alive while held, so the key is unique).
            out[id(tensor)] = tensor.numel() * tensor.element_size()
            continue
        out[storage.data_ptr()] = storage.nbytes()
    return out


def _tensors(obj: object, depth: int) -> Iterator[torch.Tensor]:
    if depth > 8 or obj is None:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name), depth + 1)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item, depth + 1)


def image_key(image: np.ndarray, model_id: str, input_size: int) -> str:
    """Cache key: content hash of the ``(H, W, 3) uint8`` image + model id + input size."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(image).data)
    digest.update(repr((image.shape, model_id, input_size)).encode())
    return digest.hexdigest()


@dataclass
class ImageEmbedding:
    """One encoded image.

    Attributes:
        key: Cache key (see :func:`image_key`).
        model_id: The :attr:`SamCore.model_id` of the core that made it; another core refuses
            it (an embedding only means something to the model that computed it).
        embedding: ``(1, C, h, w)`` image embedding on the model's device.
        original_size: ``(H, W)`` of the original image.
        input_size: ``(h, w)`` of the resized image inside the padded model input.
        state: Backend decoder state reused across prompts (see ``SamBackend.prepare``).
    """

    key: str
    model_id: str
    embedding: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    state: object | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        """Bytes of everything the entry holds: the embedding and its decoder state (every
        precomputed tensor, each storage once)."""
        return sum(self.storages().values())

    def storages(self) -> dict[int, int]:
        """``{storage address: bytes}`` of the tensors the entry holds (see
        :func:`held_storages`)."""
        return held_storages((self.embedding, self.state))


@dataclass(frozen=True)
class CacheStats:
    """Counters of an :class:`EmbeddingCache`."""

    hits: int
    misses: int
    entries: int
    nbytes: int
    max_bytes: int


class EmbeddingCache:
    """LRU cache of image embeddings bounded by a byte budget.

    Entries stay on the device they were computed on (the model's), so a hit costs no transfer.
    What is counted is everything the entries hold: the embeddings and the decoder state the
    core adds to them (precomputed keys, values and projections, several times an embedding's
    size), each tensor storage once even when entries share it (a backend's positional
    encoding). The least recently used entries are dropped when the budget is exceeded; an entry
    larger than the whole budget is returned to the caller but not kept.

    Args:
        max_bytes: Budget in bytes (a SAM ViT embedding is 4 MB in float32, ~20 MB with its
            decoder state). 0 disables caching.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        # storage address -> [bytes, entries holding it]; entry key -> its storage addresses
        self._storages: dict[int, list[int]] = {}
        self._held: dict[str, dict[int, int]] = {}
        self._nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries (every tensor storage counted once)."""
        return self._nbytes

    def get(self, key: str) -> ImageEmbedding | None:
        """The entry for ``key`` (marked most recently used), counting a hit or a miss."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, entry: ImageEmbedding) -> None:
        """Insert or replace an entry, evicting the least recently used beyond the budget."""
        if entry.key in self._entries:
            self._drop(entry.key)
        held = entry.storages()
        if sum(held.values()) > self.max_bytes:
            return
        self._entries[entry.key] = entry
        self._held[entry.key] = held
        for ptr, size in held.items():
            slot = self._storages.setdefault(ptr, [size, 0])
            if slot[1] == 0:
                self._nbytes += size
            slot[1] += 1
        while self._nbytes > self.max_bytes and len(self._entries) > 1:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        del self._entries[key]
        for ptr in self._held.pop(key):
            slot = self._storages[ptr]
            slot[1] -= 1
            if slot[1] == 0:
                self._nbytes -= slot[0]
                del self._storages[ptr]

    def refresh(self, entry: ImageEmbedding) -> None:
        """Re-account an entry whose size changed (e.g. decoder state added)."""
        if entry.key in self._entries:
            self.put(entry)

    def clear(self) -> None:
        """Drop every entry; counters are kept."""
        self._entries.clear()
        self._storages.clear()
        self._held.clear()
        self._nbytes = 0

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, len(self._entries), self._nbytes, self.max_bytes)
