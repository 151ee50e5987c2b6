"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train 5-10x faster on one thread than on two contended ones, and a resumed
    run is bit-equal to an uninterrupted one only on the thread count both ran with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
