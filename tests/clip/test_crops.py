"""masked_crop: the square crop CLIP judges a mask by, everything outside the mask blanked."""

from __future__ import annotations

import math

import numpy as np

from textseg.clip import mask_box, masked_crop


def test_masked_crop_blanks_everything_outside_the_mask() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[5:15, 30:50] = True  # 10 x 20
    mask[10, 30] = False
    crop = masked_crop(image, mask, fill=(1, 2, 3), context=0.1)
    side = math.ceil(20 * 1.2)
    assert crop.shape == (side, side, 3)
    top, left = math.floor((5 + 15) / 2 - side / 2), math.floor((30 + 50) / 2 - side / 2)
    window = np.zeros((side, side), bool)
    window[5 - top : 15 - top, 30 - left : 50 - left] = mask[5:15, 30:50]
    np.testing.assert_array_equal(crop[window], image[5:15, 30:50][mask[5:15, 30:50]])
    assert (crop[~window] == (1, 2, 3)).all()
    # At the border: the part outside the image is filled too.
    corner = np.zeros((40, 60), bool)
    corner[:4, :4] = True
    out = masked_crop(image, corner, fill=(9, 9, 9), context=0.5)
    assert out.shape == (8, 8, 3)
    assert (out[:2] == 9).all() and (out[:, :2] == 9).all()
    np.testing.assert_array_equal(out[2:6, 2:6], image[:4, :4])
    assert masked_crop(image, np.zeros((40, 60), bool), fill=(0, 0, 0)) is None


def test_box_without_mask_keeps_every_pixel_and_large_crops_shrink() -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = masked_crop(image, None, fill=(0, 0, 0), context=0.0, box=np.array([0, 0, 400, 300]))
    assert crop.shape == (400, 400, 3)
    np.testing.assert_array_equal(crop[50:350], image)
    small = masked_crop(
        image, None, fill=(0, 0, 0), context=0.0, box=np.array([0, 0, 400, 300]), max_size=64
    )
    assert small.shape == (64, 64, 3)


def test_mask_box_is_pixel_edges() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True
    assert mask_box(mask).tolist() == [3, 2, 7, 5]
    assert mask_box(np.zeros((4, 4), bool)) is None


def test_a_large_crop_is_made_small_without_a_full_size_canvas() -> None:
    import tracemalloc

    image = np.zeros((6000, 8000, 3), np.uint8)
    image[1000:5000, 2000:7000] = (200, 30, 30)
    mask = np.zeros((6000, 8000), bool)
    mask[1000:5000, 2000:7000] = True
    tracemalloc.start()
    try:
        crop = masked_crop(image, mask, fill=(0, 0, 0), context=0.1, max_size=224)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert crop.shape == (224, 224, 3)
    # The full-size crop would be 6000 x 6000 x 3 = 108 MB; the region is shrunk first.
    assert peak < 80 * 2**20
    # Red where the mask is, fill elsewhere: the same picture as the full-size path.
    centre = crop[112, 112]
    assert tuple(centre) == (200, 30, 30) and tuple(crop[2, 2]) == (0, 0, 0)
