"""The five evaluation protocols and :func:`evaluate`, which runs them in one pass.

Each protocol is an accumulator (``update`` per image, ``finish`` at the end) and a function
that runs it alone (:func:`eval_box_prompts`, :func:`eval_point_prompts`,
:func:`eval_text_prompts`, :func:`eval_labeling`, :func:`eval_counting`). :func:`evaluate` feeds
all requested accumulators image by image: each image is read once, encoded by SAM once (the
SAM core's cache serves the other protocols) and segmented by the pipeline once (its result
serves both the text and the counting protocols), so memory stays bounded and the pipeline's
stage timings are those of a normal run.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg.eval.dataset import EvalDataset, Sample, load_dataset
from textseg.eval.metrics import (
    coco_mask_ap,
    count_errors,
    farthest_interior_point,
    mask_iou,
    mean_iou,
)
from textseg.eval.report import EvalReport, ProtocolResult
from textseg.io.coco import detections_to_coco
from textseg.vocab import UNKNOWN, Vocabulary

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

#: The protocols, in the order :func:`evaluate` runs and reports them.
PROTOCOLS: tuple[str, ...] = ("box", "point", "text", "label", "count")
#: Protocols run only when asked for (they train models): ``specialist``
#: (:func:`textseg.eval.specialist.eval_specialist`).
EXTRA_PROTOCOLS: tuple[str, ...] = ("specialist",)

#: CLIP model of the labeler built for the labelling protocol when the segmenter has none.
DEFAULT_LABELER_CLIP = "clip-vit-b-32"


_ENCODE_NOTE = (
    "encode = time to get the SAM embedding: a cache hit when the pipeline (text/count "
    "protocols) encoded the image first"
)


def parse_protocols(protocols: str | Iterable[str]) -> list[str]:
    """``"box,point"`` or ``["box", "point"]`` -> the protocol names, checked, in run order.

    Raises:
        ValueError: Empty, or an unknown name (the message lists the valid names).
    """
    items = protocols.split(",") if isinstance(protocols, str) else list(protocols)
    names = [str(p).strip().lower() for p in items if str(p).strip()]
    valid = PROTOCOLS + EXTRA_PROTOCOLS
    if not names:
        raise ValueError(f"protocols: expected one or more of {', '.join(valid)}, got none")
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown protocol {name!r}.{hint} Valid protocols: {', '.join(valid)}"
            )
    return [p for p in valid if p in names]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class _Vocab:
    """The prompted classes: the dataset's classes that have instances in the evaluated images.

    ``to_vocab`` maps a dataset class id to the prompted-class index (-1: not prompted).
    """

    def __init__(self, dataset: EvalDataset) -> None:
        self.class_ids = dataset.present_classes()
        self.names = [dataset.classes[k] for k in self.class_ids]
        self.category_ids = [dataset.category_ids[k] for k in self.class_ids]
        self.to_vocab = np.full(len(dataset.classes), -1, np.int64)
        self.to_vocab[self.class_ids] = np.arange(len(self.class_ids))
        self.vocabulary = Vocabulary(self.names) if self.names else None

    def gt_ids(self, sample: Sample) -> np.ndarray:
        """``(N,)`` prompted-class index of each ground-truth instance."""
        return self.to_vocab[np.asarray(sample.gt.class_id, np.int64)]


class _Protocol:
    """One protocol's accumulator."""

    name = ""
    needs_pipeline = False

    def __init__(self, vocab: _Vocab) -> None:
        self.vocab = vocab
        self.images = 0
        self.wall = 0.0
        self._stage_ms: dict[str, list[float]] = {}

    def update(self, sample: Sample, result: Any | None) -> None:
        start = time.perf_counter()
        self._update(sample, result)
        self.wall += time.perf_counter() - start
        self.images += 1

    def _update(self, sample: Sample, result: Any | None) -> None:
        raise NotImplementedError

    def _time(self, stage: str, ms: float) -> None:
        self._stage_ms.setdefault(stage, []).append(ms)

    def timings(self) -> dict[str, float]:
        out = {k: float(np.mean(v)) for k, v in self._stage_ms.items()}
        out["wall_s"] = self.wall
        return out

    def finish(self) -> ProtocolResult:
        raise NotImplementedError


