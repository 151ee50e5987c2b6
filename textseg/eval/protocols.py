"""The evaluation's public functions: :func:`evaluate` runs any of the five protocols in one
pass; :func:`eval_box_prompts`, :func:`eval_point_prompts`, :func:`eval_text_prompts`,
:func:`eval_labeling` and :func:`eval_counting` run one alone.

The protocols themselves are accumulators (:mod:`textseg.eval.accumulators`), fed image by image
by the one runner (:mod:`textseg.eval.runner`), which :func:`textseg.eval.compare.compare_presets`
shares.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from textseg.eval.accumulators import (
    Accumulator,
    BoxPrompts,
    Counting,
    Labeling,
    PointPrompts,
    PromptedClasses,
    TextPrompts,
)
from textseg.eval.dataset import EvalDataset
from textseg.eval.report import EvalReport, ProtocolResult
from textseg.eval.runner import (
    DEFAULT_LABELER_CLIP,
    EXTRA_PROTOCOLS,
    PROTOCOLS,
    parse_protocols,
    prepare,
    run_accumulators,
    run_protocols,
)

__all__ = [
    "DEFAULT_LABELER_CLIP",
    "EXTRA_PROTOCOLS",
    "PROTOCOLS",
    "eval_box_prompts",
    "eval_counting",
    "eval_labeling",
    "eval_point_prompts",
    "eval_text_prompts",
    "evaluate",
    "parse_protocols",
]


def _single(
    make: Callable[[PromptedClasses, EvalDataset], Accumulator],
    dataset: str | os.PathLike[str] | EvalDataset,
    segmenter: Any | None,
    max_images: int | None,
    progress: bool | None,
) -> ProtocolResult:
    """Run one protocol, built by ``make(vocab, dataset)``, over the dataset."""
    data, vocab = prepare(dataset, max_images)
    results, _ = run_accumulators(data, vocab, [make(vocab, data)], segmenter, progress)
    return results[0]


def eval_box_prompts(
    dataset: str | os.PathLike[str] | EvalDataset,
    sam: Any,
    *,
    max_images: int | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Protocol 1: SAM prompted with each ground-truth box; mIoU overall and per class.

    Each image's boxes (the tight XYXY boxes of its ground-truth masks) go to SAM in one
    batched ``predict`` call, one mask per box.

    Args:
        dataset: A folder (``annotations.json`` + ``images/``), a COCO JSON or an
            :class:`EvalDataset`.
        sam: A :class:`textseg.sam.SamCore` (anything with its ``encode`` and ``predict``).
        max_images: Only the first N images (with a path).
        progress: Show a progress bar (None: on a terminal only).

    Returns:
        ``metrics``: ``miou`` (mean over instances), ``miou_class_mean``; ``per_class``:
        ``n``, ``miou``.
    """
    return _single(lambda v, _: BoxPrompts(v, sam), dataset, None, max_images, progress)


