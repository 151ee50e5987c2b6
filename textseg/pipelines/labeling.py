"""Label a folder of images at scale, resumably: COCO annotations, class counts and errors.

:func:`label_folder` segments every image of a folder (recursively) and writes, in ``out``:

- ``annotations.json``: COCO instances with RLE masks (:class:`textseg.io.coco.CocoWriter`);
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

import contextlib
import json
import logging
import math
import os
import pickle
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from textseg._image import IMAGE_SUFFIXES, list_images, load_image
from textseg.io._common import save_errors
from textseg.io.coco import CocoWriter, GroundTruth
from textseg.io.counts import count_classes, save_counts_csv
from textseg.pipelines.text_segmenter import Result, TextSegmenter
from textseg.vocab import UNKNOWN, Vocabulary

__all__ = ["LabelReport", "label_folder"]

#: File extensions (lower case) taken as images when listing a folder.

ANNOTATIONS = "annotations.json"
COUNTS = "counts.csv"
ERRORS = "errors.csv"

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class LabelReport:
    """What :func:`label_folder` did.

    Attributes:
        out: The output folder.
        annotations: ``out/annotations.json`` (COCO, RLE masks).
        counts: ``out/counts.csv``.
        errors: ``out/errors.csv``.
        engine: ``"local"`` or ``"ray"``.
        images: Image files found in the folder.
        labelled: Images labelled and written by this run.
        resumed: Images already in ``annotations.json`` from an earlier run (skipped).
        instances: Instances written by this run.
        failed: ``{file name: reason}`` of the images that could not be read this run.
        seconds: Wall time of the run.
    """

    out: Path
    annotations: Path
    counts: Path
    errors: Path
    engine: str
    images: int
    labelled: int
    resumed: int
    instances: int
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.seconds / self.labelled if self.labelled else 0.0
        failed = f", {len(self.failed)} failed (see {self.errors})" if self.failed else ""
        return (
            f"{self.images} images: {self.labelled} labelled ({self.instances} instances, "
            f"{rate:.2f} s/image, engine {self.engine}), {self.resumed} already done{failed}; "
            f"wrote {self.annotations} and {self.counts}"
        )


@dataclass(frozen=True)
class _Item:
    """One image to label: its COCO image id, COCO file name and path."""

    image_id: int
    file_name: str
    path: str


@dataclass(frozen=True)
class _SegmenterSpec:
    """How to build the segmenter, picklable so that Ray actors can build their own copy.

    ``device`` None (preset only) is decided once the engine knows its resources: ``"cuda"`` for
    Ray actors given GPUs, else ``"cpu"`` (:meth:`on_device`).
    """

    preset: str | None
    options: Mapping[str, Any]
    factory: Callable[[], TextSegmenter] | None
    seed: int
    device: str | None = None

    def on_device(self, gpus: float) -> _SegmenterSpec:
        """This spec with its device decided for a worker given ``gpus`` GPUs."""
        if self.factory is not None or self.device is not None:
            return self
        return replace(self, device="cuda" if gpus > 0 else "cpu")

    def build(self) -> TextSegmenter:
        # Components without weights (tiny-test, pretrained=False) are random-initialised: a
        # fixed seed gives every actor and every resumed run the same model. fork_rng keeps the
        # caller's RNG state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.factory is not None:
                segmenter = self.factory()
            else:
                device = self.device if self.device is not None else "cpu"
                segmenter = TextSegmenter.from_preset(self.preset, device=device, **self.options)
        if not isinstance(segmenter, TextSegmenter):
            raise TypeError(
                f"segmenter_factory: expected a function returning a TextSegmenter, got "
                f"{type(segmenter).__name__}"
            )
        return segmenter

    def keeps_unknown(self) -> bool:
        """Whether a preset is asked to keep unnamed masks (they get an "unknown" category)."""
        return bool(self.options.get("keep_unknown", False))


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

    Returns:
        A :class:`LabelReport`.

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or a file.
        ValueError: No image in ``folder``, a bad option, an unknown preset, an ``out``
            whose ``annotations.json`` was written for other classes, or Ray workers larger
            than the local Ray cluster this call started.
        ImportError: ``engine="ray"`` without Ray installed.
        RuntimeError: Ray itself failed (an actor killed, a node lost); what was labelled is
            saved and the next run resumes.

    Errors of the segmenter (e.g. missing weights) propagate as they are, from either engine,
    after the images labelled so far are saved.
    """
    start = time.perf_counter()
    folder = Path(folder)
    out = Path(out)
    vocab = Vocabulary.coerce(classes)
    _check_options(
        engine, batch_size, num_workers, num_gpus_per_worker, num_cpus_per_worker, save_every
    )
    if engine == "ray":
        _import_ray()  # fail before any output is written
    spec = _spec(preset, preset_kwargs, segmenter_factory, device, engine, seed)
    names = list_images(folder, exclude=[out])
    if not names:
        raise ValueError(
            f"no image found in {folder} (extensions: {', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"check the folder"
        )
    gt = GroundTruth(ground_truth) if ground_truth is not None else None
    failed: dict[str, str] = {}
    items = []
    for i, name in enumerate(names):
        record = gt.image(name) if gt is not None else None
        if gt is not None and record is None:
            failed[name] = f"not an image of {gt.path}"
            continue
        image_id = int(record["id"]) if record is not None else i + 1
        items.append(
            _Item(image_id, str(record["file_name"]) if record else name, str(folder / name))
        )
    _remove_stale_temp_files(out)
    writer_classes = vocab.names + ([UNKNOWN] if spec.keeps_unknown() else [])
    category_ids = gt.classes(vocab.names)[1] if gt is not None else None
    if category_ids is not None and UNKNOWN in writer_classes:
        category_ids = [*category_ids, max(category_ids) + 1]
    annotations = out / ANNOTATIONS
    previous = _read_previous(annotations, writer_classes)
    writer = CocoWriter(
        annotations,
        writer_classes,
        flush_every=1 if save_every == 0 else 1 << 30,
        category_ids=category_ids,
        segmentation=segmentation,  # type: ignore[arg-type]
        info={"description": "written by textseg label"}
        | ({"image_root": str(folder.resolve())} if gt is None else {}),
    )
    counts = previous
    todo = [item for item in items if item.file_name not in writer]
    resumed = len(items) - len(todo)
    labelled = instances = 0

    def checkpoint() -> None:
        # The COCO file first: counts and errors are rebuilt from it when a run resumes.
        writer.flush()
        save_counts_csv(out / COUNTS, counts, names=writer_classes)
        save_errors(out / ERRORS, failed)

    if engine == "local":
        outcomes = _local_outcomes(todo, spec, vocab, batch_size)
    else:
        outcomes = _ray_outcomes(
            todo, spec, vocab, batch_size, num_workers, num_gpus_per_worker, num_cpus_per_worker
        )
    bar = _progress(len(items), resumed, progress)
    last_save = time.monotonic()
    interval = save_every
    try:
        with writer:  # flushes on the way out, also on Ctrl-C and errors
            for item, outcome in outcomes:
                if isinstance(outcome, str):
                    failed[item.file_name] = outcome
                else:
                    instances += _write(writer, item, outcome, writer_classes, counts)
                    labelled += 1
                bar.update(1)
                if time.monotonic() - last_save >= interval:
                    began = time.monotonic()
                    checkpoint()
                    last_save = time.monotonic()
                    if save_every > 0:
                        # Each checkpoint rewrites files that grow with the run: keep their
                        # cost under a tenth of the time, not quadratic in the folder size.
                        interval = max(save_every, 10.0 * (last_save - began))
    finally:
        outcomes.close()  # stops a Ray execution at once, not when garbage-collected
        bar.close()
        save_counts_csv(out / COUNTS, counts, names=writer_classes)
        save_errors(out / ERRORS, failed)
    return LabelReport(
        out=out,
        annotations=annotations,
        counts=out / COUNTS,
        errors=out / ERRORS,
        engine=engine,
        images=len(items),
        labelled=labelled,
        resumed=resumed,
        instances=instances,
        failed=failed,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------- checks and set-up
def _spec(
    preset: str,
    preset_kwargs: Mapping[str, Any] | None,
    factory: Callable[[], TextSegmenter] | None,
    device: str | None,
    engine: str,
    seed: int,
) -> _SegmenterSpec:
    if factory is not None:
        if not callable(factory):
            raise TypeError(
                f"segmenter_factory: expected a function returning a TextSegmenter, got "
                f"{type(factory).__name__}"
            )
        if preset_kwargs or device is not None:
            raise ValueError(
                "segmenter_factory builds the segmenter itself: drop preset_kwargs and device, "
                "or drop the factory and use preset="
            )
        return _SegmenterSpec(None, {}, factory, seed)
    from textseg.pipelines.presets import get_preset

    get_preset(preset)  # unknown name -> ValueError listing the presets
    options = dict(preset_kwargs or {})
    if "device" in options:
        raise ValueError("preset_kwargs: pass the device as label_folder(device=...)")
    if device is None and engine == "local":
        device = "cpu"
    # Ray with device=None: each actor's device follows the GPUs it gets (_ray_outcomes).
    return _SegmenterSpec(preset, options, None, seed, device)


def _check_options(
    engine: str,
    batch_size: int,
    num_workers: int | None,
    num_gpus: float | None,
    num_cpus: float,
    save_every: float,
) -> None:
    if engine not in ("local", "ray"):
        raise ValueError(f"engine: expected 'local' or 'ray', got {engine!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1
    ):
        raise ValueError(f"num_workers: expected an int >= 1 or None, got {num_workers!r}")
    if engine == "local" and num_workers not in (None, 1):
        raise ValueError(
            f"num_workers={num_workers} needs engine='ray'; the local engine runs one segmenter "
            f"in this process"
        )
    if engine == "local" and num_gpus:
        raise ValueError(
            "num_gpus_per_worker is for engine='ray'; for the local engine pass device='cuda'"
        )
    if num_gpus is not None and num_gpus < 0:
        raise ValueError(f"num_gpus_per_worker: expected >= 0, got {num_gpus}")
    if not num_cpus > 0:
        raise ValueError(f"num_cpus_per_worker: expected > 0, got {num_cpus}")
    if not save_every >= 0:
        raise ValueError(f"save_every: expected seconds >= 0, got {save_every}")


def _read_previous(path: Path, classes: list[str]) -> dict[str, dict[str, int]]:
    """Counts of the images already in ``path`` (empty when new); refuses other classes."""
    if not path.exists():
        return {}
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
        categories = sorted(dataset["categories"], key=lambda c: c["id"])
        names = [str(c["name"]) for c in categories]
        by_cat = {int(c["id"]): str(c["name"]) for c in categories}
        by_image = {int(im["id"]): str(im["file_name"]) for im in dataset["images"]}
        pairs = [(int(a["image_id"]), int(a["category_id"])) for a in dataset["annotations"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path} exists but is not a COCO file written by label_folder ({err!r}); choose "
            f"another output folder or delete it"
        ) from None
    if names != classes:
        raise ValueError(
            f"{path} was written for classes {names}, not {classes}; resume with the same "
            f"classes or choose another output folder"
        )
    counts = {name: dict.fromkeys(classes, 0) for name in by_image.values()}
    for image_id, category_id in pairs:
        if image_id not in by_image or category_id not in by_cat:
            raise ValueError(
                f"{path}: an annotation refers to image {image_id} / category {category_id}, "
                f"which the file does not have; choose another output folder or delete it"
            )
        counts[by_image[image_id]][by_cat[category_id]] += 1
    return counts


def _remove_stale_temp_files(out: Path) -> None:
    """Delete temp files a killed run left mid-write (``atomic_write`` never renamed them)."""
    if not out.is_dir():
        return
    for name in (ANNOTATIONS, COUNTS, ERRORS):
        for tmp in out.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", disable=not enabled, desc="labelling")


def _write(
    writer: CocoWriter,
    item: _Item,
    result: Result,
    classes: list[str],
    counts: dict[str, dict[str, int]],
) -> int:
    boxes = result.boxes
    if boxes.class_id is not None and len(boxes) and (boxes.class_id < 0).any():
        # Only segmenters with keep_unknown=True return these; they get their own category.
        if UNKNOWN not in classes:
            raise ValueError(
                f"{item.file_name}: the segmenter returned unnamed masks (keep_unknown=True); "
                f"pass preset_kwargs={{'keep_unknown': True}} so that label_folder gives them "
                f"an {UNKNOWN!r} category, or build the segmenter with keep_unknown=False"
            )
        boxes.class_id = np.where(boxes.class_id < 0, classes.index(UNKNOWN), boxes.class_id)
        result = replace(result, _boxes=boxes)
    h, w = result.image_size
    # The listing position (or the ground truth's id) is the id: stable across runs. A folder
    # that changed since the last run may have it taken already; then the writer picks the
    # next free id. The masks go to the file as the RLEs the pipeline made.
    try:
        writer.add(item.file_name, w, h, result, image_id=item.image_id)
    except ValueError as err:
        if f"image id {item.image_id} is already used" not in str(err):
            raise
        writer.add(item.file_name, w, h, result)
    counts[item.file_name] = count_classes(result.boxes, classes)
    return len(result)


# ---------------------------------------------------------------------- engines
Outcome = tuple[_Item, Result | str]


def _local_outcomes(
    items: Sequence[_Item], spec: _SegmenterSpec, vocab: Vocabulary, batch_size: int
) -> Iterator[Outcome]:
    """Results in order; the segmenter is built on the first readable image (a rerun with
    nothing left to do loads no model)."""
    segmenter: TextSegmenter | None = None
    for start in range(0, len(items), batch_size):
        ready: list[tuple[_Item, np.ndarray]] = []
        for item in items[start : start + batch_size]:
            try:
                ready.append((item, load_image(item.path)))
            except (FileNotFoundError, ValueError) as err:
                yield item, str(err)
        if not ready:
            continue
        if segmenter is None:
            segmenter = spec.build()
        yield from _segment_each(segmenter, ready, vocab)


def _segment_each(
    segmenter: TextSegmenter, ready: Sequence[tuple[Any, np.ndarray]], vocab: Vocabulary
) -> Iterator[tuple[Any, Result | str]]:
    """``(key, result or error line)`` for each image: a batch first, and when it fails, one
    image at a time, so that one bad image (any error: an extreme aspect ratio, a decoder
    failure) is named, recorded and skipped, and the others are labelled."""
    try:
        images = [image for _, image in ready]
        results = segmenter.segment(images, vocab, batch_size=len(images))
    except Exception as err:
        if len(ready) == 1:
            yield ready[0][0], _error_line(err)
            return
        for key, image in ready:
            try:
                yield key, segmenter.segment(image, vocab)
            except Exception as one:
                yield key, _error_line(one)
        return
    yield from ((key, result) for (key, _), result in zip(ready, results))


def _error_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a Ray actor, chained to the error re-raised here."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _pack_error(err: BaseException) -> bytes:
    """An actor's error, pickled with its traceback, to be raised again by the driver."""
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        return pickle.dumps((err, tb), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        # Not every exception pickles; its type and message still reach the driver.
        stand_in = RuntimeError(f"{type(err).__name__}: {err}")
        return pickle.dumps((stand_in, tb), protocol=pickle.HIGHEST_PROTOCOL)


def _raise_packed(data: bytes) -> None:
    err, tb = pickle.loads(data)
    raise err from _RemoteTraceback(f"raised in a Ray actor:\n{tb}")


class _RayLabeler:
    """Ray Data UDF: one segmenter per actor; a batch of paths in, pickled results out.

    A failure to build the segmenter is not left to Ray, which would report it wrapped in its
    own errors (``ActorDiedError``, ``RayTaskError``...) after its retries: it is sent back in
    the ``fatal`` column and :func:`_in_order` raises it again in the driver, the same
    exception the local engine raises. A failure on one image is that image's error, as in the
    local engine.
    """

    def __init__(self, spec: _SegmenterSpec, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.segmenter: TextSegmenter | None = None
        self.fatal = b""
        try:
            self.segmenter = spec.build()
        except Exception as err:  # re-raised by the driver (see the class docstring)
            self.fatal = _pack_error(err)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = [int(i) for i in batch["index"]]
        payload: list[bytes] = [b""] * len(index)
        error: list[str] = [""] * len(index)
        fatal = self.fatal
        if not fatal:
            ready: list[tuple[int, np.ndarray]] = []
            for k, path in enumerate(batch["path"]):
                try:
                    ready.append((k, load_image(str(path))))
                except (FileNotFoundError, ValueError) as err:
                    error[k] = str(err)
            if ready and self.segmenter is not None:
                for k, outcome in _segment_each(self.segmenter, ready, self.vocab):
                    if isinstance(outcome, str):
                        error[k] = outcome
                    else:
                        payload[k] = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        return {
            "index": np.asarray(index, np.int64),
            "payload": np.asarray(payload, dtype=object),
            "error": np.asarray(error, dtype=object),
            "fatal": np.asarray([fatal] * len(index), dtype=object),
        }


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise ImportError(
            f'engine="ray" needs Ray Data, which is not installed ({err}); install it with '
            f'pip install "textseg[ray]", or use engine="local"'
        ) from None
    return ray


#: At most this many Ray blocks (each a task and an object in the object store): a folder of a
#: million images goes in blocks of several batches rather than a million one-batch blocks.
_MAX_BLOCKS = 4096


def _ray_outcomes(
    items: Sequence[_Item],
    spec: _SegmenterSpec,
    vocab: Vocabulary,
    batch_size: int,
    num_workers: int | None,
    num_gpus: float | None,
    num_cpus: float,
) -> Iterator[Outcome]:
    """Results in listing order, computed by a Ray Data actor pool.

    Rows are ``{index, path}``; actors read the files themselves (on a multi-node cluster the
    folder must be on a shared file system, as with ``ray.data.read_binary_files``). The
    dataset preserves order, so results come back in listing order (Ray holds the ones that
    finish early, in its object store) and the file written is the same as the local engine's.

    Without a running Ray (``ray.init`` not called, no ``RAY_ADDRESS``), a local cluster is
    started, without dashboard, and left running for later calls, as Ray Data does.
    """
    ray = _import_ray()
    if not items:
        return
    started_here = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # the cluster RAY_ADDRESS names
        else:
            # A local cluster for this process (or the one `ray start` left running).
            started_here = True
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
    resources = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    if num_workers is None:
        if num_gpus > 0:
            num_workers = max(1, int(resources.get("GPU", 0) // num_gpus))
        else:
            num_workers = max(1, int(resources.get("CPU", 1) // num_cpus))
    if started_here:
        # A local cluster never grows: an actor it cannot hold would wait forever.
        _check_fits(resources, num_cpus, num_gpus)
    spec = spec.on_device(num_gpus)
    rows = [{"index": k, "path": item.path} for k, item in enumerate(items)]
    per_block = batch_size * math.ceil(len(rows) / (batch_size * _MAX_BLOCKS))
    dataset = ray.data.from_items(
        rows, override_num_blocks=math.ceil(len(rows) / per_block)
    ).map_batches(
        _RayLabeler,
        fn_constructor_kwargs={"spec": spec, "vocab": vocab},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_gpus=num_gpus,
        num_cpus=num_cpus,
    )
    # This dataset's own context (a copy made with it): label_folder shows its own progress bar.
    context = dataset.context
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield from _in_order(items, dataset)
    except ray.exceptions.RayError as err:
        # Ray's own failures (an actor killed, out of memory, a lost node): one line for the
        # CLI, the details chained.
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RuntimeError(
            f"the Ray run failed ({type(err).__name__}: {first}); the images labelled so far "
            f"are saved, run again to resume"
        ) from err


def _check_fits(resources: Mapping[str, float], num_cpus: float, num_gpus: float) -> None:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if num_cpus > cpus:
        raise ValueError(
            f"num_cpus_per_worker={num_cpus:g} but the local Ray cluster has {cpus:g} CPUs; "
            f"ask for fewer CPUs per worker"
        )
    if num_gpus > gpus:
        raise ValueError(
            f"num_gpus_per_worker={num_gpus:g} but the local Ray cluster has {gpus:g} GPUs; "
            f"pass num_gpus_per_worker=0 (CPU) or fewer GPUs per worker"
        )


def _in_order(items: Sequence[_Item], dataset: Any) -> Iterator[Outcome]:
    """Rows of ``dataset`` (``index``, ``error``, ``payload``, ``fatal``) as outcomes in index
    order; only rows that arrive ahead of a missing one are held. A ``fatal`` row re-raises the
    actor's error here."""
    waiting: dict[int, Any] = {}
    next_index = 0
    for row in dataset.iter_rows():
        if row.get("fatal"):
            _raise_packed(row["fatal"])
        waiting[int(row["index"])] = row
        while next_index in waiting:
            done = waiting.pop(next_index)
            outcome: Result | str = (
                str(done["error"]) if done["error"] else pickle.loads(done["payload"])
            )
            yield items[next_index], outcome
            next_index += 1
    if waiting or next_index != len(items):
        raise RuntimeError(
            f"Ray returned {next_index} of {len(items)} results in order ({len(waiting)} "
            f"out of order); rerun to resume the missing images"
        )