class _BoxPrompts(_Protocol):
    name = "box"

    def __init__(self, vocab: _Vocab, sam: Any) -> None:
        super().__init__(vocab)
        self.sam = sam
        self.ious: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []

    def _update(self, sample: Sample, result: Any | None) -> None:
        gt = sample.gt
        if len(gt) == 0:
            return
        t = time.perf_counter()
        emb = self.sam.encode(sample.image)
        self._time("encode", _ms(t))
        t = time.perf_counter()
        # All boxes of the image in one call; the core chunks the decoder itself.
        dets = self.sam.predict(emb, boxes=gt.xyxy.astype(np.float32), multimask_output=False)
        self._time("decode", _ms(t))
        masks = _per_prompt(dets, len(gt), self.name)
        self.ious.append(mask_iou(masks, gt.mask))
        self.ids.append(self.vocab.gt_ids(sample))

    def finish(self) -> ProtocolResult:
        ious = np.concatenate(self.ious) if self.ious else np.zeros(0)
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
        miou, per_class = mean_iou(ious, ids, self.vocab.names)
        means = [r["miou"] for r in per_class.values() if r["miou"] is not None]
        metrics = {
            "miou": miou,
            "miou_class_mean": float(np.mean(means)) if means else float("nan"),
        }
        return ProtocolResult(
            self.name,
            metrics,
            per_class,
            self.timings(),
            self.images,
            int(ious.size),
            notes=[
                "box = the tight box of the ground-truth mask, XYXY pixels; one mask per box",
                _ENCODE_NOTE,
            ],
        )


class _PointPrompts(_Protocol):
    name = "point"

    def __init__(self, vocab: _Vocab, sam: Any) -> None:
        super().__init__(vocab)
        self.sam = sam
        self.top: list[np.ndarray] = []
        self.oracle: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []

    def _update(self, sample: Sample, result: Any | None) -> None:
        gt = sample.gt
        n = len(gt)
        if n == 0:
            return
        points = np.array([farthest_interior_point(m) for m in gt.mask], np.float32)
        t = time.perf_counter()
        emb = self.sam.encode(sample.image)
        self._time("encode", _ms(t))
        t = time.perf_counter()
        dets = self.sam.predict(
            emb,
            points=points[:, None, :],
            point_labels=np.ones((n, 1), np.int64),
            multimask_output=True,
            return_all=True,
        )
        self._time("decode", _ms(t))
        prompt = np.asarray(dets.data["prompt_index"], np.int64)
        if dets.mask is None or prompt.size == 0 or prompt.min() < 0 or prompt.max() >= n:
            raise ValueError(
                f"point protocol: the SAM core returned {len(dets)} masks whose prompt_index "
                f"does not cover the {n} clicks; expected 3 masks per click"
            )
        score = np.asarray(dets.data.get("sam_iou", dets.confidence), np.float64)
        ious = mask_iou(dets.mask, gt.mask[prompt])
        top = np.zeros(n)
        oracle = np.zeros(n)
        for i in range(n):
            rows = np.flatnonzero(prompt == i)
            if rows.size == 0:
                raise ValueError(f"point protocol: the SAM core returned no mask for click {i}")
            top[i] = ious[rows[np.argmax(score[rows])]]
            oracle[i] = ious[rows].max()
        self.top.append(top)
        self.oracle.append(oracle)
        self.ids.append(self.vocab.gt_ids(sample))

    def finish(self) -> ProtocolResult:
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
        top = np.concatenate(self.top) if self.top else np.zeros(0)
        oracle = np.concatenate(self.oracle) if self.oracle else np.zeros(0)
        miou_top, per_top = mean_iou(top, ids, self.vocab.names)
        miou_oracle, per_oracle = mean_iou(oracle, ids, self.vocab.names)
        per_class = {
            c: {
                "n": per_top[c]["n"],
                "miou_top": per_top[c]["miou"],
                "miou_oracle": per_oracle[c]["miou"],
            }
            for c in self.vocab.names
        }
        return ProtocolResult(
            self.name,
            {"miou_top": miou_top, "miou_oracle": miou_oracle},
            per_class,
            self.timings(),
            self.images,
            int(top.size),
            notes=[
                "one positive click at the mask pixel farthest from its boundary; three masks "
                "per click: top = the highest predicted IoU, oracle = the best of the three "
                "(the SAM paper's 1-click protocol)",
                _ENCODE_NOTE,
            ],
        )


