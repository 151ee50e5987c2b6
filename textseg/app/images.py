"""Walking a folder of images: which one is open, its pixels and its SAM embedding.

:class:`ImageCursor` lists the folder, opens an image by index or name, encodes it once
(``encode``, the SAM core's cached encoder) and skips images that cannot be read when moving
on, remembering why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textseg._image import to_rgb_uint8

__all__ = ["ImageCursor", "UnreadableImage"]


class UnreadableImage(ValueError):
    """An image of the folder that cannot be read (the session skips it when moving on)."""


class ImageCursor:
    """The open image of a folder.

    Args:
        folder: The image folder.
        images: Its images (relative names, in order).
        encode: ``(H, W, 3)`` uint8 RGB image -> its embedding (run once per image opened).

    Attributes:
        index: Position of the open image in :attr:`images` (-1 before the first).
        image: ``(H, W, 3)`` uint8 RGB pixels of the open image.
        embedding: Its embedding.
        encode_ms: Milliseconds the last :meth:`open` spent encoding.
        unreadable: ``{file name: reason}`` of images that could not be read.
    """

    def __init__(
        self, folder: Path, images: Sequence[str], encode: Callable[[np.ndarray], Any]
    ) -> None:
        self.folder = folder
        self.images = list(images)
        self._encode = encode
        self.index = -1
        self.image: np.ndarray = np.zeros((0, 0, 3), np.uint8)
        self.embedding: Any = None
        self.encode_ms = 0.0
        self.unreadable: dict[str, str] = {}

    @property
    def file_name(self) -> str:
        """The open image, relative to the folder."""
        return self.images[self.index]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the open image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def open(self, image: int | str) -> None:
        """Open an image (index into :attr:`images` or its file name) and encode it.

        Raises:
            ValueError: A name not in the folder or an index out of range.
            TypeError: Neither an index nor a name.
            UnreadableImage: The file cannot be read (recorded in :attr:`unreadable`).
        """
        if isinstance(image, str):
            if image not in self.images:
                more = "..." if len(self.images) > 5 else ""
                raise ValueError(
                    f"image {image!r} is not in {self.folder}; expected one of "
                    f"{self.images[:5]}{more}"
                )
            index = self.images.index(image)
        elif isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            if not 0 <= image < len(self.images):
                raise ValueError(f"image index: expected 0..{len(self.images) - 1}, got {image}")
            index = int(image)
        else:
            raise TypeError(f"image: expected an index or a file name, got {type(image).__name__}")
        name = self.images[index]
        try:
            array = to_rgb_uint8(self.folder / name, name=name)
        except (ValueError, OSError) as err:
            self.unreadable[name] = str(err)
            raise UnreadableImage(f"cannot open {name}: {err}") from None
        start = time.perf_counter()
        embedding = self._encode(array)
        self.encode_ms = (time.perf_counter() - start) * 1000.0
        self.index, self.image, self.embedding = index, array, embedding

    def find_readable(self, start: int, step: int, open_: Callable[[int], None]) -> bool:
        """Call ``open_`` on the images from ``start`` in direction ``step`` until one opens;
        False (the open image stays) when none does."""
        i = start
        while 0 <= i < len(self.images):
            if self.images[i] not in self.unreadable:
                try:
                    open_(i)
                    return True
                except UnreadableImage:
                    pass
            i += step
        return False
