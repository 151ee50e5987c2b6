"""Finding, verifying and loading checkpoints.

Resolution order for a registered model's weights:

1. an explicit file or folder passed by the caller (``checkpoint=``);
2. the ``TEXTSEG_WEIGHTS`` directory (``$TEXTSEG_WEIGHTS/<Weights.filename>``);
3. the local hub caches (Hugging Face cache for ``hf_repo`` sources; ``$TEXTSEG_CACHE``
   (default ``~/.cache/textseg``) and torch hub's ``checkpoints/`` for URL sources);
4. a download, unless ``HF_HUB_OFFLINE`` (or ``TEXTSEG_OFFLINE``) is set.

A file with a published sha256 is checked before it is used; a mismatch is an error and the
file is not loaded. State dicts are read with ``torch.load(weights_only=True)`` or safetensors
and loaded strictly: the error lists missing, unexpected and mis-shaped keys.

Nothing here touches the network at import time or when a random-init model is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from textseg._registry import ModelCfg, Weights, resolve_cfg

__all__ = [
    "ChecksumError",
    "StateDictError",
    "WeightsLocation",
    "WeightsNotFoundError",
    "create_model",
    "load_state_dict",
    "load_strict",
    "locate_weights",
    "resolve_weights",
]

_TRUE = {"1", "true", "yes", "on"}


class WeightsNotFoundError(FileNotFoundError):
    """A checkpoint is neither on disk nor downloadable (offline, or the download failed)."""


class ChecksumError(ValueError):
    """A checkpoint's sha256 differs from the published one; the file is not used."""


class StateDictError(ValueError):
    """A state dict does not fit the model (missing, unexpected or mis-shaped keys)."""


@dataclass(frozen=True)
class WeightsLocation:
    """Where a model's weights would come from right now, without downloading.

    Attributes:
        source: ``"random-init"`` (a test model), ``"unpublished"`` (no weights exist: only
            an explicit checkpoint loads), ``"explicit"``, ``"TEXTSEG_WEIGHTS"``,
            ``"hub-cache"`` or ``"download"``.
        path: The local file or folder, or None when it would have to be downloaded.
    """

    source: str
    path: Path | None

    @property
    def present(self) -> bool:
        return self.source == "random-init" or self.path is not None


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TEXTSEG_OFFLINE`` forbids downloads."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TEXTSEG_OFFLINE")
    )


