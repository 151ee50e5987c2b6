"""Image encoders: textseg vs the reference code path, and the machine's peak, in one run.

    python benchmarks/bench_encoders.py [--repeats 2] [--skip-vit] [--skip-tinyvit]

- SAM ViT-B: ``SamCore``'s encoder vs segment_anything's ``ImageEncoderViT`` (same random
  weights, relative-position tables randomised), float32, one 1024 x 1024 input; the result
  difference is printed. GFLOP/s = the official encoder's FLOPs (counted by
  ``torch.utils.flop_counter`` on the meta device) / time, for both sides, beside the peak of
  a plain 2048^3 float32 matrix product on the same threads, through ``torch.mm`` (MKL) and
  through oneDNN (the kernel textseg's linear layers use); also with ``dtype="int8"``.
- MobileSAM TinyViT: textseg's eval path vs MobileSAM's order of operations (NCHW
  convolutions, separate BatchNorms, the attention bias gathered per call, padded ``qkv``),
  which the same module runs in training mode / with autograd on: same weights, random
  BatchNorm statistics.

Times are the best of ``--repeats`` runs, the two sides alternating. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from _common import machine, official_sam, table

from textseg._hub import create_model


def _best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best time of each function, calls interleaved."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def peak_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a ``size``^3 float32 product via torch.mm (MKL) and via oneDNN."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    fns: dict[str, Callable[[], object]] = {"torch.mm": lambda: torch.mm(a, b)}
    if torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), size)
        fns["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
    with torch.inference_mode():
        times = _best(fns, repeats)
    return {k: 2 * size**3 / t / 1e9 for k, t in times.items()}


def encoder_flops(encoder: torch.nn.Module, size: int) -> float:
    """FLOPs of one ``size x size`` image through ``encoder`` (counted on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(encoder).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, 3, size, size, device="meta"))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--skip-tinyvit", action="store_true")
    args = parser.parse_args()
    rows = []
    peaks = peak_gflops()
    x = torch.randn(1, 3, 1024, 1024)

    if not args.skip_vit:
        from textseg.sam import SamCore

        torch.manual_seed(0)
        sam = create_model("sam-vit-b", task="sam", pretrained=False)
        with torch.no_grad():
            for name, param in sam.named_parameters():
                if "rel_pos" in name:
                    param.normal_(0.0, 0.5)
        official = official_sam(sam, "sam-vit-b").image_encoder
        flops = encoder_flops(official, 1024)
        int8 = SamCore(copy.deepcopy(sam), dtype="int8").backend.model.image_encoder
        ours = sam.image_encoder
        with torch.inference_mode():
            diff = float((ours(x) - official(x)).abs().max())
            diff8 = float((int8(x) - official(x)).abs().max())
            t = _best(
                {
                    "official": lambda: official(x),
                    "textseg": lambda: ours(x),
                    "int8": lambda: int8(x),
                },
                args.repeats,
            )
        del official, int8, sam
        gf = flops / 1e9
        rows.append(
            (
                "SAM ViT-B encoder, float32 (s)",
                f"{t['official']:.2f}",
                f"{t['textseg']:.2f}",
                f"{t['official'] / t['textseg']:.2f}x",
                f"{gf / t['official']:.0f} vs {gf / t['textseg']:.0f} GFLOP/s ({gf:.0f} GFLOP); "
                f"max abs diff {diff:.1e}",
            )
        )
        rows.append(
            (
                "SAM ViT-B encoder, int8 dynamic (s)",
                f"{t['official']:.2f}",
                f"{t['int8']:.2f}",
                f"{t['official'] / t['int8']:.2f}x",
                f"max abs diff to float32 {diff8:.2f} (mask agreement: bench_precision.py)",
            )
        )

    if not args.skip_tinyvit:
        torch.manual_seed(0)
        encoder = create_model("mobile-sam", task="sam", pretrained=False).image_encoder.eval()
        with torch.no_grad():
            for module in encoder.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 2.0)
        reference = copy.deepcopy(encoder).requires_grad_(False)

        def mobile_sam_order() -> torch.Tensor:
            # Autograd on (nothing requires grad, so nothing is recorded): the module takes
            # MobileSAM's own order of operations.
            with torch.enable_grad():
                return reference(x)

        with torch.no_grad():
            diff = float((encoder(x) - mobile_sam_order()).abs().max())
            t = _best({"ref": mobile_sam_order, "textseg": lambda: encoder(x)}, args.repeats)
        rows.append(
            (
                "MobileSAM TinyViT encoder (s)",
                f"{t['ref']:.2f}",
                f"{t['textseg']:.2f}",
                f"{t['ref'] / t['textseg']:.2f}x",
                f"target < 1 s; max abs diff {diff:.1e}",
            )
        )

    print(f"machine: {machine()}")
    print(
        "peak of a 2048^3 float32 product on these threads: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
    )
    print()
    header = ("encoder", "reference", "textseg", "speed-up", "notes")
    print(table(header, rows))


if __name__ == "__main__":
    main()
