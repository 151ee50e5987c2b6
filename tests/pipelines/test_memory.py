"""Memory stays bounded where it used to grow: with the number of prompts (the pipeline decodes,
labels and run-length encodes block by block) and with pixels x instances (large photos)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from textseg.pipelines import TextSegmenter
from textseg.prompters import ClassPrompts
from textseg.sam import Prompts, SamCore


class _ManyBoxes:
    """A prompter that returns ``n`` random boxes of class 0."""

    def __init__(self, n: int) -> None:
        self.n = n

    def prompts(self, image: np.ndarray, classes) -> ClassPrompts:
        h, w = image.shape[:2]
        rng = np.random.default_rng(0)
        x0, y0 = rng.uniform(0, w - 20, self.n), rng.uniform(0, h - 20, self.n)
        boxes = np.stack([x0, y0, x0 + 15, y0 + 15], 1).astype(np.float32)
        return ClassPrompts(
            prompts=Prompts.from_boxes(boxes),
            class_id=np.zeros(self.n, np.int64),
            confidence=np.full(self.n, 0.9, np.float32),
            class_names=("thing",),
        )


def _peak_mb(segmenter: TextSegmenter, image: np.ndarray) -> tuple[float, int]:
    """Peak traced memory of one ``segment`` call, less the result's own RLEs (the output:
    ~1 kB per real mask, up to tens of kB for a random model's speckled ones)."""
    segmenter.sam.encode(image)  # the embedding is cached outside the measurement
    tracemalloc.start()
    try:
        result = segmenter.segment(image, ["thing"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    output = sum(len(r["counts"]) + 200 for r in result.masks.rles)
    return (peak - output) / 2**20, len(result)


def test_memory_is_flat_in_the_number_of_box_prompts():
    torch.manual_seed(0)
    core = SamCore("sam-vit-tiny-test")
    image = np.random.default_rng(1).integers(0, 256, (214, 320, 3), dtype=np.uint8)
    # No de-duplication (every mask kept, the worst case for memory); a small block budget
    # (8 masks of this image at a time) so that a short test sees many blocks.
    options = {"dedup_iou": 1.01, "dedup_containment": None, "block_bytes": 3 * 8 * 214 * 320}
    small, n_small = _peak_mb(TextSegmenter(_ManyBoxes(16), core, **options), image)
    large, n_large = _peak_mb(TextSegmenter(_ManyBoxes(128), core, **options), image)
    assert n_large > 4 * n_small > 0
    # Eight times the prompts: dense masks would take 8x; block by block the peak stays.
    assert large < 1.3 * small, (small, large)
