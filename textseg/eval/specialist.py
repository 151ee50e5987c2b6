"""The ``specialist`` protocol: zero-shot SAM against specialists trained on ground truth and on
textseg's own labels, on the same held-out images.

The exercise of the SAM chapter (and the question autodistill's users ask: is the distilled
model any good?). The dataset's images are split once into a training part and a held-out
part, and three rows are scored on the held-out images with the same semantic mIoU
(:class:`textseg.train.metrics.SemanticIoU`: per class, the union of its masks against the
union of its true masks, summed over the images):

- ``sam_gt_boxes``: SAM zero-shot, prompted with each ground-truth box (one mask per box, the
  box's class); no training, no labelling;
- ``specialist_gt``: a specialist trained on the ground-truth masks of the training part;
- ``specialist_textseg``: the same architecture trained on textseg's labels of the training
  part (the pipeline labels those images here, timed), or a specialist given ready-made
  (``textseg train`` on ``textseg label``'s output, e.g. after a correction pass).

With a specialist given, its architecture and training settings are used for
``specialist_gt`` too, and when every image it held out for validation is in the dataset those
images are the held-out part, so nothing it was trained on is scored. Otherwise the split is
seeded (``val_fraction``), and the notes say how many held-out images the given specialist saw
in training.

Timings per row: ``label_s`` (textseg labelling the training images), ``train_s`` and the
inference speed on the held-out images (``images_per_s``: the models' time only, reading the
images is not counted; SAM's includes its image encoder).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg.eval.dataset import EvalDataset, Sample, load_dataset
from textseg.eval.report import ProtocolResult
from textseg.fields import CLASS_NAME, PROMPT_INDEX
from textseg.train.data import split_indices
from textseg.train.metrics import SemanticIoU

__all__ = ["ROWS", "eval_specialist"]

#: The rows of the comparison, in report order.
ROWS = ("sam_gt_boxes", "specialist_gt", "specialist_textseg")

Predictor = Any  # ``predict(image) -> Detections`` with ``data["class_name"]`` (a Specialist)


def _subset_coco(data: EvalDataset, file_names: list[str], path: Path) -> Path:
    coco = data.coco_gt()
    keep = set(file_names)
    images = [im for im in coco["images"] if im["file_name"] in keep]
    ids = {int(im["id"]) for im in images}
    doc = {
        **coco,
        "images": images,
        "annotations": [a for a in coco["annotations"] if int(a["image_id"]) in ids],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, allow_nan=False), encoding="utf-8")
    return path


def _label(
    data: EvalDataset, file_names: list[str], segmenter: Any, classes: list[str], path: Path
) -> float:
    """textseg's labels of ``file_names`` written as COCO to ``path``; returns the seconds."""
    from textseg.io.coco_writer import CocoWriter
    from textseg.vocab import Vocabulary

    vocab = Vocabulary(classes)
    if path.exists():
        path.unlink()
    start = time.perf_counter()
    with CocoWriter(path, vocab.names, flush_every=1 << 30) as writer:
        for index, record in enumerate(data.images):
            if record["file_name"] not in file_names:
                continue
            sample = data.sample(index)
            result = segmenter.segment(sample.image, vocab)
            h, w = sample.size
            writer.add(sample.file_name, w, h, result.detections)
    return time.perf_counter() - start


def _score_sam(
    sam: Any, samples: Iterable[Sample], metric: SemanticIoU, to_class: dict[str, int]
) -> float:
    """Score SAM prompted with each ground-truth box; returns the seconds SAM took."""
    seconds = 0.0
    for sample in samples:
        gt = sample.gt
        if len(gt) == 0:
            metric.update(None, None, None, None, sample.size)
            continue
        start = time.perf_counter()
        emb = sam.encode(sample.image)
        dets = sam.predict(emb, boxes=gt.xyxy.astype(np.float32), multimask_output=False)
        seconds += time.perf_counter() - start
        prompt = np.asarray(dets.data.get(PROMPT_INDEX, np.arange(len(dets))), np.int64)
        ids = np.asarray([to_class[str(n)] for n in gt.data[CLASS_NAME]], np.int64)
        metric.update(dets.mask, ids[prompt], gt.mask, ids, sample.size)
    return seconds


