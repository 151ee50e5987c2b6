"""Image input conversion: one function, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from textseg._image import load_image, to_rgb_uint8


@pytest.mark.parametrize(
    ("image", "shape"),
    [
        (np.zeros((4, 5), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 1), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 4), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 3), np.float32), (4, 5, 3)),
        (np.full((4, 5, 3), 200, np.uint16), (4, 5, 3)),
        (np.zeros((4, 5), bool), (4, 5, 3)),
        (Image.new("L", (5, 4)), (4, 5, 3)),
        (Image.new("RGBA", (5, 4)), (4, 5, 3)),
        (Image.new("P", (5, 4)), (4, 5, 3)),
    ],
)
def test_converted(image, shape):
    out = to_rgb_uint8(image)
    assert out.shape == shape and out.dtype == np.uint8


def test_float_scaled_and_rgba_alpha_dropped():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 7
    rgba[..., 3] = 9
    assert (to_rgb_uint8(rgba)[..., 0] == 7).all() and to_rgb_uint8(rgba).shape[2] == 3
    assert to_rgb_uint8(np.full((2, 2, 3), 1.0, np.float32)).max() == 255


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((0, 5, 3), np.uint8), ValueError, "empty"),
        (np.zeros((4, 5, 2), np.uint8), ValueError, "expected shape"),
        (np.zeros((2, 4, 5, 3), np.uint8), ValueError, "expected shape"),
        (np.full((4, 5, 3), 300, np.uint16), ValueError, "16-bit"),
        (np.full((4, 5, 3), -1, np.int32), ValueError, "expected \\[0, 255\\]"),
        (np.full((4, 5, 3), 255.0, np.float32), ValueError, "divide by 255"),
        (np.full((4, 5, 3), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.zeros((4, 5, 3), np.complex64), ValueError, "unsupported image dtype"),
        ([[1, 2], [3, 4]], TypeError, "expected a path, PIL.Image or numpy array"),
        (
            np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10_001, 10_001, 3)),
            ValueError,
            "MP limit",
        ),
    ],
)
def test_refused(image, error, match):
    with pytest.raises(error, match=match):
        to_rgb_uint8(image)


def test_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "text.jpg")
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "truncated.jpg")
    assert load_image(tmp_path / "ok.jpg").shape == (48, 64, 3)


def test_exif_orientation_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (40, 20, 3)
