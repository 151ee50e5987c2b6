"""What an evaluation returns and writes: :class:`EvalReport` (JSON, Markdown, PNG plot)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PROTOCOL_TITLES", "EvalReport", "ProtocolResult"]

#: One line per protocol, for reports.
PROTOCOL_TITLES: dict[str, str] = {
    "box": "box prompts: SAM prompted with each ground-truth box",
    "point": "point prompts: one click at the point farthest from the mask boundary",
    "text": "text prompts: the pipeline prompted with the class names, COCO mask AP",
    "label": "labelling: the labeler naming the ground-truth masks",
    "count": "counting: per-image, per-class instance counts of the pipeline",
    "specialist": "zero-shot SAM (ground-truth boxes) vs specialists trained on the ground "
    "truth and on textseg's labels, semantic mIoU on held-out images",
}

#: Per protocol: the overall metrics shown in the summary, and the per-class metrics plotted.
_HEADLINE: dict[str, tuple[str, ...]] = {
    "box": ("miou", "miou_class_mean"),
    "point": ("miou_top", "miou_oracle"),
    "text": ("ap", "ap50", "ap75"),
    "label": ("accuracy", "unknown_rate"),
    "count": ("mae", "exact", "mae_present", "exact_present"),
    "specialist": ("miou_sam_gt_boxes", "miou_specialist_gt", "miou_specialist_textseg"),
}
_PLOTTED: dict[str, tuple[str, ...]] = {
    "box": ("miou",),
    "point": ("miou_top", "miou_oracle"),
    "text": ("ap", "ap50"),
    "label": ("accuracy", "unknown_rate"),
    "count": ("mae", "exact"),
    "specialist": ("sam_gt_boxes", "specialist_gt", "specialist_textseg"),
}

#: Protocols scored on the pipeline's results: their stage timings are the pipeline's.
_PIPELINE_PROTOCOLS = ("text", "count")


Number = float | int | None


@dataclass
class ProtocolResult:
    """The outcome of one protocol.

    Attributes:
        name: ``"box"``, ``"point"``, ``"text"``, ``"label"`` or ``"count"``.
        metrics: Overall metrics (None where undefined, e.g. no instances).
        per_class: ``{class name: {metric: value}}`` for every prompted class.
        timings: Milliseconds per image, by stage (``encode``, ``decode``, ``prompt``,
            ``label``, ``total``...), plus ``wall_s``: the protocol's own time in seconds.
        images: Images evaluated.
        instances: Ground-truth instances evaluated.
        notes: Remarks on how the numbers were obtained.
        predictions: ``text`` only: the COCO results list (``image_id``, ``category_id``,
            ``segmentation`` RLE, ``bbox``, ``score``); not part of :meth:`to_dict`.
    """

    name: str
    metrics: dict[str, Any]
    per_class: dict[str, dict[str, Any]]
    timings: dict[str, float]
    images: int
    instances: int
    notes: list[str] = field(default_factory=list)
    predictions: list[dict[str, Any]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as null)."""
        return _clean(
            {
                "name": self.name,
                "title": PROTOCOL_TITLES.get(self.name, self.name),
                "images": self.images,
                "instances": self.instances,
                "metrics": self.metrics,
                "per_class": self.per_class,
                "timings": self.timings,
                "notes": self.notes,
            }
        )


