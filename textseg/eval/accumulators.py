"""The protocols' accumulators: one per protocol, ``update(sample, result)`` per image and
``finish()`` -> :class:`~textseg.eval.report.ProtocolResult` at the end.

They hold no loop: :mod:`textseg.eval.runner` feeds them image by image (each image read once,
encoded by SAM once, segmented by the pipeline once for every accumulator that needs it).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import supervision as sv

from textseg.eval.dataset import EvalDataset, Sample
from textseg.eval.metrics import (
    coco_mask_ap,
    count_errors,
    farthest_interior_point,
    mask_iou,
    mean_iou,
)
from textseg.eval.report import ProtocolResult
from textseg.fields import CLASS_NAME, PROMPT_INDEX, SAM_IOU
from textseg.io.coco import detections_to_coco
from textseg.vocab import UNKNOWN, Vocabulary

__all__ = [
    "ENCODE_NOTE",
    "NOT_RUN",
    "Accumulator",
    "BoxPrompts",
    "Counting",
    "Labeling",
    "PipelineAccumulator",
    "PointPrompts",
    "PromptedClasses",
    "RefinedBoxPrompts",
    "TextPrompts",
    "per_prompt_masks",
]

#: How a result's first note starts when its protocol could not run on this segmenter.
NOT_RUN = "not run: "

ENCODE_NOTE = (
    "encode = time to get the SAM embedding: a cache hit when the pipeline (text/count "
    "protocols) encoded the image first"
)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class PromptedClasses:
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


class Accumulator:
    """One protocol's accumulator."""

    name = ""
    needs_pipeline = False

    def __init__(self, vocab: PromptedClasses) -> None:
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


class BoxPrompts(Accumulator):
    name = "box"

    def __init__(self, vocab: PromptedClasses, sam: Any) -> None:
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
        masks = per_prompt_masks(dets, len(gt), self.name)
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
                ENCODE_NOTE,
            ],
        )


class PointPrompts(Accumulator):
    name = "point"

    def __init__(self, vocab: PromptedClasses, sam: Any) -> None:
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
        prompt = np.asarray(dets.data[PROMPT_INDEX], np.int64)
        if dets.mask is None or prompt.size == 0 or prompt.min() < 0 or prompt.max() >= n:
            raise ValueError(
                f"point protocol: the SAM core returned {len(dets)} masks whose prompt_index "
                f"does not cover the {n} clicks; expected 3 masks per click"
            )
        score = np.asarray(dets.data.get(SAM_IOU, dets.confidence), np.float64)
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
                ENCODE_NOTE,
            ],
        )


class PipelineAccumulator(Accumulator):
    needs_pipeline = True

    def _pipeline_timings(self, result: Any) -> None:
        for stage, ms in result.timings.items():
            self._time(stage, float(ms))


class TextPrompts(PipelineAccumulator):
    name = "text"

    def __init__(self, vocab: PromptedClasses, dataset: EvalDataset) -> None:
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


class Labeling(Accumulator):
    name = "label"

    def __init__(self, vocab: PromptedClasses, labeler: Any) -> None:
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
            data={CLASS_NAME: np.array([UNKNOWN] * n, dtype=object)},
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


class Counting(PipelineAccumulator):
    name = "count"

    def __init__(self, vocab: PromptedClasses) -> None:
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


def per_prompt_masks(dets: sv.Detections, n: int, what: str) -> np.ndarray:
    """``(n, H, W)`` masks of a single-output predict, in prompt order."""
    prompt = np.asarray(dets.data.get(PROMPT_INDEX, np.arange(len(dets))), np.int64)
    if dets.mask is None or len(dets) != n or sorted(prompt.tolist()) != list(range(n)):
        raise ValueError(
            f"{what} protocol: the SAM core returned {len(dets)} masks for {n} prompts; "
            f"expected one mask per prompt"
        )
    return dets.mask[np.argsort(prompt)]


class RefinedBoxPrompts(BoxPrompts):
    """``box_refine``: the box protocol through :func:`~textseg.pipelines.decode_prompts`,
    with refinement rounds."""

    def __init__(self, vocab: PromptedClasses, sam: Any, rounds: int) -> None:
        super().__init__(vocab, sam)
        self.name = "box_refine"
        self.rounds = rounds
        #: Why this SAM cannot be refined (its mask inputs are not SAM's 256x256), or None.
        self.unsupported: str | None = None

    def _update(self, sample: Sample, result: Any | None) -> None:
        from textseg.pipelines.decode import decode_prompts
        from textseg.prompters.base import ClassPrompts
        from textseg.sam.prompts import Prompts

        gt = sample.gt
        n = len(gt)
        if n == 0 or self.unsupported:
            return
        start = time.perf_counter()
        emb = self.sam.encode(sample.image)
        self._time("encode", (time.perf_counter() - start) * 1000.0)
        start = time.perf_counter()
        prompts = ClassPrompts(
            prompts=Prompts.from_boxes(gt.xyxy.astype(np.float32)),
            class_id=np.full(n, -1, np.int64),
            confidence=np.full(n, np.nan, np.float32),
            multimask=False,
        )
        try:
            dets = decode_prompts(
                self.sam, sample.image, prompts, embedding=emb, refine=self.rounds
            )
        except ValueError as err:  # e.g. SAM 3's tracker: 288x288 logits, no mask input
            self.unsupported = str(err).splitlines()[0]
            return
        self._time("decode", (time.perf_counter() - start) * 1000.0)
        self.ious.append(mask_iou(per_prompt_masks(dets, n, self.name), gt.mask))
        self.ids.append(self.vocab.gt_ids(sample))

    def finish(self) -> Any:
        result = super().finish()
        if self.unsupported:
            result.metrics = {"miou": None, "miou_class_mean": None}
            result.notes[0] = f"{NOT_RUN}{self.unsupported}"
            return result
        result.notes[0] = (
            f"box = the tight box of the ground-truth mask; {self.rounds} refinement round(s): "
            f"the same box plus the previous mask's low-res logits"
        )
        return result
