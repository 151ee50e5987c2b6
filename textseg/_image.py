"""The one place where user images become arrays: paths, PIL images and numpy arrays in,
``(H, W, 3) uint8 RGB`` out, with one clear error for anything else."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "ImageInput",
    "list_images",
    "load_image",
    "to_rgb_uint8",
]

#: File extensions (lower case) listed as images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

#: Anything textseg accepts as one image.
ImageInput: TypeAlias = str | os.PathLike | Image.Image | np.ndarray

#: Images larger than this many pixels are refused (a decoded 100 MP RGB image is 300 MB).
MAX_PIXELS = 100_000_000


def list_images(
    folder: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()
) -> list[str]:
    """Image files of ``folder`` and its sub-folders, as sorted relative POSIX paths.

    Images are files whose extension (any case) is in :data:`IMAGE_SUFFIXES`; hidden files and
    folders (name starting with ".") are skipped, symlinked folders are not followed, and a
    dangling symlink is listed (it is reported as missing when read).

    Args:
        folder: The folder.
        exclude: Folders not to descend into: paths, or names relative to ``folder`` (e.g. the
            output folder, when it is inside).

    Returns:
        ``["a.jpg", "sub/b.png", ...]``, sorted by that string.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is a file.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, expected a folder of images")
    skip = {(root / p if not Path(p).is_absolute() else Path(p)).resolve() for p in exclude}
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip
        ]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            names.append((here / name).relative_to(root).as_posix())
    return sorted(names)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8 RGB``, applying its EXIF orientation.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a readable image, or is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()  # decode now so a truncated file fails here, not later
            im = ImageOps.exif_transpose(im)
            return to_rgb_uint8(im, name=str(path))
    except (OSError, SyntaxError, ValueError, ImportError, Image.DecompressionBombError) as err:
        # ImportError: a decoder plugin another library registered is missing
        raise ValueError(f"cannot read image {path}: {err}") from None


def _pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(im)  # keep the range so the check below can refuse it
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def to_rgb_uint8(image: ImageInput, *, name: str = "image") -> np.ndarray:
    """Convert one image to a ``(H, W, 3) uint8 RGB`` numpy array.

    Accepted: a path; a PIL image of any mode; a numpy array ``(H, W)`` (grayscale),
    ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA, alpha dropped), either integer in
    [0, 255] or float in [0, 1]. Grayscale and RGBA are converted, not refused.

    Args:
        image: The image.
        name: What to call the image in error messages (e.g. its path or index).

    Raises:
        TypeError: Not an image type.
        ValueError: Empty, larger than :data:`MAX_PIXELS`, wrong number of channels, NaN, or
            values out of range (16-bit or float images); the message says how to convert.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(
            f"{name}: expected a path, PIL.Image or numpy array (H, W, 3) uint8 RGB, "
            f"got {type(image).__name__}"
        )
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        pass
    elif array.ndim != 2:
        raise ValueError(
            f"{name}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    h, w = array.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"{name}: image is empty (shape {array.shape})")
    if h * w > MAX_PIXELS:
        raise ValueError(
            f"{name}: image has {h * w / 1e6:.1f} MP ({w}x{h}), more than the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale or tile it first"
        )
    array = _to_uint8(array, name)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{name}: {array.dtype} image with values in [{lo}, {hi}], expected [0, 255]; "
                f"convert 16-bit images to 8-bit first, e.g. (image // 257).astype(np.uint8)"
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: float image contains NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name}: float image with values in [{lo:g}, {hi:g}], expected [0, 1]; "
                f"divide by 255 or pass uint8"
            )
        return np.round(array * 255.0).astype(np.uint8)
    raise ValueError(f"{name}: unsupported image dtype {array.dtype}, expected uint8")
