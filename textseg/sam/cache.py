"""The embedding cache: each image is encoded once, then every prompt is answered from it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["CacheStats", "EmbeddingCache", "ImageEmbedding", "image_key"]


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
        total = self.embedding.numel() * self.embedding.element_size()
        extra = getattr(self.state, "nbytes", 0)
        return total + int(extra)


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
    The least recently used entries are dropped when the budget is exceeded; an entry larger
    than the whole budget is returned to the caller but not kept.

    Args:
        max_bytes: Budget in bytes (a SAM ViT embedding with its decoder state is ~20 MB in
            float32). 0 disables caching.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
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
        old = self._entries.pop(entry.key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        size = entry.nbytes
        if size > self.max_bytes:
            return
        self._entries[entry.key] = entry
        self._nbytes += size
        while self._nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._nbytes -= evicted.nbytes

    def refresh(self, entry: ImageEmbedding) -> None:
        """Re-account an entry whose size changed (e.g. decoder state added)."""
        if entry.key in self._entries:
            self.put(entry)

    def clear(self) -> None:
        """Drop every entry; counters are kept."""
        self._entries.clear()
        self._nbytes = 0

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, len(self._entries), self._nbytes, self.max_bytes)