class _PipelineProtocol(_Protocol):
    needs_pipeline = True

    def _pipeline_timings(self, result: Any) -> None:
        for stage, ms in result.timings.items():
            self._time(stage, float(ms))


class _TextPrompts(_PipelineProtocol):
    name = "text"

    def __init__(self, vocab: _Vocab, dataset: EvalDataset) -> None:
        super().__init__(vocab)
        self.dataset = dataset
        self.results: list[dict[str, Any]] = []
        self.image_ids: list[int] = []
        self.n_gt = np.zeros(len(vocab.names), np.int64)
        self.n_pred = np.zeros(len(vocab.names), np.int64)

    def _update(self, sample: Sample, result: Any | None) -> None:
        self._pipeline_timings(result)
        self.image_ids.append(sample.image_id)
        np.add.at(self.n_gt, self.vocab.gt_ids(sample), 1)
        dets = result.detections
        if dets.class_id is None:
            raise ValueError("text protocol: the pipeline returned detections without class_id")
        dets = dets[np.asarray(dets.class_id) >= 0]  # "unknown" masks name no category
        if len(dets) == 0:
            return
        np.add.at(self.n_pred, dets.class_id, 1)
        h, w = sample.size
        confidence = dets.confidence if dets.confidence is not None else np.ones(len(dets))
        # Only what a COCO results file holds: extra data fields would bloat it.
        plain = sv.Detections(
            xyxy=dets.xyxy,
            mask=dets.mask,
            class_id=np.asarray(dets.class_id, np.int64),
            confidence=np.asarray(confidence, np.float32),
        )
        anns = detections_to_coco(
            plain,
            sample.image_id,
            self.vocab.names,
            height=h,
            width=w,
            category_ids=self.vocab.category_ids,
        )
        for ann in anns:
            self.results.append(
                {k: ann[k] for k in ("image_id", "category_id", "segmentation", "bbox", "score")}
            )

    def finish(self) -> ProtocolResult:
        t = time.perf_counter()
        overall, per_cat = coco_mask_ap(
            self.dataset.coco_gt(),
            self.results,
            image_ids=self.image_ids,
            category_ids=self.vocab.category_ids,
        )
        cocoeval_s = time.perf_counter() - t
        per_class = {
            name: {
                "gt": int(self.n_gt[k]),
                "pred": int(self.n_pred[k]),
                "ap": per_cat[cat]["ap"],
                "ap50": per_cat[cat]["ap50"],
            }
            for k, (name, cat) in enumerate(zip(self.vocab.names, self.vocab.category_ids))
        }
        metrics = {**overall, "detections": len(self.results)}
        timings = self.timings()
        timings["cocoeval_s"] = cocoeval_s
        return ProtocolResult(
            self.name,
            metrics,
            per_class,
            timings,
            self.images,
            int(self.n_gt.sum()),
            notes=[
                "every image prompted with all the classes present in the evaluated images; "
                "pycocotools COCOeval (segm), AP over IoU 0.50:0.95, 100 detections per image"
            ],
            predictions=self.results,
        )


class _Labeling(_Protocol):
    name = "label"

    def __init__(self, vocab: _Vocab, labeler: Any) -> None:
        super().__init__(vocab)
        self.labeler = labeler
        self.truth: list[np.ndarray] = []
        self.pred: list[np.ndarray] = []

    def _update(self, sample: Sample, result: Any | None) -> None:
        gt = sample.gt
        n = len(gt)
        if n == 0:
            return
        # Class-agnostic masks: the labeler must name them (a verifying labeler names masks
        # whose class is unknown).
        query = sv.Detections(
            xyxy=gt.xyxy.copy(),
            mask=gt.mask,
            class_id=np.full(n, -1, np.int64),
            data={"class_name": np.array([UNKNOWN] * n, dtype=object)},
        )
        t = time.perf_counter()
        out = self.labeler.label(sample.image, query, self.vocab.vocabulary)
        self._time("label", _ms(t))
        if len(out) != n or out.class_id is None:
            raise ValueError(
                f"label protocol: {type(self.labeler).__name__}.label returned {len(out)} "
                f"detections for {n} masks (or no class_id); a labeler must name every mask, "
                f"class_id -1 for unknown"
            )
        self.truth.append(self.vocab.gt_ids(sample))
        self.pred.append(np.asarray(out.class_id, np.int64))

    def finish(self) -> ProtocolResult:
        truth = np.concatenate(self.truth) if self.truth else np.zeros(0, np.int64)
        pred = np.concatenate(self.pred) if self.pred else np.zeros(0, np.int64)
        names = self.vocab.names

        def mean(x: np.ndarray) -> float:
            return float(x.mean()) if x.size else float("nan")

        known = pred >= 0
        metrics = {
            "accuracy": mean(pred == truth),
            "unknown_rate": mean(~known),
            "accuracy_named": mean(pred[known] == truth[known]),
        }
        per_class: dict[str, dict[str, Any]] = {}
        for k, name in enumerate(names):
            sel = truth == k
            wrong = pred[sel & (pred != k) & known]
            confused = names[int(np.bincount(wrong).argmax())] if wrong.size else None
            per_class[name] = {
                "n": int(sel.sum()),
                "accuracy": mean(pred[sel] == k) if sel.any() else None,
                "unknown_rate": mean(pred[sel] < 0) if sel.any() else None,
                "confused_with": confused,
            }
        return ProtocolResult(
            self.name,
            metrics,
            per_class,
            self.timings(),
            self.images,
            int(truth.size),
            notes=[
                f"{type(self.labeler).__name__} names each ground-truth mask among the "
                f"{len(names)} prompted classes; unknown counts as wrong in accuracy"
            ],
        )


