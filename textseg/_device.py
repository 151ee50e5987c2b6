"""Device and dtype arguments, resolved in one place. Nothing here changes global state."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (CUDA when present) -> device.

    Raises:
        ValueError: Unknown name, or a CUDA/MPS device asked for but not available (no silent
            CPU fallback).
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"device: expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {device!r}"
            ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for but CUDA is not available; use 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: {device!r} asked for but MPS is not available; use 'cpu'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"``, ``"bfloat16"`` or ``"float16"`` (or the torch dtype) -> torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
    elif dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype: expected 'float32', 'bfloat16' or 'float16', got {dtype!r}")
