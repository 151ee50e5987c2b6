"""textseg over HTTP: ``textseg serve`` (FastAPI + uvicorn, or Ray Serve replicas).

- :class:`BatchingService`: one segmenter shared by concurrent requests (batched ``segment``,
  bounded queue, timeouts; ``click`` on cached SAM embeddings);
- :func:`create_app`: the routes (``/segment``, ``/count``, ``/click``, ``/health``,
  ``/models``, and Label Studio's ``/setup``, ``/predict``, ``/webhook`` when installed);
- :class:`ServeSpec`: preset + service + app options, built in each process or replica.

Needs the ``serve`` extra (``pip install textseg[serve]``).
"""

from __future__ import annotations

from textseg.serve.app import create_app
from textseg.serve.protocol import SegmentationService
from textseg.serve.service import (
    BatchingService,
    ServiceClosed,
    ServiceOverloaded,
    ServiceTimeout,
    build_preset,
)
from textseg.serve.spec import ServeSpec

__all__ = [
    "BatchingService",
    "SegmentationService",
    "ServeSpec",
    "ServiceClosed",
    "ServiceOverloaded",
    "ServiceTimeout",
    "build_preset",
    "create_app",
]
