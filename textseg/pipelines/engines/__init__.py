"""Engines: what runs the segmenter over a plan's images, in listing order.

Every engine is a function ``(items, spec, vocab, batch_size, ...) -> Iterator[Outcome]``
yielding ``(item, Result or one-line error)`` for each item, in the items' order, so the runner
(:mod:`textseg.pipelines.runner`) writes the same files whichever engine computed them:

- :func:`~textseg.pipelines.engines.local.local_outcomes`: this process, one batch after the
  other;
- :func:`~textseg.pipelines.engines.ray.ray_outcomes`: a Ray Data actor pool
  (``pip install "textseg[ray]"``).
"""

from textseg.pipelines.engines.base import Item, Outcome, SegmenterSpec, segmenter_spec
from textseg.pipelines.engines.local import local_outcomes

__all__ = ["Item", "Outcome", "SegmenterSpec", "local_outcomes", "segmenter_spec"]