def cache_dir() -> Path:
    """textseg's own download cache (``$TEXTSEG_CACHE``, default ``~/.cache/textseg``)."""
    env = os.environ.get("TEXTSEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "textseg"


def _weights_dir_candidate(weights: Weights) -> Path | None:
    env = os.environ.get("TEXTSEG_WEIGHTS")
    if not env:
        return None
    candidate = Path(env).expanduser() / weights.filename
    if weights.is_folder:
        return candidate if all((candidate / f).is_file() for f in weights.hf_files) else None
    if candidate.is_dir() and weights.hf_files:
        # A hub checkpoint copied as its folder (``sam-vit-base/model.safetensors``).
        inside = candidate / weights.hf_files[0]
        return inside if inside.is_file() else None
    return candidate if candidate.is_file() else None


def _hf_cache_candidate(weights: Weights) -> Path | None:
    if weights.hf_repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found: list[Path] = []
    for file in weights.hf_files:
        hit = try_to_load_from_cache(weights.hf_repo, file, revision=weights.revision)
        if not isinstance(hit, str):
            return None
        found.append(Path(hit))
    return found[0].parent if weights.is_folder else found[0]


def _url_cache_candidates(weights: Weights) -> list[Path]:
    assert weights.url is not None
    basename = weights.url.rstrip("/").rsplit("/", 1)[-1]
    return [
        cache_dir() / weights.filename,
        Path(torch.hub.get_dir()) / "checkpoints" / basename,
    ]


def locate_weights(
    cfg: ModelCfg, checkpoint: str | os.PathLike[str] | None = None
) -> WeightsLocation:
    """Where ``cfg``'s weights would be loaded from, without downloading anything."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        return WeightsLocation("explicit", path if path.exists() else None)
    weights = cfg.weights
    if weights is None:
        return WeightsLocation("random-init" if cfg.is_test else "unpublished", None)
    hit = _weights_dir_candidate(weights)
    if hit is not None:
        return WeightsLocation("TEXTSEG_WEIGHTS", hit)
    if weights.hf_repo is not None:
        hit = _hf_cache_candidate(weights)
        if hit is not None:
            return WeightsLocation("hub-cache", hit)
    else:
        for candidate in _url_cache_candidates(weights):
            if candidate.is_file():
                return WeightsLocation("hub-cache", candidate)
    return WeightsLocation("download", None)


def missing_files(cfg: ModelCfg) -> str:
    """What to get for ``cfg`` and from where, e.g. ``"sam_vit_b_01ec64.pth from https://..."``."""
    weights = cfg.weights
    assert weights is not None
    what = (
        f"folder {weights.filename}/ with {', '.join(weights.hf_files)}"
        if weights.is_folder
        else weights.filename
    )
    return f"{what} from {weights.source}"


def _missing_message(cfg: ModelCfg, why: str) -> str:
    return (
        f"weights for {cfg.name!r} are missing ({why}): get {missing_files(cfg)}, put it in a "
        f"folder and set TEXTSEG_WEIGHTS to that folder (or pass checkpoint=PATH)"
    )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verified_stamps() -> Path:
    return cache_dir() / "verified.json"


def verify_sha256(path: Path, expected: str) -> None:
    """Check ``path`` against ``expected``; remembers files already verified (by size, mtime).

    Raises:
        ChecksumError: The digest differs; the message names both digests.
    """
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns, expected]
    stamps_file = _verified_stamps()
    try:
        stamps = json.loads(stamps_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    if stamps.get(key) == stamp:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 of {path} is {actual}, expected {expected}: the file is corrupt or not the "
            f"published checkpoint; delete it and download it again"
        )
    stamps[key] = stamp
    try:
        stamps_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamps_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(stamps))
        tmp.replace(stamps_file)
    except OSError:
        pass  # The stamp only saves re-hashing next time; a read-only cache is not an error.


def _download_url(cfg: ModelCfg) -> Path:
    weights = cfg.weights
    assert weights is not None and weights.url is not None
    target = cache_dir() / weights.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{weights.filename}.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(weights.url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, length=1 << 22)
        if weights.sha256 is not None:
            verify_sha256(tmp, weights.sha256)
        tmp.replace(target)
    except (urllib.error.URLError, OSError) as err:
        raise WeightsNotFoundError(_missing_message(cfg, f"download failed: {err}")) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download_hf(cfg: ModelCfg) -> Path:
    weights = cfg.weights
    assert weights is not None and weights.hf_repo is not None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    paths = []
    # huggingface_hub logs each failed request as a warning; the error below says it in one line.
    hf_logger = logging.getLogger("huggingface_hub")
    level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    try:
        for file in weights.hf_files:
            paths.append(Path(hf_hub_download(weights.hf_repo, file, revision=weights.revision)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsNotFoundError(_missing_message(cfg, f"download failed: {reason}")) from None
    finally:
        hf_logger.setLevel(level)
    return paths[0].parent if weights.is_folder else paths[0]


def resolve_weights(cfg: ModelCfg, checkpoint: str | os.PathLike[str] | None = None) -> Path:
    """The local file or folder holding ``cfg``'s weights, downloading it if allowed.

    Raises:
        WeightsNotFoundError: Not on disk and not downloadable; the message is one line naming
            the missing files and how to provide them.
        ChecksumError: The file's sha256 differs from the published one.
        ValueError: ``cfg`` is a random-init model with no checkpoint and none was passed.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(f"checkpoint for {cfg.name!r} not found: {path}")
        return path
    if cfg.weights is None:
        what = "a tiny random-init test model" if cfg.is_test else "an architecture"
        raise ValueError(
            f"{cfg.name!r} is {what} with no published weights; pass checkpoint=PATH to load a "
            f"state dict into it"
        )
    location = locate_weights(cfg)
    if location.path is not None:
        path = location.path
    elif is_offline():
        raise WeightsNotFoundError(_missing_message(cfg, "offline: HF_HUB_OFFLINE is set"))
    elif cfg.weights.hf_repo is not None:
        path = _download_hf(cfg)
    else:
        path = _download_url(cfg)
    if cfg.weights.sha256 is not None and path.is_file():
        verify_sha256(path, cfg.weights.sha256)
    return path


_STATE_DICT_FILES = ("model.safetensors", "pytorch_model.bin")


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then ``{``."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    return 2 <= size <= path.stat().st_size - 8


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file, a torch file, or a folder holding one.

    Torch files are read with ``weights_only=True``. A dict wrapping the state dict under
    ``"model"`` or ``"state_dict"`` is unwrapped.

    Raises:
        StateDictError: The file holds no state dict.
    """
    path = Path(path)
    if path.is_dir():
        for name in _STATE_DICT_FILES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise StateDictError(f"{path} holds none of {', '.join(_STATE_DICT_FILES)}")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise StateDictError(
                f"cannot read {path}: not a valid safetensors file ({err}); the file is "
                f"corrupt or truncated: download it again"
            ) from None
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come as many types; report one clear line
        # torch's message suggests weights_only=False, which would run arbitrary code from the
        # file: never pass that advice on.
        raise StateDictError(
            f"cannot read a state dict from {path}: it is neither a safetensors file nor a "
            f"torch checkpoint of plain tensors ({type(err).__name__}); a file holding code or "
            f"objects is refused, only state dicts of tensors load"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StateDictError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """Load ``state_dict`` into ``model`` strictly, with one readable error on any mismatch.

    Raises:
        StateDictError: Lists missing keys, unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches (checkpoint vs model): {_preview(shapes)}")
    if problems:
        raise StateDictError(f"state dict does not fit {name!r}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def create_model(
    name: str | ModelCfg,
    *,
    task: str | None = None,
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    tiny: bool = False,
) -> Any:
    """Build a registered model and load its weights through the resolution order.

    Args:
        name: Registry name or entry.
        task: Restrict the lookup to this task (better error messages).
        pretrained: Load the published weights. False builds the architecture with random
            weights and never touches the disk or the network (used for speed measurements at
            real sizes), unless ``checkpoint`` is given.
        checkpoint: Explicit file or folder, first in the resolution order; always loaded
            (strictly) when given, whatever ``pretrained`` says. Also accepted for random-init
            models, e.g. a state dict saved from one.
        tiny: Build the entry's tiny random-init variant instead (``--tiny``), unless a
            ``checkpoint`` is given (see :func:`textseg._registry.resolve_cfg`).

    Returns:
        The model (an ``nn.Module`` or a wrapper the entry's builder returns), on CPU, in
        eval mode.
    """
    cfg = resolve_cfg(name, task, tiny=tiny, checkpoint=checkpoint)
    if pretrained and cfg.status == "unpublished" and checkpoint is None:
        raise WeightsNotFoundError(
            f"{cfg.name!r} has no published weights (architecture only): train or obtain a "
            f"checkpoint and pass checkpoint=PATH, or build it with pretrained=False for random "
            f"weights"
        )
    model = cfg.builder(cfg)
    # A checkpoint given is a checkpoint loaded: pretrained=False only skips published weights.
    if checkpoint is not None or (pretrained and cfg.weights is not None):
        path = resolve_weights(cfg, checkpoint)
        if cfg.loader is not None:
            cfg.loader(model, path)
        else:
            state_dict = load_state_dict(path)
            if cfg.converter is not None:
                state_dict = cfg.converter(state_dict)
            load_strict(model, state_dict, cfg.name)
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model
