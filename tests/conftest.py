"""Shared fixtures: the data folder beside the repo (../shared/data unless TEXTSEG_DATA says)."""

from __future__ import annotations

import json
import os

# Before torch starts its OpenMP runtime: idle threads sleep instead of spinning, so the suite
# costs the same CPU time on a busy machine as on an idle one (docs/performance.md has the
# figures). The textseg command sets the same policy for itself (textseg.cli).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("TEXTSEG_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "coco-dev" / "annotations.json").is_file():
        pytest.fail(f"test data not found at {root}; set TEXTSEG_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def coco_dev(data_dir: Path) -> dict:
    """The coco-dev annotations as a dict (COCO JSON)."""
    return json.loads((data_dir / "coco-dev" / "annotations.json").read_text())


_IMAGE_OPEN = Image.open


@pytest.fixture(autouse=True)
def _pil_unpatched() -> Iterator[None]:
    """A client library a test imports (ultralytics) may replace ``PIL.Image.open`` for the
    whole process; the next test gets Pillow's own back."""
    yield
    Image.open = _IMAGE_OPEN


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test touches the network or the user's caches."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TEXTSEG_OFFLINE", "1")
    monkeypatch.setenv("TEXTSEG_CACHE", str(tmp_path_factory.mktemp("textseg-cache")))
    monkeypatch.delenv("TEXTSEG_WEIGHTS", raising=False)


# Tiny random-init models (seeded), shared by every test package that needs one.
@pytest.fixture(scope="session")
def core():
    """The tiny segment_anything SAM core."""
    from textseg.sam import SamCore

    torch.manual_seed(0)
    return SamCore("sam-vit-tiny-test")


@pytest.fixture(scope="session")
def oc_clip():
    """The tiny open_clip CLIP encoder."""
    from textseg.clip import load_clip

    torch.manual_seed(0)
    return load_clip("clip-vit-tiny-test")


@pytest.fixture(scope="session")
def hf_clip():
    """The tiny transformers CLIP encoder."""
    from textseg.clip import load_clip

    torch.manual_seed(0)
    return load_clip("hf-clip-vit-tiny-test")


@pytest.fixture(scope="session")
def labelstudio_server(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config):
    """A real Label Studio server (tests/_labelstudio_server.py), started once per session from
    a migrated database kept in pytest's cache; skipped where none is installed (`make
    clients`), a failure under TEXTSEG_REQUIRE_CLIENTS=1."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "_labelstudio_server", Path(__file__).with_name("_labelstudio_server.py")
    )
    ls = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ls  # dataclasses look their module up there
    spec.loader.exec_module(ls)
    command = ls.executable()
    if command is None:
        message = "label-studio is not installed; `make clients` installs it"
        if os.environ.get("TEXTSEG_REQUIRE_CLIENTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    template = None
    if pytestconfig.cache is not None:  # one per installed label-studio
        stamp = command.resolve().stat()
        key = f"label-studio-{stamp.st_ino}-{stamp.st_mtime_ns}"
        template = pytestconfig.cache.mkdir(key) / "migrated.sqlite3"
    server = ls.start(command, tmp_path_factory.mktemp("label-studio"), template=template)
    yield server
    server.stop()
