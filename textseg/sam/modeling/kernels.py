"""Linear layers through oneDNN with prepacked weights, for inference on the CPU.

``nn.Linear`` on the CPU calls MKL's sgemm, which on AMD processors runs a generic code path:
measured on this project's 2-core AMD EPYC (AVX-512), the SAM ViT-B MLP product (4096 x 768 ->
3072) ran at 33-47 GFLOP/s per core through ``F.linear`` and at 85-140 through oneDNN with the
weight reordered once into its blocked layout (``benchmarks/bench_sam_core.py`` prints both
peaks). PyTorch's own compiler uses the same two operators for CPU linear layers
(``torch.ops.mkldnn._reorder_linear_weight`` and ``_linear_pointwise``, which also fuses a
GELU into the product).

:func:`linear` takes that path when it can (a plain float32 ``nn.Linear`` on the CPU, no
autograd, oneDNN built in) and ``F.linear`` otherwise (CUDA, half precision, int8-quantized
layers, training); both compute the same float32 products, summed in a different order (a
relative difference around 1e-6). The packed weight is cached on the module and rebuilt when the
weight or bias changes (a state dict loaded, a parameter modified in place, a device move).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["linear", "linear_packed", "onednn_available", "pack_weight"]


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear operators."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN = onednn_available()


def _key(module: nn.Linear) -> tuple:
    tensors = [module.weight] + ([module.bias] if module.bias is not None else [])
    return tuple((id(t), t._version, t.data_ptr()) for t in tensors)


def _packed(module: nn.Linear, rows: int) -> torch.Tensor:
    """The weight reordered for oneDNN, cached on the module until a parameter changes."""
    key = _key(module)
    cached = module.__dict__.get("_textseg_onednn")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(module.weight, max(1, rows))
        cached = (key, packed)
        module.__dict__["_textseg_onednn"] = cached
    return cached[1]


def linear(module: nn.Module, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """``module(x)``, optionally followed by an exact (erf) GELU, through oneDNN when possible.

    Args:
        module: An ``nn.Linear`` (or any module mapping ``x``, e.g. an int8 dynamic-quantized
            linear, which is called as it is).
        x: ``(..., in_features)`` input.
        activation: None, or ``"gelu"`` (fused into the product on the oneDNN path).

    Returns:
        ``(..., out_features)``.
    """
    if activation not in (None, "gelu"):
        raise ValueError(f"activation: expected None or 'gelu', got {activation!r}")
    if (
        _ONEDNN
        and type(module) is nn.Linear
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and module.weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and x.dim() >= 2
        and x.numel() > 0
    ):
        rows = x.numel() // x.shape[-1]
        packed = _packed(module, rows)
        if activation == "gelu":
            return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "none", [], "")
    out = module(x)
    return F.gelu(out) if activation == "gelu" else out


def pack_weight(weight: torch.Tensor, rows: int) -> torch.Tensor | None:
    """``(out, in)`` float32 CPU weight reordered for :func:`linear_packed`, or None where
    oneDNN cannot take it (then :func:`linear_packed` uses ``F.linear``)."""
    if not (_ONEDNN and weight.device.type == "cpu" and weight.dtype == torch.float32):
        return None
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight, max(1, rows))


def linear_packed(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    packed: torch.Tensor | None,
    activation: str | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (then GELU for ``activation="gelu"``) through the
    ``packed`` weight of :func:`pack_weight` when given and usable, else plainly."""
    if (
        packed is not None
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and x.dim() >= 2
        and x.numel() > 0
    ):
        attr, algorithm = ("gelu", "none") if activation == "gelu" else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, attr, [], algorithm)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else out
