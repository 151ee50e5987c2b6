"""The one evaluation runner: protocols named -> accumulators -> one pass over the images ->
an :class:`~textseg.eval.report.EvalReport`.

:func:`textseg.eval.evaluate` (one segmenter) and :func:`textseg.eval.compare.compare_presets`
(one segmenter per preset, on the same images) both run through :func:`run_protocols`; the
single-protocol functions (``eval_box_prompts``...) through :func:`run_accumulators`. Each
image is read once, encoded by SAM once (the SAM core's cache serves the other protocols) and
segmented by the pipeline once (its result serves both the text and the counting protocols), so
memory stays bounded and the pipeline's stage timings are those of a normal run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textseg.eval.accumulators import (
    Accumulator,
    BoxPrompts,
    Counting,
    Labeling,
    PointPrompts,
    PromptedClasses,
    RefinedBoxPrompts,
    TextPrompts,
)
from textseg.eval.dataset import EvalDataset, Sample, load_dataset
from textseg.eval.protocol_names import EXTRA_PROTOCOLS, PROTOCOLS, parse_protocols
from textseg.eval.report import EvalReport, ProtocolResult

__all__ = [
    "DEFAULT_LABELER_CLIP",
    "EXTRA_PROTOCOLS",
    "PROTOCOLS",
    "build_accumulators",
    "default_labeler",
    "parse_protocols",
    "prepare",
    "run_accumulators",
    "run_protocols",
]

#: CLIP model of the labeler built for the labelling protocol when the segmenter has none.
DEFAULT_LABELER_CLIP = "clip-vit-b-32"

#: What each protocol needs of the segmenter.
_NEEDS = {"box": "sam", "point": "sam", "text": "segment", "count": "segment", "specialist": "sam"}


def prepare(
    dataset: str | os.PathLike[str] | EvalDataset,
    max_images: int | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    plot: bool = False,
) -> tuple[EvalDataset, PromptedClasses]:
    """What every evaluation does before its first image: check the output folder (created;
    matplotlib importable when ``plot``), load the dataset and find the prompted classes.

    Raises:
        ValueError: ``max_images`` with a built dataset, or no annotated image.
        TypeError: ``dataset`` of another type.
        FileNotFoundError: Missing dataset files.
        ImportError: ``plot`` without matplotlib.
    """
    if out_dir is not None:
        # Fail before a long run, not after it: an unwritable folder, a missing matplotlib.
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if plot:
            from textseg.eval.report import check_matplotlib

            check_matplotlib()
    if isinstance(dataset, EvalDataset):
        if max_images is not None:
            raise ValueError(
                "max_images: give it to EvalDataset(...) / load_dataset(...), not with an "
                "EvalDataset already built"
            )
        data = dataset
    elif isinstance(dataset, (str, os.PathLike)):
        data = load_dataset(dataset, max_images=max_images)
    else:
        raise TypeError(
            f"dataset: expected a folder path, a COCO JSON path or an EvalDataset, got "
            f"{type(dataset).__name__}"
        )
    vocab = PromptedClasses(data)
    if not vocab.names:
        raise ValueError(
            f"{data.annotations_path}: the {len(data)} evaluated images have no "
            f"non-crowd annotation; nothing to evaluate"
        )
    return data, vocab


def default_labeler(segmenter: Any, labeler: Any | None = None, *, tiny: bool = False) -> Any:
    """The labeler the ``label`` protocol runs: ``labeler`` when it is one; else the
    segmenter's; else a name-mode :class:`~textseg.labelers.ClipLabeler` on ``labeler`` (a
    CLIP registry name) or :data:`DEFAULT_LABELER_CLIP`, its tiny variant with ``tiny``.

    Raises:
        TypeError: ``labeler`` is neither a labeler nor a name.
    """
    if labeler is not None and not isinstance(labeler, str):
        if not callable(getattr(labeler, "label", None)):
            raise TypeError(
                f"labeler: expected a labeler with label(image, detections, classes) or a CLIP "
                f"registry name, got {type(labeler).__name__}"
            )
        return labeler
    if labeler is None and getattr(segmenter, "labeler", None) is not None:
        return segmenter.labeler
    from textseg.labelers import ClipLabeler

    name = labeler or DEFAULT_LABELER_CLIP
    options: dict[str, Any] = {}
    if tiny:
        from textseg._registry import test_variant

        name = test_variant(name)
        # As the presets' tiny labelers: random CLIP weights give near-uniform probabilities,
        # so background texts would reject every mask.
        options["background"] = ()
    device = getattr(getattr(segmenter, "sam", None), "device", None) or "cpu"
    return ClipLabeler(name, mode="name", device=device, **options)


def build_accumulators(
    names: Sequence[str],
    vocab: PromptedClasses,
    data: EvalDataset,
    segmenter: Any,
    *,
    labeler: Any | None = None,
    tiny: bool = False,
    refine: int = 0,
) -> list[Accumulator]:
    """One accumulator per protocol in ``names`` (``specialist`` excepted: it trains models
    and runs on its own); ``refine`` > 0 adds ``box_refine`` after ``box``.

    Raises:
        TypeError: The segmenter lacks what a protocol needs (``sam``, ``segment``).
    """
    for protocol in names:
        attr = _NEEDS.get(protocol)
        if attr and getattr(segmenter, attr, None) is None:
            raise TypeError(
                f"segmenter: the {protocol} protocol needs a segmenter with .{attr} "
                f"(a textseg.pipelines.TextSegmenter), got {type(segmenter).__name__}"
            )
    sam = getattr(segmenter, "sam", None)
    out: list[Accumulator] = []
    for protocol in names:
        if protocol == "box":
            out.append(BoxPrompts(vocab, sam))
            if refine:
                out.append(RefinedBoxPrompts(vocab, sam, refine))
        elif protocol == "point":
            out.append(PointPrompts(vocab, sam))
        elif protocol == "text":
            out.append(TextPrompts(vocab, data))
        elif protocol == "label":
            out.append(Labeling(vocab, default_labeler(segmenter, labeler, tiny=tiny)))
        elif protocol == "count":
            out.append(Counting(vocab))
    return out


def _progress(items: Iterable[Sample], total: int, progress: bool | None) -> Iterable[Sample]:
    from tqdm.auto import tqdm

    # disable=None: tqdm shows the bar only on a terminal.
    return tqdm(
        items,
        total=total,
        desc="textseg eval",
        unit="img",
        disable=None if progress is None else not progress,
    )


def run_accumulators(
    data: EvalDataset,
    vocab: PromptedClasses,
    accumulators: Sequence[Accumulator],
    segmenter: Any | None,
    progress: bool | None = None,
) -> tuple[list[ProtocolResult], dict[str, Any]]:
    """The image loop: each image read once, segmented once (when an accumulator needs the
    pipeline) and given to every accumulator.

    Returns:
        The accumulators' results, and ``{"wall_s", "ms_per_image", "pipeline_ms"}``.
    """
    needs_pipeline = any(a.needs_pipeline for a in accumulators)
    start = time.perf_counter()
    stages: dict[str, list[float]] = {}
    for sample in _progress(data, len(data), progress):
        result = None
        if needs_pipeline:
            result = segmenter.segment(sample.image, vocab.vocabulary)
            for stage, ms in result.timings.items():
                stages.setdefault(stage, []).append(float(ms))
        for accumulator in accumulators:
            accumulator.update(sample, result)
    results = [a.finish() for a in accumulators]
    wall = time.perf_counter() - start
    timings: dict[str, Any] = {
        "wall_s": wall,
        "ms_per_image": wall * 1000.0 / max(1, len(data)),
    }
    if stages:
        timings["pipeline_ms"] = {k: float(np.mean(v)) for k, v in stages.items()}
    return results, timings


def run_protocols(
    data: EvalDataset,
    vocab: PromptedClasses,
    segmenter: Any,
    protocols: Sequence[str],
    *,
    labeler: Any | None = None,
    tiny: bool = False,
    refine: int = 0,
    name: str | None = None,
    progress: bool | None = None,
    specialist_options: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Run the checked ``protocols`` (:func:`parse_protocols`) on one segmenter.

    Args:
        data, vocab: From :func:`prepare`.
        segmenter: A :class:`textseg.pipelines.TextSegmenter`.
        protocols: Protocol names, in run order.
        labeler: For ``label``, see :func:`default_labeler`.
        tiny: The segmenter was built with tiny random models: so are the labeler built here
            and the specialists trained here.
        refine: Also run the box protocol with this many refinement rounds (``box_refine``).
        name: What to call the segmenter in the report (default: its class and SAM model).
        progress: Show a progress bar (None: on a terminal only).
        specialist_options: :func:`textseg.eval.specialist.eval_specialist` options.

    Returns:
        The report, with every result (``box_refine`` included) and the timings: ``wall_s``,
        ``ms_per_image``, ``pipeline_ms`` and ``sam_cache`` (hits, misses).
    """
    sam = getattr(segmenter, "sam", None)
    accumulators = build_accumulators(
        protocols, vocab, data, segmenter, labeler=labeler, tiny=tiny, refine=refine
    )
    cache = getattr(sam, "cache", None)
    before = cache.stats() if cache is not None and hasattr(cache, "stats") else None
    results, timings = (
        run_accumulators(data, vocab, accumulators, segmenter, progress)
        if accumulators
        else ([], {})
    )
    if "specialist" in protocols:
        from textseg.eval.specialist import eval_specialist

        start = time.perf_counter()
        options = {"progress": progress, "tiny": tiny, **dict(specialist_options or {})}
        results.append(eval_specialist(data, sam, segmenter=segmenter, **options))
        timings["wall_s"] = timings.get("wall_s", 0.0) + time.perf_counter() - start
    if before is not None:
        after = cache.stats()  # type: ignore[union-attr]
        timings["sam_cache"] = {
            "hits": int(after.hits - before.hits),
            "misses": int(after.misses - before.misses),
        }
    if name is None:
        sam_name = getattr(sam, "name", None)
        name = type(segmenter).__name__ + (f" ({sam_name})" if sam_name else "")
    return EvalReport(
        dataset=f"{data.name} ({data.annotations_path})",
        segmenter=name,
        device=str(getattr(sam, "device", "cpu")),
        images=len(data),
        classes=list(vocab.names),
        protocols={r.name: r for r in results},
        timings=timings,
    )
