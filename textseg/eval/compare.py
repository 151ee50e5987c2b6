"""Several presets on the same data in one call: one comparison report.

``textseg eval DATASET --preset sam3,grounded-sam,owlv2-sam,clip-points`` runs
:func:`compare_presets`: each preset is built, evaluated on the same images with the same
protocols (:mod:`textseg.eval.protocols`, one pass over the images per preset) and released
before the next is built, so one preset's models are in memory at a time. The comparison holds,
per preset, each protocol's headline metrics and the per-stage timings of its pipeline; it is
written as ``compare.json`` (strict JSON: a metric not measured is absent, never NaN),
``compare.md`` and ``compare.png``, with each preset's full report in ``DIR/<preset>/``.

With ``refine=N`` the box protocol is also run with N refinement rounds (the SAM paper's
zero-shot instance protocol: ground-truth box -> mask -> the same box plus the first mask's
low-res logits -> final mask; :func:`textseg.pipelines.decode_prompts`), reported as
``box_refine`` beside ``box``. The pipelines themselves run as their presets define.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textseg.eval.accumulators import NOT_RUN
from textseg.eval.dataset import EvalDataset
from textseg.eval.report import EvalReport, check_matplotlib
from textseg.eval.runner import PROTOCOLS, parse_protocols, prepare, run_protocols

__all__ = ["HEADLINE", "Comparison", "compare_presets", "parse_presets"]

#: The metrics a comparison shows per protocol (``box_refine``: the box protocol with
#: refinement rounds).
HEADLINE: dict[str, tuple[str, ...]] = {
    "box": ("miou",),
    "box_refine": ("miou",),
    "point": ("miou_top", "miou_oracle"),
    "text": ("ap", "ap50"),
    "label": ("accuracy",),
    "count": ("mae", "exact"),
}
#: Pipeline stages shown in the timing table and plot, in pipeline order.
STAGES: tuple[str, ...] = ("encode", "prompt", "decode", "label", "dedup")


def parse_presets(presets: str | Iterable[str]) -> list[str]:
    """``"sam3,grounded-sam"`` or a list -> preset names, checked, duplicates removed.

    Raises:
        ValueError: No name, or an unknown preset (the message lists the valid ones).
    """
    from textseg.pipelines.presets import get_preset

    items = presets.split(",") if isinstance(presets, str) else list(presets)
    names = list(dict.fromkeys(str(p).strip() for p in items if str(p).strip()))
    if not names:
        raise ValueError("presets: expected one or more preset names, got none")
    for name in names:
        get_preset(name)
    return names


@dataclass
class Comparison:
    """Several presets evaluated on the same data (:func:`compare_presets`).

    Attributes:
        dataset: Dataset name and annotation file.
        images: Images evaluated.
        classes: The prompted classes.
        presets: Preset names, in run order.
        metrics: ``{preset: {protocol: {metric: value}}}``, headline metrics (:data:`HEADLINE`)
            that were measured.
        timings: ``{preset: {"build_s", "wall_s", "ms_per_image", stage: ms per image}}``.
        errors: ``{preset: message}`` for presets that could not be built or run.
        skipped: ``{preset: {protocol: reason}}`` for protocols a preset cannot run (the
            refinement rounds with a SAM that takes no 256x256 mask input).
        reports: ``{preset: EvalReport}`` (not serialised here; saved per preset).
    """

    dataset: str
    images: int
    classes: list[str]
    presets: list[str]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    reports: dict[str, EvalReport] = field(default_factory=dict, repr=False)

    def protocols(self) -> list[str]:
        """The protocols any preset reported, in :data:`HEADLINE` order."""
        seen = {p for rows in self.metrics.values() for p in rows}
        return [p for p in HEADLINE if p in seen]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: values not measured (None, NaN) are left out."""
        return {
            "dataset": self.dataset,
            "images": self.images,
            "classes": self.classes,
            "presets": self.presets,
            "metrics": {
                preset: {
                    protocol: {k: v for k, v in values.items() if _finite(v)}
                    for protocol, values in rows.items()
                }
                for preset, rows in self.metrics.items()
            },
            "timings": {
                preset: {k: v for k, v in row.items() if _finite(v)}
                for preset, row in self.timings.items()
            },
            "errors": dict(self.errors),
            "skipped": {k: dict(v) for k, v in self.skipped.items()},
        }

    def lines(self) -> list[str]:
        """One line per preset: its headline metrics and time per image."""
        out = []
        for preset in self.presets:
            if preset in self.errors:
                out.append(f"{preset}: failed: {self.errors[preset]}")
                continue
            parts = [
                f"{protocol} {metric} {_fmt(value)}"
                for protocol, values in self.metrics.get(preset, {}).items()
                for metric, value in values.items()
            ]
            parts += [f"{p} not run" for p in self.skipped.get(preset, {})]
            ms = self.timings.get(preset, {}).get("ms_per_image")
            parts.append(f"{_fmt(ms, 0)} ms/image" if ms is not None else "")
            out.append(f"{preset}: " + ", ".join(p for p in parts if p))
        return out

    def to_markdown(self) -> str:
        protocols = self.protocols()
        columns = [(p, m) for p in protocols for m in HEADLINE[p]]
        head = ["preset", *[f"{p} {m}" for p, m in columns]]
        rows = [f"# textseg comparison: {self.dataset}", ""]
        rows.append(f"{self.images} images, classes: {', '.join(self.classes)}")
        rows += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for preset in self.presets:
            values = self.metrics.get(preset, {})
            cells = [_fmt(values.get(p, {}).get(m)) for p, m in columns]
            rows.append(f"| {preset} | " + " | ".join(cells) + " |")
        rows += ["", "Time per image (ms; pipeline stages are the text protocol's run):", ""]
        head = ["preset", *STAGES, "total", "wall ms/image", "build s"]
        rows += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for preset in self.presets:
            t = self.timings.get(preset, {})
            cells = [_fmt(t.get(s), 0) for s in (*STAGES, "total")]
            cells += [_fmt(t.get("ms_per_image"), 0), _fmt(t.get("build_s"), 1)]
            rows.append(f"| {preset} | " + " | ".join(cells) + " |")
        if self.errors or self.skipped:
            rows.append("")
        rows += [f"- {p}: failed: {e}" for p, e in self.errors.items()]
        rows += [
            f"- {preset}: {protocol} not run: {reason}"
            for preset, reasons in self.skipped.items()
            for protocol, reason in reasons.items()
        ]
        return "\n".join(rows) + "\n"

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Headline metrics per preset (grouped bars) and stage times (stacked bars), as PNG."""
        figure_cls, canvas_cls = check_matplotlib()
        path = Path(path)
        presets = [p for p in self.presets if p not in self.errors]
        columns = [(p, m) for p in self.protocols() for m in HEADLINE[p] if m != "mae"]
        fig = figure_cls(figsize=(max(8.0, 1.4 * len(columns) + 3), 7.5))
        canvas_cls(fig)
        top, bottom = fig.subplots(2, 1)
        step = 0.8 / max(1, len(presets))
        for j, preset in enumerate(presets):
            values = [_num(self.metrics.get(preset, {}).get(p, {}).get(m)) for p, m in columns]
            xs = [i - 0.4 + step * (j + 0.5) for i in range(len(columns))]
            top.bar(xs, values, width=step, label=preset)
        top.set_xticks(range(len(columns)))
        top.set_xticklabels([f"{p}\n{m}" for p, m in columns], fontsize=7)
        top.set_ylim(0, 1.0)
        top.set_title("metrics (higher is better)", fontsize=9, loc="left")
        top.legend(fontsize=7)
        top.grid(axis="y", alpha=0.3)
        base = np.zeros(len(presets))
        for stage in STAGES:
            values = np.array([_num(self.timings.get(p, {}).get(stage)) for p in presets])
            bottom.bar(range(len(presets)), values, bottom=base, label=stage)
            base += values
        bottom.set_xticks(range(len(presets)))
        bottom.set_xticklabels(presets, fontsize=8)
        bottom.set_ylabel("ms per image", fontsize=8)
        bottom.set_title("pipeline time per image, by stage", fontsize=9, loc="left")
        bottom.legend(fontsize=7)
        bottom.grid(axis="y", alpha=0.3)
        fig.suptitle(f"textseg comparison: {self.dataset}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path

    def save(self, out_dir: str | os.PathLike[str], *, plot: bool = True) -> dict[str, Path]:
        """Write ``compare.json``, ``compare.md``, ``compare.png`` (``plot``) and each preset's
        report into ``out_dir/<preset>/``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "compare.json", "markdown": out / "compare.md"}
        paths["json"].write_text(
            json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        if plot:
            paths["plot"] = self.plot(out / "compare.png")
        for preset, report in self.reports.items():
            report.save(out / preset, plot=plot)
        return paths


def compare_presets(
    dataset: str | os.PathLike[str] | EvalDataset,
    presets: str | Sequence[str],
    protocols: str | Iterable[str] = PROTOCOLS,
    *,
    refine: int = 0,
    labeler: Any | None = None,
    max_images: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    plot: bool = True,
    progress: bool | None = None,
    seed: int | None = 0,
    build: Callable[[str], Any] | None = None,
    **preset_options: Any,
) -> Comparison:
    """Evaluate several presets on the same images with the same protocols.

    Args:
        dataset: A folder (``annotations.json`` + ``images/``), a COCO JSON or an
            :class:`EvalDataset`.
        presets: Preset names, or ``"a,b,c"``.
        protocols: As :func:`textseg.eval.evaluate` (default all five).
        refine: Also run the box protocol with this many refinement rounds (``box_refine``).
        labeler: For the label protocol: a labeler or CLIP registry name (default: each
            preset's labeler, else CLIP ViT-B/32 naming).
        max_images: Only the first N images (with a path).
        out_dir: Write the comparison and each preset's report there.
        plot: With ``out_dir``: also write ``compare.png`` and the per-class plots.
        progress: Show progress bars (None: on a terminal only).
        seed: Torch seed each preset is built under (random-weight models, ``tiny=True``,
            are then the same in every run); None leaves the RNG alone.
        build: ``build(name) -> segmenter`` instead of ``TextSegmenter.from_preset(name,
            **preset_options)`` (tests, custom compositions).
        **preset_options: ``TextSegmenter.from_preset`` options shared by every preset
            (``tiny``, ``device``, ``box_threshold``...).

    Returns:
        The :class:`Comparison`. A preset that fails to build or run (missing weights, an
        option it does not take) is recorded in ``errors`` and the others still run.

    Raises:
        ValueError: Unknown preset or protocol, or nothing to evaluate.
    """
    import torch

    names = parse_presets(presets)
    protocol_names = parse_protocols(protocols)
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine: expected an integer >= 0 (rounds), got {refine!r}")
    data, vocab = prepare(dataset, max_images, out_dir=out_dir, plot=plot)
    comparison = Comparison(
        dataset=f"{data.name} ({data.annotations_path})",
        images=len(data),
        classes=list(vocab.names),
        presets=names,
    )
    from textseg.pipelines.presets import get_preset

    for name in names:
        tiny = bool(preset_options.get("tiny")) or get_preset(name).tiny
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                if build is not None:
                    segmenter = build(name)
                else:
                    from textseg.pipelines import TextSegmenter

                    segmenter = TextSegmenter.from_preset(name, **preset_options)
                build_s = time.perf_counter() - start
                report = run_protocols(
                    data,
                    vocab,
                    segmenter,
                    protocol_names,
                    labeler=labeler,
                    tiny=tiny,
                    refine=refine,
                    name=name,
                    progress=progress,
                )
        # Missing weights, an option the preset does not take, out of memory.
        except (ValueError, TypeError, OSError, RuntimeError) as err:
            comparison.errors[name] = str(err).splitlines()[0] if str(err) else type(err).__name__
            continue
        by_name = report.protocols
        measured = {
            protocol: {
                m: float(by_name[protocol].metrics[m])
                for m in HEADLINE[protocol]
                if _finite(by_name[protocol].metrics.get(m))
            }
            for protocol in HEADLINE
            if protocol in by_name
        }
        comparison.metrics[name] = {p: values for p, values in measured.items() if values}
        refined = by_name.get("box_refine")
        if refined is not None and refined.notes[0].startswith(NOT_RUN):
            comparison.skipped[name] = {"box_refine": refined.notes[0][len(NOT_RUN) :]}
        timings = report.timings
        row = {"build_s": build_s, "wall_s": timings["wall_s"]}
        row["ms_per_image"] = timings["ms_per_image"]
        row.update(timings.get("pipeline_ms", {}))
        comparison.timings[name] = row
        # The preset's own report holds the protocols asked for (box_refine is in the table).
        report.protocols = {k: r for k, r in by_name.items() if k in protocol_names}
        comparison.reports[name] = report
        del segmenter, report, by_name  # one preset's models in memory at a time
        gc.collect()
    if out_dir is not None:
        comparison.save(out_dir, plot=plot)
    return comparison


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any) -> float:
    return float(value) if _finite(value) else 0.0


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "-"
