"""The real clients the suite checks files with (pycocotools, supervision, ultralytics, datumaro,
label-studio-sdk, trackeval...): a missing one skips its test, and fails it under
``TEXTSEG_REQUIRE_CLIENTS=1`` (CI, where ``make test`` installs every one of them)."""

from __future__ import annotations

import os
from typing import Any

import pytest

REQUIRED = os.environ.get("TEXTSEG_REQUIRE_CLIENTS") == "1"


def client(module: str) -> Any:
    """Import ``module`` (a client package), or skip the test where it is not installed."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        if REQUIRED:
            raise
        pytest.skip(f"{module} is not installed ({err}); make clients installs it")
