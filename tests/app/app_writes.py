"""The app's write sequence run in a child process, and a proposer with known masks.

Run by ``tests/app/test_kill.py`` through ``runpy.run_path`` in a forked child (the globals
``folder``, ``out`` and ``kill`` come from ``init_globals``): the child claims ``out``, accepts
the :class:`Squares` of the first image one by one, exports, then accepts one mask on the
second image. ``TEXTSEG_TEST_KILL_AFTER=kill`` ends it right after the named write.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import supervision as sv

#: Boxes ``(x0, y0, x1, y1)`` of the Squares' masks, inside every coco-dev image.
BOXES = ((20, 20, 120, 100), (200, 150, 300, 300), (400, 50, 600, 200))


def square_masks(h: int, w: int, boxes=BOXES) -> np.ndarray:
    """``(N, H, W)`` bool masks, one filled box each."""
    masks = np.zeros((len(boxes), h, w), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    return masks


class Squares:
    """A proposer with known masks: one square per box, all of the first class asked for,
    scores 0.9, 0.8, ... in box order (so proposals come in box order)."""

    def __init__(self, boxes=BOXES) -> None:
        self.boxes = boxes

    def segment(self, image: np.ndarray, names: list[str]) -> SimpleNamespace:
        from textseg.masks import masks_to_boxes

        masks = square_masks(*image.shape[:2], self.boxes)
        n = len(masks)
        dets = sv.Detections(
            xyxy=masks_to_boxes(masks),
            mask=masks,
            confidence=np.linspace(0.9, 0.9 - 0.1 * (n - 1), n).astype(np.float32),
            class_id=np.zeros(n, int),
            data={"class_name": np.array([names[0]] * n)},
        )
        return SimpleNamespace(detections=dets)


def run(folder: str, out: str, kill: str | None) -> None:
    """The app's writes: claim, three accepts, an export, one more accept."""
    import torch

    from textseg.app import AnnotationSession
    from textseg.app.store import KILL_ENV
    from textseg.sam import SamCore

    if kill:
        os.environ[KILL_ENV] = kill
    torch.manual_seed(0)
    core = SamCore("sam-vit-tiny-test")
    with AnnotationSession(folder, out=out, claim=True, segmenter=core, proposer=Squares()) as s:
        s.find_all("dog")
        for _ in BOXES:
            s.accept()
        s.export(["coco", "yolo", "png"])
        s.next()
        s.find_all("cat")
        s.accept()


if __name__ == "__main__":
    run(globals()["folder"], globals()["out"], globals()["kill"])
