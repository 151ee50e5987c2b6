"""The local engine: this process, one batch of images after the other."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from textseg._image import load_image
from textseg.pipelines.engines.base import Item, Outcome, SegmenterSpec, segment_each
from textseg.pipelines.text_segmenter import TextSegmenter
from textseg.vocab import Vocabulary

__all__ = ["local_outcomes"]


def local_outcomes(
    items: Sequence[Item], spec: SegmenterSpec, vocab: Vocabulary, batch_size: int
) -> Iterator[Outcome]:
    """Results in order; the segmenter is built on the first readable image (a rerun with
    nothing left to do loads no model). Errors building the segmenter propagate."""
    segmenter: TextSegmenter | None = None
    for start in range(0, len(items), batch_size):
        ready: list[tuple[Item, np.ndarray]] = []
        for item in items[start : start + batch_size]:
            try:
                ready.append((item, load_image(item.path)))
            except (FileNotFoundError, ValueError) as err:
                yield item, str(err)
        if not ready:
            continue
        if segmenter is None:
            segmenter = spec.build()
        yield from segment_each(segmenter, ready, vocab)
