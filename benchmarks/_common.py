"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``).

Every benchmark measures textseg and a reference code path in the same run, on the same
weights and images, and prints ratios; nothing here is timed by the test suite.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

DATA = Path(os.environ.get("TEXTSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
#: segment_anything's own builders for the registry's SAM sizes.
OFFICIAL_SAM = {"sam-vit-b": "vit_b", "sam-vit-l": "vit_l", "sam-vit-h": "vit_h"}


class RssSampler:
    """Samples this process's resident set size from ``/proc/self/statm`` in a thread."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> float:
        """Resident set size now, in MiB."""
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * 4096 / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def machine() -> str:
    """One line describing where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: keep platform's answer
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), {device}; "
        f"torch {torch.__version__}, python {sys.version.split()[0]}, {platform.system()}"
    )


def coco_images(n: int, offset: int = 0) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` coco-dev images (sorted by name) as ``(name, (H, W, 3) uint8 RGB)``."""
    from textseg._image import load_image

    paths = sorted((DATA / "coco-dev" / "images").glob("*.jpg"))[offset : offset + n]
    if len(paths) < n:
        raise ValueError(f"asked for {n} images, {DATA / 'coco-dev' / 'images'} has {len(paths)}")
    return [(p.name, load_image(p)) for p in paths]


def official_sam(textseg_sam: torch.nn.Module, name: str) -> torch.nn.Module:
    """A ``segment_anything`` SAM holding ``textseg_sam``'s weights (strict load).

    The registry's ViT-B/L/H come from ``segment_anything.sam_model_registry``; other entries
    (the tiny test model, MobileSAM) from textseg's builder with the official attention kept.
    """
    if name in OFFICIAL_SAM:
        from segment_anything import sam_model_registry

        model = sam_model_registry[OFFICIAL_SAM[name]]()
    else:
        from textseg._hub import create_model
        from textseg._registry import get_model_cfg

        cfg = get_model_cfg(name, "sam")
        model = create_model(
            replace(cfg, arch={**cfg.arch, "sdpa_attention": False}), pretrained=False
        )
    model.load_state_dict(textseg_sam.state_dict())
    return model.eval()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def timed(fn: Callable[[], T], repeats: int = 1) -> tuple[float, T]:
    """Best wall time of ``repeats`` calls, in seconds, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out  # type: ignore[return-value]


def random_boxes(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(n, 4)`` XYXY boxes of 20 px up to 40% of the image inside an ``h x w`` image."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, w * 0.6, n)
    y0 = rng.uniform(0, h * 0.6, n)
    x1 = np.minimum(x0 + rng.uniform(20, w * 0.4, n), w - 1)
    y1 = np.minimum(y0 + rng.uniform(20, h * 0.4, n), h - 1)
    return np.stack([x0, y0, x1, y1], 1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def match_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Two stacks of ``(N, H, W)`` masks, matched both ways: the smallest best-match IoU of any
    mask of either stack among the other's (1.0: every mask found; exact RLE IoU)."""
    from pycocotools import mask as mask_utils

    from textseg.io.rle import encode_masks

    if len(a) == 0 or len(b) == 0:
        return 1.0 if len(a) == len(b) else 0.0
    ious = np.asarray(mask_utils.iou(encode_masks(a), encode_masks(b), [0] * len(b)))
    return float(min(ious.max(1).min(), ious.max(0).min()))


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """A Markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