class _Counting(_PipelineProtocol):
    name = "count"

    def __init__(self, vocab: _Vocab) -> None:
        super().__init__(vocab)
        self.pred: list[list[int]] = []
        self.gt: list[np.ndarray] = []
        self.unknown = 0

    def _update(self, sample: Sample, result: Any | None) -> None:
        self._pipeline_timings(result)
        counts = result.counts
        self.pred.append([int(counts.get(name, 0)) for name in self.vocab.vocabulary.names])
        self.unknown += int(counts.get(UNKNOWN, 0))
        row = np.zeros(len(self.vocab.names), np.int64)
        np.add.at(row, self.vocab.gt_ids(sample), 1)
        self.gt.append(row)

    def finish(self) -> ProtocolResult:
        c = len(self.vocab.names)
        pred = np.asarray(self.pred, np.int64).reshape(-1, c)
        gt = np.asarray(self.gt, np.int64).reshape(-1, c)
        overall, per_class = count_errors(pred, gt, self.vocab.names)
        metrics: dict[str, Any] = {**overall, "unknown": self.unknown}
        return ProtocolResult(
            self.name,
            metrics,
            per_class,
            self.timings(),
            self.images,
            int(gt.sum()),
            notes=[
                "cells = (image, prompted class); _present = cells whose true count is > 0; "
                "masks the pipeline left unknown are not counted for any class"
            ],
        )


def _per_prompt(dets: sv.Detections, n: int, what: str) -> np.ndarray:
    """``(n, H, W)`` masks of a single-output predict, in prompt order."""
    prompt = np.asarray(dets.data.get("prompt_index", np.arange(len(dets))), np.int64)
    if dets.mask is None or len(dets) != n or sorted(prompt.tolist()) != list(range(n)):
        raise ValueError(
            f"{what} protocol: the SAM core returned {len(dets)} masks for {n} prompts; "
            f"expected one mask per prompt"
        )
    return dets.mask[np.argsort(prompt)]


# ---------------------------------------------------------------------------------- running
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


def _run(
    dataset: EvalDataset,
    vocab: _Vocab,
    protocols: Sequence[_Protocol],
    segmenter: Any | None,
    progress: bool | None,
) -> tuple[list[ProtocolResult], dict[str, Any]]:
    needs_pipeline = any(p.needs_pipeline for p in protocols)
    start = time.perf_counter()
    stages: dict[str, list[float]] = {}
    for sample in _progress(dataset, len(dataset), progress):
        result = None
        if needs_pipeline:
            result = segmenter.segment(sample.image, vocab.vocabulary)
            for stage, ms in result.timings.items():
                stages.setdefault(stage, []).append(float(ms))
        for protocol in protocols:
            protocol.update(sample, result)
    results = [p.finish() for p in protocols]
    wall = time.perf_counter() - start
    timings: dict[str, Any] = {
        "wall_s": wall,
        "ms_per_image": wall * 1000.0 / max(1, len(dataset)),
    }
    if stages:
        timings["pipeline_ms"] = {k: float(np.mean(v)) for k, v in stages.items()}
    return results, timings


