"""Shared tiny models and images for the prompter tests (built once per session, seeded).

The suite runs with ``--import-mode=importlib``, so test modules cannot import from here; the
helpers are handed out as fixtures, and the bad class-list table parametrizes every test that
asks for ``bad_classes`` (with ``bad_error`` and ``bad_match``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from textseg._image import load_image
from textseg.vocab import Vocabulary

#: Bad class lists every prompter must refuse, with the exact error (from the shared Vocabulary).
BAD_CLASSES = [
    pytest.param(
        [],
        ValueError,
        r"^classes: expected at least one class name, got an empty list$",
        id="empty",
    ),
    pytest.param(
        ["cat", ""],
        ValueError,
        r"^classes\[1\]: name is empty or only whitespace and punctuation \(''\); remove it$",
        id="empty-name",
    ),
    pytest.param(
        [" \t\n "],
        ValueError,
        r"^classes\[0\]: name is empty or only whitespace and punctuation "
        r"\(' \\t\\n '\); remove it$",
        id="whitespace-name",
    ),
    pytest.param(
        ["cat", " Cat "],
        ValueError,
        r"^classes\[1\]: 'Cat' duplicates classes\[0\] 'cat' \(names are compared "
        r"case-insensitively after whitespace and punctuation normalisation\); "
        r"remove one of them$",
        id="duplicate",
    ),
    pytest.param(
        ["cat", 3], TypeError, r"^classes\[1\]: expected a str, got int 3$", id="non-string"
    ),
    pytest.param(
        ["cat", None], TypeError, r"^classes\[1\]: expected a str, got NoneType None$", id="none"
    ),
    pytest.param(
        "cat",
        TypeError,
        r"^classes: expected a list of str, got the str 'cat'; use \['cat'\]$",
        id="bare-string",
    ),
    pytest.param(
        {"cat", "dog"},
        TypeError,
        r"^classes: expected a list of str, got a set, whose order is arbitrary",
        id="set",
    ),
]

#: A name of 100 words: ~100 CLIP tokens, more than the 77 of CLIP's text context.
LONG_NAME = " ".join(["cat"] * 100)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bad_classes" in metafunc.fixturenames:
        metafunc.parametrize(("bad_classes", "bad_error", "bad_match"), BAD_CLASSES)


@pytest.fixture(scope="session")
def long_name() -> str:
    return LONG_NAME


@pytest.fixture(scope="session")
def coco_image(data_dir: Path) -> np.ndarray:
    """The first coco-dev image, (480, 640, 3) uint8 RGB."""
    return load_image(data_dir / "coco-dev" / "images" / "000000000009.jpg")


class OracleDetector:
    """A detector that answers fixed boxes, recording what it was asked."""

    def __init__(
        self,
        xyxy: Sequence[Sequence[float]],
        class_id: Sequence[int] | None,
        confidence: Sequence[float] | None = None,
        data: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.class_id = None if class_id is None else np.asarray(class_id, np.int64)
        self.confidence = None if confidence is None else np.asarray(confidence, np.float32)
        self.data = data or {}
        self.calls: list[tuple[object, Vocabulary, dict]] = []

    def _one(self) -> sv.Detections:
        return sv.Detections(
            xyxy=self.xyxy.copy(),
            class_id=None if self.class_id is None else self.class_id.copy(),
            confidence=None if self.confidence is None else self.confidence.copy(),
            data={k: np.asarray(v).copy() for k, v in self.data.items()},
        )

    def detect(self, images, classes, **kwargs):
        self.calls.append((images, classes, kwargs))
        if isinstance(images, list):
            return [self._one() for _ in images]
        return self._one()


def _assert_detections(dets: sv.Detections, image: np.ndarray, n: int | None = None) -> None:
    """``dets`` is a well-formed result for ``image``: (N, H, W) bool masks, (N, 4) boxes."""
    assert isinstance(dets, sv.Detections)
    if n is not None:
        assert len(dets) == n
    assert dets.mask is not None
    assert dets.mask.dtype == bool
    assert dets.mask.shape == (len(dets), *image.shape[:2])
    assert dets.xyxy.shape == (len(dets), 4)
    assert dets.class_id is not None and len(dets.class_id) == len(dets)


@pytest.fixture(scope="session")
def oracle_detector() -> type[OracleDetector]:
    return OracleDetector


@pytest.fixture(scope="session")
def assert_detections():
    return _assert_detections