def eval_point_prompts(
    dataset: str | os.PathLike[str] | EvalDataset,
    sam: Any,
    *,
    max_images: int | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Protocol 2: one click per ground-truth mask, at its pixel farthest from the boundary.

    SAM returns three masks per click (one batched call per image). ``miou_top`` scores the
    mask with the highest predicted IoU, ``miou_oracle`` the best of the three, as the SAM paper
    reports its 1-click results.

    Args: as :func:`eval_box_prompts`.

    Returns:
        ``metrics``: ``miou_top``, ``miou_oracle``; ``per_class``: ``n``, ``miou_top``,
        ``miou_oracle``.
    """
    return _single(lambda v, _: PointPrompts(v, sam), dataset, None, max_images, progress)


def eval_text_prompts(
    dataset: str | os.PathLike[str] | EvalDataset,
    segmenter: Any,
    *,
    max_images: int | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Protocol 3: text-prompted instance segmentation, COCO mask AP.

    Every image is segmented with all the category names that have instances in the evaluated
    images; the masks (``class_id`` >= 0, ``confidence`` as score) are scored by pycocotools'
    COCOeval (``segm``).

    Args:
        dataset: As :func:`eval_box_prompts`.
        segmenter: A :class:`textseg.pipelines.TextSegmenter` (anything whose
            ``segment(image, vocabulary)`` returns a :class:`textseg.pipelines.Result`).
        max_images: Only the first N images (with a path).
        progress: Show a progress bar (None: on a terminal only).

    Returns:
        ``metrics``: ``ap``, ``ap50``, ``ap75``, ``ap_small/medium/large``, ``ar100``,
        ``detections``; ``per_class``: ``gt``, ``pred``, ``ap``, ``ap50``; ``predictions``:
        the COCO results list.
    """
    return _single(TextPrompts, dataset, segmenter, max_images, progress)


def eval_labeling(
    dataset: str | os.PathLike[str] | EvalDataset,
    labeler: Any,
    *,
    max_images: int | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Protocol 4: the labeler names each ground-truth mask; top-1 accuracy and unknown rate.

    Args:
        dataset: As :func:`eval_box_prompts`.
        labeler: A labeler (``label(image, detections, classes)``, e.g.
            :class:`textseg.labelers.ClipLabeler`); it receives the masks with class
            ``"unknown"`` and the prompted classes.
        max_images: Only the first N images (with a path).
        progress: Show a progress bar (None: on a terminal only).

    Returns:
        ``metrics``: ``accuracy`` (unknown counts as wrong), ``unknown_rate``,
        ``accuracy_named`` (among masks given a class); ``per_class``: ``n``, ``accuracy``,
        ``unknown_rate``, ``confused_with`` (the most frequent wrong class).
    """
    return _single(lambda v, _: Labeling(v, labeler), dataset, None, max_images, progress)


def eval_counting(
    dataset: str | os.PathLike[str] | EvalDataset,
    segmenter: Any,
    *,
    max_images: int | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Protocol 5: the pipeline's per-image, per-class counts against the ground truth.

    Args: as :func:`eval_text_prompts`.

    Returns:
        ``metrics``: ``mae``, ``exact``, ``mae_present``, ``exact_present``, ``image_exact``,
        ``bias``, ``unknown``; ``per_class``: ``gt``, ``pred``, ``mae``, ``exact``, ``bias``
        (see :func:`textseg.eval.metrics.count_errors`).
    """
    return _single(lambda v, _: Counting(v), dataset, segmenter, max_images, progress)


def evaluate(
    dataset: str | os.PathLike[str] | EvalDataset,
    segmenter: Any,
    protocols: str | Iterable[str] = PROTOCOLS,
    *,
    labeler: Any | None = None,
    max_images: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    plot: bool = True,
    name: str | None = None,
    progress: bool | None = None,
    specialist_options: Mapping[str, Any] | None = None,
    tiny: bool = False,
) -> EvalReport:
    """Evaluate a segmenter on a COCO-format dataset with any of the five protocols.

    One pass over the images runs every requested protocol (see the module docstring):

    - ``box``: SAM (``segmenter.sam``) prompted with the ground-truth boxes -> mIoU;
    - ``point``: one click at the farthest interior point -> mIoU (top-scoring / oracle);
    - ``text``: the pipeline prompted with the class names -> COCO mask AP / AP50;
    - ``label``: the labeler naming the ground-truth masks -> accuracy, unknown rate;
    - ``count``: the pipeline's counts -> MAE, exact-match rate.

    The prompted classes are the dataset's categories with instances in the evaluated images.

    Args:
        dataset: A folder holding ``annotations.json`` and ``images/``, a COCO JSON (images in
            ``images/`` beside it) or an :class:`EvalDataset` (other layouts).
        segmenter: A :class:`textseg.pipelines.TextSegmenter`: ``sam`` for box/point,
            ``segment`` for text/count, ``labeler`` for label.
        protocols: Names (or ``"box,point"``); default all five.
        labeler: For ``label``: a labeler or a CLIP registry name; default the segmenter's
            labeler, else a name-mode :class:`textseg.labelers.ClipLabeler` with
            :data:`DEFAULT_LABELER_CLIP`.
        max_images: Only the first N images, in file order (with a path).
        out_dir: When given, write the report there (:meth:`EvalReport.save`).
        plot: With ``out_dir``: also write ``per_class.png`` (needs matplotlib).
        name: What to call the segmenter in the report (default: its class and SAM model).
        progress: Show a progress bar (None: on a terminal only).
        specialist_options: For ``specialist`` (SAM with ground-truth boxes against
            specialists trained on the ground truth and on textseg's labels, on held-out
            images): :func:`textseg.eval.specialist.eval_specialist` options (``specialist``,
            ``arch``, ``tiny``, ``epochs``, ``val_fraction``, ``work_dir``...); the segmenter's
            SAM and pipeline are its SAM row and its labeller.
        tiny: The segmenter was built with tiny random models (``from_preset(..., tiny=True)``):
            the labeler built here (``label``, a segmenter without one) and the specialists
            trained here (``specialist``) are tiny too.

    Returns:
        The :class:`EvalReport`.

    Raises:
        ValueError: Unknown protocol, no annotated image, or a component that returns
            something malformed.
        TypeError: A segmenter without what a protocol needs.
        FileNotFoundError: Missing dataset files.
        ImportError: ``plot`` without matplotlib (checked before the run).
    """
    names = parse_protocols(protocols)
    data, vocab = prepare(dataset, max_images, out_dir=out_dir, plot=plot)
    report = run_protocols(
        data,
        vocab,
        segmenter,
        names,
        labeler=labeler,
        tiny=tiny,
        name=name,
        progress=progress,
        specialist_options=specialist_options,
    )
    if out_dir is not None:
        report.save(out_dir, plot=plot)
    return report
