"""Device and precision arguments, resolved in one place. Nothing here changes global state:
autocast is a context entered around textseg's own calls and left after them."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "Precision",
    "autocast",
    "quantize_linear_int8",
    "resolve_device",
    "resolve_dtype",
    "resolve_precision",
]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_INT8 = ("int8", "qint8")


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


@dataclass(frozen=True)
class Precision:
    """How a model computes, resolved from a ``dtype`` argument and a device.

    Attributes:
        weights: dtype the parameters are cast to (float32 unless a CPU half precision).
        autocast: Half dtype to run the model's calls under ``torch.autocast`` (CUDA bf16/fp16:
            weights stay float32, matrix products run in half), or None.
        int8: Dynamic int8 quantization of the linear layers (CPU only; weights int8,
            activations quantized per call, accumulation in int32).
    """

    weights: torch.dtype = torch.float32
    autocast: torch.dtype | None = None
    int8: bool = False

    @property
    def compute(self) -> torch.dtype:
        """The dtype most arithmetic runs in (int8 layers excepted)."""
        return self.autocast or self.weights

    @property
    def name(self) -> str:
        if self.int8:
            return "int8"
        return str(self.compute).removeprefix("torch.")


def resolve_precision(
    dtype: str | torch.dtype | None,
    device: torch.device,
    *,
    autocast: bool | None = None,
) -> Precision:
    """A ``dtype`` argument -> :class:`Precision` on ``device``.

    Args:
        dtype: ``"float32"`` (default), ``"bfloat16"`` / ``"float16"`` (or the torch dtype), or
            ``"int8"`` (CPU only: dynamic int8 quantization of the linear layers; opt-in,
            never chosen by default).
        device: The resolved device.
        autocast: Half precision through ``torch.autocast`` (weights stay float32) instead of
            casting the weights. None: autocast on CUDA, a cast elsewhere.

    Raises:
        ValueError: Unknown dtype, or int8 asked for on a device other than the CPU.
    """
    if isinstance(dtype, str) and dtype.lower() in _INT8:
        if device.type != "cpu":
            raise ValueError(
                f"dtype: 'int8' (dynamic quantization) runs on the CPU only, got device "
                f"{str(device)!r}; use dtype 'bfloat16' or 'float16' on {device.type}"
            )
        if autocast:
            raise ValueError("autocast: not available with dtype 'int8'; use a half dtype")
        return Precision(int8=True)
    try:
        torch_dtype = resolve_dtype(dtype)
    except ValueError:
        raise ValueError(
            f"dtype: expected 'float32', 'bfloat16', 'float16' or 'int8' (CPU), got {dtype!r}"
        ) from None
    if torch_dtype == torch.float32:
        if autocast:
            raise ValueError("autocast: needs dtype 'bfloat16' or 'float16', got float32")
        return Precision()
    use_autocast = device.type == "cuda" if autocast is None else bool(autocast)
    if use_autocast:
        return Precision(autocast=torch_dtype)
    return Precision(weights=torch_dtype)


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """``torch.autocast`` for the duration of one textseg call when ``precision`` asks for it
    (a no-op otherwise); entered and left here, never left on."""
    if precision.autocast is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=precision.autocast):
        yield


def quantize_linear_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of every ``nn.Linear`` inside ``module`` (CPU; in place).

    Weights are quantized once per output channel; activations per call (dynamic). The
    result runs on fbgemm/oneDNN int8 kernels (VNNI where the CPU has it) and stays on the
    CPU. Returns the module.

    Raises:
        ValueError: ``module`` has parameters outside the CPU or not in float32.
    """
    for name, param in module.named_parameters():
        if param.device.type != "cpu" or param.dtype != torch.float32:
            raise ValueError(
                f"int8 quantization needs a float32 CPU model; {name} is {param.dtype} on "
                f"{param.device}"
            )
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch marks its eager quantization API deprecated in favour of torchao (not a
        # dependency here); the kernels it calls are the supported ones.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(
            module, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True
        )