def _score_predictor(
    predictor: Predictor, samples: Iterable[Sample], metric: SemanticIoU, to_class: dict[str, int]
) -> float:
    """Score a specialist; returns the seconds its ``predict`` took."""
    seconds = 0.0
    for sample in samples:
        start = time.perf_counter()
        dets: sv.Detections = predictor.predict(sample.image)
        seconds += time.perf_counter() - start
        names = dets.data.get(CLASS_NAME, [])
        pred = np.asarray([to_class.get(str(n), -1) for n in names], np.int64)
        gt_ids = np.asarray([to_class[str(n)] for n in sample.gt.data[CLASS_NAME]], np.int64)
        metric.update(dets.mask, pred, sample.gt.mask, gt_ids, sample.size)
    return seconds


def eval_specialist(
    dataset: str | os.PathLike[str] | EvalDataset,
    sam: Any,
    *,
    segmenter: Any | None = None,
    specialist: str | os.PathLike[str] | Predictor | None = None,
    specialist_gt: str | os.PathLike[str] | Predictor | None = None,
    arch: str = "segformer-b0",
    tiny: bool = False,
    epochs: int = 20,
    val_fraction: float = 0.25,
    seed: int = 0,
    work_dir: str | os.PathLike[str] | None = None,
    train_options: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Run the comparison (see the module docstring).

    Args:
        dataset: A COCO folder (``annotations.json`` + ``images/``) or an :class:`EvalDataset`.
        sam: The SAM core of the ``sam_gt_boxes`` row (``encode``, ``predict``).
        segmenter: The pipeline that labels the training images for ``specialist_textseg``
            when no ``specialist`` is given (a :class:`textseg.pipelines.TextSegmenter`).
        specialist: The ``specialist_textseg`` row ready-made: a ``textseg train`` folder or
            an object with ``predict(image) -> Detections`` (``data["class_name"]``).
        specialist_gt: The ``specialist_gt`` row ready-made (default: trained here).
        arch: Architecture trained here (``textseg models --task specialist``), unless a given
            specialist folder names its own.
        tiny: Train the architecture's tiny variant.
        epochs: Epochs of the specialists trained here.
        val_fraction: Share of the images held out (seeded by ``seed``), unless a given
            specialist's validation images are used.
        seed: Seed of the split and of the training.
        work_dir: Where the labels and the specialists trained here are written (default a
            temporary folder, removed afterwards).
        train_options: More :func:`textseg.train.train_specialist` options.
        progress: Progress bars (None: on a terminal only).

    Returns:
        A :class:`ProtocolResult` named ``"specialist"``: ``metrics`` ``miou_<row>``,
        ``images_per_s_<row>``, ``train_s_<row>``, ``label_s``; ``per_class``
        ``{class: {row: IoU}}`` (classes predicted or present); ``timings`` in seconds
        (``label_s``, ``train_<row>_s``, ``inference_<row>_s``); ``notes`` with the three
        rows.

    Raises:
        ValueError: Nothing to train on or to hold out, or a given specialist that knows none
            of the dataset's classes.
    """
    from textseg.train.specialist import Specialist, load_specialist, train_specialist

    data = dataset if isinstance(dataset, EvalDataset) else load_dataset(dataset)
    files = [str(im["file_name"]) for im in data.images]
    options = dict(train_options or {})
    notes: list[str] = []
    given = (
        load_specialist(specialist) if isinstance(specialist, (str, os.PathLike)) else specialist
    )
    held: list[str] | None = None
    if isinstance(given, Specialist):
        settings = given.config.get("settings", {})
        arch, tiny = given.arch, False
        epochs = int(settings.get("epochs", epochs))
        for key in ("batch_size", "lr", "patience", "input_size"):
            if settings.get(key) is not None:
                options.setdefault(key, settings[key])
        val_files = list(settings.get("val_files", []))
        if val_files and set(val_files) <= set(files):
            held = val_files
            notes.append(f"held-out images: the {len(held)} images the given specialist held out")
    if held is None:
        _, val_idx = split_indices(len(files), val_fraction, seed)
        held = [files[i] for i in val_idx]
        notes.append(f"held-out images: {len(held)} of {len(files)}, seeded split (seed {seed})")
        if isinstance(given, Specialist):
            seen = set(given.config.get("settings", {}).get("train_files", [])) & set(held)
            if seen:
                notes.append(
                    f"the given specialist was trained on {len(seen)} of the held-out images "
                    f"(on textseg's labels of them, not the ground truth)"
                )
    train_files = [f for f in files if f not in set(held)]
    if not held or not train_files:
        raise ValueError(
            f"specialist protocol: {len(files)} images cannot be split into training and "
            f"held-out parts; use a larger dataset"
        )
    classes = list(data.classes)
    to_class = {name: k for k, name in enumerate(classes)}
    held_set = set(held)
    held_idx = [i for i, f in enumerate(files) if f in held_set]

    def samples() -> Iterator[Sample]:  # read again for each row: memory stays bounded
        return (data.sample(i) for i in held_idx)

    if isinstance(given, Specialist) and not set(given.classes) & set(classes):
        raise ValueError(
            f"specialist: it knows {', '.join(given.classes)}, none of the dataset's classes"
        )

    cleanup = None
    if work_dir is None:
        cleanup = tempfile.TemporaryDirectory(prefix="textseg-specialist-")
        work = Path(cleanup.name)
    else:
        work = Path(work_dir)
    timings: dict[str, Any] = {}
    try:
        train_kw = dict(arch=arch, tiny=tiny, epochs=epochs, seed=seed, progress=progress,
                        images=data.images_dir, **options)  # fmt: skip
        gt_model = specialist_gt
        if gt_model is None:
            gt_json = _subset_coco(data, train_files, work / "gt-train" / "annotations.json")
            report = train_specialist(gt_json, work / "specialist-gt", **train_kw)
            timings["train_specialist_gt_s"] = report.seconds
            gt_model = load_specialist(work / "specialist-gt")
        elif isinstance(gt_model, (str, os.PathLike)):
            gt_model = load_specialist(gt_model)
        label_model = given
        if label_model is None:
            if segmenter is None:
                raise ValueError(
                    "specialist protocol: give a segmenter to label the training images, or a "
                    "trained specialist (--specialist DIR)"
                )
            labels = work / "textseg-labels" / "annotations.json"
            present = sorted({str(n) for i, f in enumerate(files) if f in set(train_files)
                              for n in data.sample(i).gt.data[CLASS_NAME]},
                             key=classes.index)  # fmt: skip
            timings["label_s"] = _label(data, train_files, segmenter, present, labels)
            report = train_specialist(labels, work / "specialist-textseg", **train_kw)
            timings["train_specialist_textseg_s"] = report.seconds
            label_model = load_specialist(work / "specialist-textseg")
        elif isinstance(label_model, Specialist):
            seconds = label_model.config.get("train_seconds")
            if seconds is not None:
                timings["train_specialist_textseg_s"] = float(seconds)
            notes.append("specialist_textseg: given ready-made; its labelling was timed outside")

        metrics: dict[str, Any] = {}
        per_row: dict[str, SemanticIoU] = {}
        for row in ROWS:
            metric = SemanticIoU(classes)
            if row == "sam_gt_boxes":
                seconds = _score_sam(sam, samples(), metric, to_class)
            else:
                model = gt_model if row == "specialist_gt" else label_model
                seconds = _score_predictor(model, samples(), metric, to_class)
            per_row[row] = metric
            metrics[f"miou_{row}"] = metric.miou()
            metrics[f"images_per_s_{row}"] = len(held_idx) / seconds if seconds > 0 else None
            timings[f"inference_{row}_s"] = seconds
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    if "label_s" in timings:
        metrics["label_s"] = timings["label_s"]
    for row in ROWS[1:]:
        if f"train_{row}_s" in timings:
            metrics[f"train_s_{row}"] = timings[f"train_{row}_s"]
    scored = [c for c in classes if any(per_row[r].union[to_class[c]] for r in ROWS)]
    per_class = {c: {r: per_row[r].per_class()[c] for r in ROWS} for c in scored}
    for row in ROWS:
        parts = [f"mIoU {_fmt(metrics[f'miou_{row}'])}"]
        if row == "specialist_textseg" and "label_s" in metrics:
            parts.append(f"label {metrics['label_s']:.1f} s")
        if f"train_s_{row}" in metrics:
            parts.append(f"train {metrics[f'train_s_{row}']:.1f} s")
        parts.append(f"{_fmt(metrics[f'images_per_s_{row}'], 2)} images/s")
        notes.append(f"{row}: " + ", ".join(parts))
    instances = int(data.gt_counts()[held_idx].sum())
    return ProtocolResult(
        "specialist", metrics, per_class, timings, len(held_idx), instances, notes=notes
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
