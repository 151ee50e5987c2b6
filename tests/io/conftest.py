"""Fixtures for the export/import tests: the coco-dev ground truth as Detections, and small
hand-made masks that break naive exporters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from textseg.io.coco import CocoData, load_coco


@pytest.fixture(scope="session")
def coco_gt(data_dir: Path) -> CocoData:
    """coco-dev loaded with textseg.io.load_coco (masks decoded on access)."""
    return load_coco(data_dir / "coco-dev" / "annotations.json")


@pytest.fixture(scope="session")
def coco_gt_dense(coco_gt: CocoData) -> dict[int, sv.Detections]:
    """image id -> Detections with dense masks, decoded once for the session."""
    return {image["id"]: coco_gt.detections[image["id"]] for image in coco_gt.images}


def tiny_mask(kind: str, height: int = 12, width: int = 16) -> np.ndarray:
    """(H, W) bool masks that naive contour-based exporters turn into empty segmentations."""
    m = np.zeros((height, width), dtype=bool)
    if kind == "one_pixel":
        m[5, 7] = True
    elif kind == "corner_pixel":
        m[0, 0] = True
    elif kind == "last_pixel":
        m[-1, -1] = True
    elif kind == "two_pixels_diagonal":
        m[3, 3] = m[4, 4] = True
    elif kind == "two_pixels_horizontal":
        m[6, 2:4] = True
    elif kind == "thin_horizontal_line":
        m[4, 1:15] = True
    elif kind == "thin_vertical_line":
        m[0:12, 9] = True
    elif kind == "thin_diagonal_line":
        idx = np.arange(10)
        m[idx + 1, idx + 3] = True
    elif kind == "full_image":
        m[:] = True
    else:
        raise ValueError(kind)
    return m


TINY_KINDS = [
    "one_pixel",
    "corner_pixel",
    "last_pixel",
    "two_pixels_diagonal",
    "two_pixels_horizontal",
    "thin_horizontal_line",
    "thin_vertical_line",
    "thin_diagonal_line",
    "full_image",
]


def multi_part_mask(height: int = 40, width: int = 50) -> np.ndarray:
    """Three separate parts, one of them a ring with a hole (and an island in the hole)."""
    m = np.zeros((height, width), dtype=bool)
    m[2:8, 2:10] = True  # rectangle
    m[30, 45] = True  # single pixel
    m[12:30, 15:35] = True  # ring ...
    m[16:26, 19:31] = False  # ... with a hole ...
    m[20:22, 24:26] = True  # ... and an island inside the hole
    return m


def random_masks(seed: int, count: int) -> list[np.ndarray]:
    """Speckled and blobby random masks of random sizes (parts, holes, pinches)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.random((h, w)) < rng.uniform(0.05, 0.9)
        if k % 3 == 0:
            m = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if m.any():
            out.append(m)
    return out


@pytest.fixture(params=TINY_KINDS)
def tiny(request: pytest.FixtureRequest) -> np.ndarray:
    """Each tiny mask in turn (tests using it run once per kind)."""
    return tiny_mask(request.param)


@pytest.fixture
def multi_part() -> np.ndarray:
    """See :func:`multi_part_mask`."""
    return multi_part_mask()


@pytest.fixture(scope="session")
def random_mask_set() -> list[np.ndarray]:
    """120 seeded random masks."""
    return random_masks(seed=0, count=120)