@dataclass
class EvalReport:
    """Results of :func:`textseg.eval.evaluate`.

    Attributes:
        dataset: Dataset name and annotation file.
        segmenter: What was evaluated (preset name or class).
        device: The SAM core's device.
        images: Images evaluated.
        classes: The prompted classes (categories with instances in the evaluated images).
        protocols: ``{protocol name: ProtocolResult}`` in run order.
        timings: ``wall_s`` (the whole run), ``ms_per_image``, ``pipeline_ms`` (mean per-stage
            times of the pipeline, from ``Result.timings``) and ``sam_cache`` (hits, misses).
    """

    dataset: str
    segmenter: str
    device: str
    images: int
    classes: list[str]
    protocols: dict[str, ProtocolResult]
    timings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ProtocolResult:
        if name not in self.protocols:
            raise KeyError(f"protocol {name!r} was not run; ran: {', '.join(self.protocols)}")
        return self.protocols[name]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as null)."""
        return _clean(
            {
                "dataset": self.dataset,
                "segmenter": self.segmenter,
                "device": self.device,
                "images": self.images,
                "classes": self.classes,
                "timings": self.timings,
                "protocols": {k: v.to_dict() for k, v in self.protocols.items()},
            }
        )

    def summary(self) -> list[str]:
        """One line per protocol with its headline metrics."""
        lines = []
        for name, res in self.protocols.items():
            values = ", ".join(
                f"{k} {_fmt(res.metrics.get(k))}"
                for k in _HEADLINE.get(name, ())
                if k in res.metrics
            )
            lines.append(f"{name}: {values} ({res.instances} instances, {res.images} images)")
        return lines

    def timing_lines(self) -> list[str]:
        """Where the time went: the pipeline's mean stage times per image (when it ran) and
        each protocol's own time (on top of the pipeline's)."""
        lines = []
        stages = self.timings.get("pipeline_ms")
        if stages:
            lines.append(
                "pipeline, ms per image: "
                + ", ".join(f"{k} {_fmt(v, 1)}" for k, v in stages.items())
            )
        own = [
            f"{name} {_fmt(res.timings['wall_s'], 1)}"
            for name, res in self.protocols.items()
            if "wall_s" in res.timings
        ]
        if own:
            lines.append("protocols, s: " + ", ".join(own))
        return lines

    def to_markdown(self) -> str:
        """A Markdown report: summary, then per protocol a per-class table and timings."""
        wall = self.timings.get("wall_s")
        out = [
            f"# textseg evaluation: {self.dataset}",
            "",
            f"- segmenter: {self.segmenter} on {self.device}",
            f"- images: {self.images}; classes prompted: {len(self.classes)}",
        ]
        if wall is not None:
            out.append(
                f"- wall time: {wall:.1f} s ({_fmt(self.timings.get('ms_per_image'), 0)} ms per "
                f"image)"
            )
        out += [f"- {line}" for line in self.timing_lines()]
        out += ["", "## Summary", "", "| protocol | metric | value |", "|---|---|---:|"]
        for name, res in self.protocols.items():
            for key in _HEADLINE.get(name, ()):
                if key in res.metrics:
                    out.append(f"| {name} | {key} | {_fmt(res.metrics[key])} |")
        out += self._timings_table()
        for name, res in self.protocols.items():
            out += ["", f"## {name}: {PROTOCOL_TITLES.get(name, name)}", ""]
            out.append(
                f"{res.instances} instances in {res.images} images. "
                + ", ".join(f"{k}: {_fmt(v)}" for k, v in res.metrics.items())
                + "."
            )
            for note in res.notes:
                out.append(f"\n> {note}")
            columns = _columns(res.per_class)
            if columns:
                out += ["", "| class | " + " | ".join(columns) + " |"]
                out.append("|---|" + "---:|" * len(columns))
                for cls, row in res.per_class.items():
                    out.append(f"| {cls} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
            if res.timings:
                out += [
                    "",
                    "Timings: "
                    + ", ".join(
                        f"{k} {_fmt(v, 1)} {'s' if k.endswith('_s') else 'ms/img'}"
                        for k, v in res.timings.items()
                    ),
                ]
        return "\n".join(out) + "\n"

    def _timings_table(self) -> list[str]:
        """Markdown: one row per pipeline stage, one column for the pipeline (once per image)
        and one per protocol (its own work on top of it); ms per image, and seconds in all."""
        columns: list[tuple[str, dict[str, Any]]] = []
        if self.timings.get("pipeline_ms"):
            total = self.timings["pipeline_ms"].get("total")
            seconds = None if total is None else total * self.images / 1000.0
            columns.append(("pipeline", {**self.timings["pipeline_ms"], "wall_s": seconds}))
        for name, res in self.protocols.items():
            if not res.timings:
                continue
            if name in _PIPELINE_PROTOCOLS:
                # Their stage times are the pipeline's, shown once in its column.
                columns.append((name, {k: v for k, v in res.timings.items() if k.endswith("_s")}))
            else:
                columns.append((name, dict(res.timings)))
        if not columns:
            return []
        stages = [k for _, t in columns for k in t if not k.endswith("_s")]
        stages = list(dict.fromkeys(stages))
        extras = list(dict.fromkeys(k for _, t in columns for k in t if k.endswith("_s")))
        out = ["", "## Timings", ""]
        out.append("| stage | " + " | ".join(name for name, _ in columns) + " |")
        out.append("|---|" + "---:|" * len(columns))
        for key in stages:
            cells = " | ".join(_fmt(t.get(key), 1) for _, t in columns)
            out.append(f"| {key} (ms/img) | {cells} |")
        for key in extras:
            label = "time (s)" if key == "wall_s" else f"{key[:-2]} (s)"
            cells = " | ".join(_fmt(t.get(key), 1) for _, t in columns)
            out.append(f"| {label} | {cells} |")
        return out

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | os.PathLike[str], *, plot: bool = True) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, ``per_class.png`` (``plot``) and, after the
        text protocol, ``text_results.json`` (COCO results) into ``out_dir``.

        Returns:
            ``{"json", "markdown", "plot", "results": path}`` for the files written.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "report.md"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        text = self.protocols.get("text")
        if text is not None and text.predictions is not None:
            paths["results"] = out / "text_results.json"
            paths["results"].write_text(json.dumps(text.predictions), encoding="utf-8")
        if plot:
            paths["plot"] = self.plot(out / "per_class.png")
        return paths

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Bar charts of the per-class results, one panel per protocol, as a PNG.

        Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend).

        Raises:
            ImportError: matplotlib is not installed (``pip install matplotlib``).
        """
        figure_cls, canvas_cls = check_matplotlib()
        path = Path(path)
        panels = [n for n in self.protocols if n in _PLOTTED and self.protocols[n].per_class]
        classes = self.classes
        width = max(8.0, 0.28 * len(classes) + 2.5)
        fig = figure_cls(figsize=(width, 2.6 * max(1, len(panels)) + 0.8))
        canvas_cls(fig)
        axes = fig.subplots(max(1, len(panels)), 1, squeeze=False)[:, 0]
        for ax, name in zip(axes, panels):
            res = self.protocols[name]
            keys = _PLOTTED[name]
            step = 0.8 / len(keys)
            for j, key in enumerate(keys):
                values = [_num(res.per_class.get(c, {}).get(key)) for c in classes]
                xs = [i - 0.4 + step * (j + 0.5) for i in range(len(classes))]
                ax.bar(xs, values, width=step, label=key)
            ax.set_title(PROTOCOL_TITLES.get(name, name), fontsize=9, loc="left")
            ax.set_xticks(range(len(classes)))
            ax.set_xticklabels(classes, rotation=90, fontsize=7)
            ax.set_xlim(-0.6, len(classes) - 0.4)
            if name != "count":
                ax.set_ylim(0, 1.0)
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(axis="y", alpha=0.3)
        if not panels:
            axes[0].text(0.5, 0.5, "no per-class results", ha="center", va="center")
            axes[0].set_axis_off()
        fig.suptitle(f"textseg eval: {self.dataset} ({self.segmenter})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path


def check_matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "the per-class plot needs matplotlib: pip install matplotlib (or skip the plot: "
            "plot=False, --no-plot)"
        ) from err
    return Figure, FigureCanvasAgg


def _columns(per_class: dict[str, dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in per_class.values():
        columns += [k for k in row if k not in columns]
    return columns


def _num(value: Any) -> float:
    if value is None or isinstance(value, str):
        return 0.0
    return float(value) if math.isfinite(float(value)) else 0.0


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _clean(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
