"""Images and low-res masks the server keeps between requests, by id, in a byte budget.

``/segment`` and ``/click`` answer with an ``image_id``; a later ``/click`` names the image by it
instead of sending it again. ``/click`` answers each mask with a ``mask_id``: its low-res logits,
which the next click sends back as SAM's mask input. Least recently used entries go first.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

import numpy as np

from textseg.sam.cache import image_key

__all__ = ["ImageStore", "image_id"]


def image_id(image: np.ndarray) -> str:
    """The id of an ``(H, W, 3) uint8`` image: a hash of its pixels (same image, same id)."""
    return image_key(image, "textseg-serve", 0)


class ImageStore:
    """LRU of arrays by id, bounded by their bytes; safe to use from several threads.

    Args:
        max_bytes: Budget; an array larger than it is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self._masks = itertools.count(1)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def put(self, key: str, array: np.ndarray) -> str:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            if array.nbytes <= self.max_bytes:
                self._items[key] = array
                self._nbytes += array.nbytes
            while self._nbytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._nbytes -= dropped.nbytes
        return key

    def put_image(self, image: np.ndarray) -> str:
        """Keep ``image`` and return its :func:`image_id`."""
        return self.put(image_id(image), image)

    def put_mask(self, logits: np.ndarray) -> str:
        """Keep one mask's ``(256, 256)`` low-res logits and return a new ``mask_id``."""
        return self.put(f"mask-{next(self._masks)}", np.ascontiguousarray(logits, np.float32))

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            array = self._items.get(key)
            if array is not None:
                self._items.move_to_end(key)
            return array
