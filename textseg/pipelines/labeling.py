"""Label a folder of images at scale, resumably: COCO annotations, class counts and errors.

:func:`label_folder` is the folder entry of the runner (:mod:`textseg.pipelines.runner`:
plan -> engine -> write), the one ``textseg segment`` uses too.

:func:`label_folder` segments every image of a folder (recursively) and writes, in ``out``:

- ``annotations.json``: COCO instances with RLE masks (:class:`textseg.io.coco_writer.CocoWriter`);
- ``counts.csv``: instances per image and class (:func:`textseg.io.counts.save_counts_csv`,
  long layout ``image,class,count``);
- ``errors.csv``: ``file,error``, one row per image that could not be read this run.

Every file is rewritten atomically at each checkpoint (``save_every`` seconds), so a run stopped
by Ctrl-C (flushes at once) or killed (SIGKILL: loses at most the last ``save_every`` seconds of
work) resumes where it stopped when run again with the same ``out``: images already in
``annotations.json`` are skipped, nothing is labelled twice. Images are processed and written in
sorted order, image ids are ``1 + the position of the file in the sorted listing``, so a resumed
run writes the same file as an uninterrupted one. Unreadable, truncated or missing images are
reported (``errors.csv`` and :attr:`LabelReport.failed`) and skipped; they are retried by the
next run. Images and dense masks are dropped as soon as an image is written; what grows with
the folder is the annotations the writer holds until the end, as RLE (a few kB per instance).

Two engines run the same segmenter and produce the same files:

- ``"local"``: this process, one image after the other;
- ``"ray"``: Ray Data (``pip install "textseg[ray]"``), a pool of actors that each build the
  segmenter once (one model copy per actor, ``num_gpus_per_worker`` GPUs each when the cluster
  has GPUs), results streamed back to this process in order and written here. An error while
  building or running the segmenter in an actor is raised here as the same exception the
  local engine raises (the actor's traceback chained to it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from textseg.pipelines.engines.base import segmenter_spec
from textseg.pipelines.runner import EngineOptions, RunReport, WriteOptions, plan_folder, run_plan
from textseg.pipelines.text_segmenter import TextSegmenter
from textseg.validators import non_negative_number
from textseg.vocab import Vocabulary

__all__ = ["LabelReport", "label_folder"]

#: What :func:`label_folder` returns (the runner's report).
LabelReport = RunReport

Engine = Literal["local", "ray"]


# ---------------------------------------------------------------------- the public entry point
def label_folder(
    folder: str | os.PathLike[str],
    classes: Sequence[str] | Vocabulary,
    out: str | os.PathLike[str],
    *,
    preset: str = "grounded-sam",
    preset_kwargs: Mapping[str, Any] | None = None,
    segmenter_factory: Callable[[], TextSegmenter] | None = None,
    engine: Engine = "local",
    batch_size: int = 1,
    num_workers: int | None = None,
    num_gpus_per_worker: float | None = None,
    num_cpus_per_worker: float = 1.0,
    device: str | None = None,
    save_every: float = 10.0,
    seed: int = 0,
    progress: bool = True,
    ground_truth: str | os.PathLike[str] | None = None,
    segmentation: str = "rle",
    mode: Literal["resume", "overwrite"] = "resume",
    formats: Sequence[str] = (),
    export_options: Mapping[str, Any] | None = None,
) -> LabelReport:
    """Label every image of ``folder`` into ``out`` (COCO RLE, counts CSV, errors CSV), resumably.

    Args:
        folder: Image folder, listed recursively (:func:`textseg._image.list_images`). COCO
            ``file_name`` is the path relative to it (``"sub/a.jpg"``).
        classes: Class names (``class_id`` indexes them), or a :class:`~textseg.vocab.Vocabulary`
            with synonyms, negatives and per-class thresholds.
        out: Output folder (created). Running again with the same ``out`` resumes.
        preset: Pipeline preset (:func:`textseg.pipelines.list_presets`), built once per
            process (local) or per actor (ray).
        preset_kwargs: Overrides for the preset (``dtype``, ``sam``, ``detector``, ``clip``,
            ``box_threshold``, ``min_area``, ``pretrained``...; see
            :meth:`TextSegmenter.from_preset`).
        segmenter_factory: Instead of a preset: a function with no argument returning a
            :class:`TextSegmenter`. With ``engine="ray"`` it is pickled (cloudpickle) to the
            actors, so it must not capture unpicklable objects.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actor pool).
        batch_size: Images per segmenter call (local) or per Ray batch.
        num_workers: Ray actors (each holds one model copy). Default: one per GPU share when the
            cluster has GPUs, else one per ``num_cpus_per_worker`` CPUs. Local: 1 or None.
        num_gpus_per_worker: GPUs per Ray actor. Default: 1 when the cluster has GPUs, else 0.
        num_cpus_per_worker: CPUs per Ray actor (its torch thread count).
        device: Device of the preset's models; default ``"cuda"`` for Ray actors with GPUs,
            else ``"cpu"``. Only with ``preset`` (a factory chooses its own).
        save_every: Seconds between checkpoints (rewrites of the three files); 0 writes after
            every image. A killed run loses at most this much work; Ctrl-C and errors flush
            first. Once a checkpoint takes more than a tenth of this (a file of many thousands
            of images), checkpoints are spaced by ten times their duration instead.
        seed: Torch seed under which the segmenter is built, so that random-initialised
            components (``tiny-test``, ``pretrained=False``) are the same in every worker and
            every resumed run. Pretrained weights are unaffected.
        progress: Show a tqdm progress bar.
        ground_truth: The user's COCO file (:class:`textseg.io.coco.GroundTruth`): category
            ids and image ids come from it, so the results score against it; an image of the
            folder that is not in it is reported and skipped.
        segmentation: Masks in the COCO file as ``"rle"`` (the pipeline's own, written as
            they are) or ``"polygon"``.
        mode: ``"resume"`` (default: images already in ``out`` are skipped, after checking
            they are the same files of the same folder) or ``"overwrite"`` (what an earlier run
            wrote in ``out`` is deleted first).
        formats: Derived formats to write at the end (:data:`textseg.io.export.FORMATS`);
            ``results.json``, ``counts.csv`` and ``counts.json`` are always written.
        export_options: More keyword arguments of :func:`textseg.io.export.write_exports`.

    Returns:
        A :class:`LabelReport`.

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or a file.
        ValueError: No image in ``folder``, a bad option, an unknown preset, an ``out``
            whose ``annotations.json`` was written for other classes, or Ray workers larger
            than the local Ray cluster this call started.
        OutputFolderError: ``out`` belongs to another command, or holds the results of
            another image folder (or of files that changed since).
        FolderBusyError: Another run is writing ``out``.
        ImportError: ``engine="ray"`` without Ray installed.
        RuntimeError: Ray itself failed (an actor killed, a node lost); what was labelled is
            saved and the next run resumes.

    Errors of the segmenter (e.g. missing weights) propagate as they are, from either engine,
    after the images labelled so far are saved.
    """
    folder = Path(folder)
    engine_options = EngineOptions(
        engine, batch_size, num_workers, num_gpus_per_worker, num_cpus_per_worker
    )
    engine_options.check()
    non_negative_number(save_every, "save_every")
    if mode not in ("resume", "overwrite"):
        raise ValueError(f"mode: expected 'resume' or 'overwrite', got {mode!r}")
    spec = segmenter_spec(preset, preset_kwargs, segmenter_factory, device, engine, seed)
    plan = plan_folder(folder, classes, ground_truth=ground_truth, exclude=[out])
    write = WriteOptions(
        command="label",
        mode=mode,
        segmentation=segmentation,  # type: ignore[arg-type]
        formats=tuple(formats),
        export_options=dict(export_options or {}),
        save_every=save_every,
        hint="pass --overwrite to label again from scratch",
    )
    return run_plan(plan, out, spec, engine=engine_options, write=write, progress=progress)