def _dataset(dataset: str | os.PathLike[str] | EvalDataset, max_images: int | None) -> EvalDataset:
    if isinstance(dataset, EvalDataset):
        if max_images is not None:
            raise ValueError(
                "max_images: give it to EvalDataset(...) / load_dataset(...), not with an "
                "EvalDataset already built"
            )
        return dataset
    if not isinstance(dataset, (str, os.PathLike)):
        raise TypeError(
            f"dataset: expected a folder path, a COCO JSON path or an EvalDataset, got "
            f"{type(dataset).__name__}"
        )
    return load_dataset(dataset, max_images=max_images)


def _check_classes(vocab: _Vocab, dataset: EvalDataset) -> None:
    if not vocab.names:
        raise ValueError(
            f"{dataset.annotations_path}: the {len(dataset)} evaluated images have no "
            f"non-crowd annotation; nothing to evaluate"
        )


def _single(
    make: Callable[[_Vocab, EvalDataset], _Protocol],
    dataset: str | os.PathLike[str] | EvalDataset,
    segmenter: Any | None,
    max_images: int | None,
    progress: bool | None,
) -> ProtocolResult:
    """Run one protocol, built by ``make(vocab, dataset)``, over the dataset."""
    data = _dataset(dataset, max_images)
    vocab = _Vocab(data)
    _check_classes(vocab, data)
    results, _ = _run(data, vocab, [make(vocab, data)], segmenter, progress)
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
    return _single(lambda v, _: _BoxPrompts(v, sam), dataset, None, max_images, progress)


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
    return _single(lambda v, _: _PointPrompts(v, sam), dataset, None, max_images, progress)


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
    return _single(_TextPrompts, dataset, segmenter, max_images, progress)


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
    return _single(lambda v, _: _Labeling(v, labeler), dataset, None, max_images, progress)


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
    return _single(lambda v, _: _Counting(v), dataset, segmenter, max_images, progress)


def _labeler(segmenter: Any, labeler: Any | None) -> Any:
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

    sam = getattr(segmenter, "sam", None)
    device = getattr(sam, "device", None) or "cpu"
    return ClipLabeler(labeler or DEFAULT_LABELER_CLIP, mode="name", device=device)


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
    needs = {
        "box": "sam",
        "point": "sam",
        "text": "segment",
        "count": "segment",
        "specialist": "sam",
    }
    for protocol in names:
        attr = needs.get(protocol)
        if attr and getattr(segmenter, attr, None) is None:
            raise TypeError(
                f"segmenter: the {protocol} protocol needs a segmenter with .{attr} "
                f"(a textseg.pipelines.TextSegmenter), got {type(segmenter).__name__}"
            )
    if out_dir is not None:
        # Fail before a long run, not after it: an unwritable folder, a missing matplotlib.
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if plot:
            from textseg.eval.report import check_matplotlib

            check_matplotlib()
    data = _dataset(dataset, max_images)
    vocab = _Vocab(data)
    _check_classes(vocab, data)
    sam = getattr(segmenter, "sam", None)
    accumulators: list[_Protocol] = []
    for protocol in names:
        if protocol == "specialist":
            continue  # trains models: run on its own below
        if protocol == "box":
            accumulators.append(_BoxPrompts(vocab, sam))
        elif protocol == "point":
            accumulators.append(_PointPrompts(vocab, sam))
        elif protocol == "text":
            accumulators.append(_TextPrompts(vocab, data))
        elif protocol == "label":
            accumulators.append(_Labeling(vocab, _labeler(segmenter, labeler)))
        else:
            accumulators.append(_Counting(vocab))
    cache = getattr(sam, "cache", None)
    before = cache.stats() if cache is not None and hasattr(cache, "stats") else None
    results, timings = (
        _run(data, vocab, accumulators, segmenter, progress) if accumulators else ([], {})
    )
    if "specialist" in names:
        from textseg.eval.specialist import eval_specialist

        start = time.perf_counter()
        options = {"progress": progress, **dict(specialist_options or {})}
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
    report = EvalReport(
        dataset=f"{data.name} ({data.annotations_path})",
        segmenter=name,
        device=str(getattr(sam, "device", "cpu")),
        images=len(data),
        classes=list(vocab.names),
        protocols={r.name: r for r in results},
        timings=timings,
    )
    if out_dir is not None:
        report.save(out_dir, plot=plot)
    return report
