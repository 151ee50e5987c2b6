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
next run. Memory does not grow with the folder: results are written as they come (masks kept as
RLE inside the writer).

Two engines run the same segmenter and produce the same files:

- ``"local"``: this process, one image after the other;
- ``"ray"``: Ray Data (``pip install "textseg[ray]"``), a pool of actors that each build the
  segmenter once (one model copy per actor, ``num_gpus_per_worker`` GPUs each when the cluster
  has GPUs), results streamed back to this process and written here in order.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from textseg._image import load_image
from textseg.io._common import atomic_write
from textseg.io.coco import CocoWriter
from textseg.io.counts import count_classes, save_counts_csv
from textseg.pipelines.text_segmenter import UNKNOWN, Result, TextSegmenter
from textseg.vocab import Vocabulary

__all__ = ["IMAGE_EXTENSIONS", "LabelReport", "label_folder", "list_images"]

#: File extensions (lower case) taken as images when listing a folder.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

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
    """One image to label: its position in the sorted listing, COCO file name and path."""

    index: int
    file_name: str
    path: str


@dataclass(frozen=True)
class _SegmenterSpec:
    """How to build the segmenter, picklable so that Ray actors can build their own copy."""

    preset: str | None
    options: Mapping[str, Any]
    factory: Callable[[], TextSegmenter] | None
    seed: int

    def build(self) -> TextSegmenter:
        # Components without weights (tiny-test, pretrained=False) are random-initialised: a
        # fixed seed gives every actor and every resumed run the same model. fork_rng keeps the
        # caller's RNG state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.factory is not None:
                segmenter = self.factory()
            else:
                segmenter = TextSegmenter.from_preset(self.preset, **self.options)
        if not isinstance(segmenter, TextSegmenter):
            raise TypeError(
                f"segmenter_factory: expected a function returning a TextSegmenter, got "
                f"{type(segmenter).__name__}"
            )
        return segmenter

    def keeps_unknown(self) -> bool:
        """Whether a preset is asked to keep unnamed masks (they get an "unknown" category)."""
        return bool(self.options.get("keep_unknown", False))


# ---------------------------------------------------------------------- listing
def list_images(
    folder: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()
) -> list[str]:
    """Image files of ``folder`` and its sub-folders, as sorted relative POSIX paths.

    Images are files whose extension (any case) is in :data:`IMAGE_EXTENSIONS`; hidden files and
    folders (name starting with ".") are skipped, symlinked folders are not followed, and a
    dangling symlink is listed (it is reported as missing when labelled).

    Args:
        folder: The folder.
        exclude: Folders not to descend into (e.g. the output folder, when it is inside).

    Returns:
        ``["a.jpg", "sub/b.png", ...]``, sorted by that string.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is a file.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, expected a folder of images")
    skip = {Path(p).resolve() for p in exclude}
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip
        ]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            names.append((here / name).relative_to(root).as_posix())
    return sorted(names)


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
) -> LabelReport:
    """Label every image of ``folder`` into ``out`` (COCO RLE, counts CSV, errors CSV), resumably.

    Args:
        folder: Image folder, listed recursively by :func:`list_images`. COCO ``file_name`` is
            the path relative to it (``"sub/a.jpg"``).
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
            first.
        seed: Torch seed under which the segmenter is built, so that random-initialised
            components (``tiny-test``, ``pretrained=False``) are the same in every worker and
            every resumed run. Pretrained weights are unaffected.
        progress: Show a tqdm progress bar.

    Returns:
        A :class:`LabelReport`.

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or a file.
        ValueError: No image in ``folder``, a bad option, an unknown preset, or an ``out``
            whose ``annotations.json`` was written for other classes.
        ImportError: ``engine="ray"`` without Ray installed.
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
    spec = _spec(
        preset, preset_kwargs, segmenter_factory, device, engine, num_gpus_per_worker, seed
    )
    names = list_images(folder, exclude=[out])
    if not names:
        raise ValueError(
            f"no image found in {folder} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}); "
            f"check the folder"
        )
    items = [_Item(i, name, str(folder / name)) for i, name in enumerate(names)]
    _remove_stale_temp_files(out)
    writer_classes = vocab.names + ([UNKNOWN] if spec.keeps_unknown() else [])
    annotations = out / ANNOTATIONS
    previous = _read_previous(annotations, writer_classes)
    writer = CocoWriter(annotations, writer_classes, flush_every=1 if save_every == 0 else 1 << 30)
    counts = previous
    todo = [item for item in items if item.file_name not in writer]
    resumed = len(items) - len(todo)
    failed: dict[str, str] = {}
    labelled = instances = 0

    def checkpoint() -> None:
        # The COCO file first: counts and errors are rebuilt from it when a run resumes.
        writer.flush()
        save_counts_csv(out / COUNTS, counts, names=writer_classes)
        _save_errors(out / ERRORS, failed)

    if engine == "local":
        outcomes = _local_outcomes(todo, spec, vocab, batch_size)
    else:
        outcomes = _ray_outcomes(
            todo, spec, vocab, batch_size, num_workers, num_gpus_per_worker, num_cpus_per_worker
        )
    bar = _progress(len(items), resumed, progress)
    last_save = time.monotonic()
    try:
        with writer:  # flushes on the way out, also on Ctrl-C and errors
            for item, outcome in outcomes:
                if isinstance(outcome, str):
                    failed[item.file_name] = outcome
                else:
                    instances += _write(writer, item, outcome, writer_classes, counts)
                    labelled += 1
                bar.update(1)
                if time.monotonic() - last_save >= save_every:
                    checkpoint()
                    last_save = time.monotonic()
    finally:
        bar.close()
        save_counts_csv(out / COUNTS, counts, names=writer_classes)
        _save_errors(out / ERRORS, failed)
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
    num_gpus: float | None,
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
    from textseg.pipelines.presets import _preset

    _preset(preset)  # unknown name -> ValueError listing the presets
    options = dict(preset_kwargs or {})
    if "device" in options:
        raise ValueError("preset_kwargs: pass the device as label_folder(device=...)")
    if device is None:
        device = "cuda" if engine == "ray" and num_gpus else "cpu"
    options["device"] = device
    return _SegmenterSpec(preset, options, None, seed)


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
        images = dataset["images"]
        annotations = dataset["annotations"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} exists but is not a COCO file written by label_folder ({err}); choose "
            f"another output folder or delete it"
        ) from None
    names = [str(c["name"]) for c in categories]
    if names != classes:
        raise ValueError(
            f"{path} was written for classes {names}, not {classes}; resume with the same "
            f"classes or choose another output folder"
        )
    by_cat = {int(c["id"]): str(c["name"]) for c in categories}
    by_image = {int(im["id"]): str(im["file_name"]) for im in images}
    counts = {name: dict.fromkeys(classes, 0) for name in by_image.values()}
    for ann in annotations:
        counts[by_image[int(ann["image_id"])]][by_cat[int(ann["category_id"])]] += 1
    return counts


def _remove_stale_temp_files(out: Path) -> None:
    """Delete temp files a killed run left mid-write (``atomic_write`` never renamed them)."""
    if not out.is_dir():
        return
    for name in (ANNOTATIONS, COUNTS, ERRORS):
        for tmp in out.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _save_errors(path: Path, failed: Mapping[str, str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "error"])
    writer.writerows(failed.items())
    atomic_write(path, buffer.getvalue())


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
    dets = result.detections
    if dets.class_id is not None and len(dets) and (dets.class_id < 0).any():
        # Only segmenters with keep_unknown=True return these; they get their own category.
        if UNKNOWN not in classes:
            raise ValueError(
                f"{item.file_name}: the segmenter returned unnamed masks (keep_unknown=True); "
                f"pass preset_kwargs={{'keep_unknown': True}} so that label_folder gives them "
                f"an {UNKNOWN!r} category, or build the segmenter with keep_unknown=False"
            )
        dets.class_id = np.where(dets.class_id < 0, classes.index(UNKNOWN), dets.class_id)
    h, w = result.image_size
    # The listing position is the id: stable across runs. A folder that changed since the
    # last run may have it taken already; then the writer picks the next free id.
    image_id = item.index + 1
    try:
        writer.add(item.file_name, w, h, dets, image_id=image_id)
    except ValueError as err:
        if f"image id {image_id} is already used" not in str(err):
            raise
        writer.add(item.file_name, w, h, dets)
    counts[item.file_name] = count_classes(dets, classes)
    return len(dets)


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
        results = segmenter.segment([image for _, image in ready], vocab)
        for (item, _), result in zip(ready, results):
            yield item, result


class _RayLabeler:
    """Ray Data UDF: one segmenter per actor; a batch of paths in, pickled results out."""

    def __init__(self, spec: _SegmenterSpec, vocab: Vocabulary) -> None:
        self.segmenter = spec.build()
        self.vocab = vocab

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = [int(i) for i in batch["index"]]
        payload: list[bytes] = [b""] * len(index)
        error: list[str] = [""] * len(index)
        ready: list[tuple[int, np.ndarray]] = []
        for k, path in enumerate(batch["path"]):
            try:
                ready.append((k, load_image(str(path))))
            except (FileNotFoundError, ValueError) as err:
                error[k] = str(err)
        if ready:
            results = self.segmenter.segment([image for _, image in ready], self.vocab)
            for (k, _), result in zip(ready, results):
                payload[k] = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        return {
            "index": np.asarray(index, np.int64),
            "payload": np.asarray(payload, dtype=object),
            "error": np.asarray(error, dtype=object),
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
    folder must be on a shared file system, as with ``ray.data.read_binary_files``). Ray yields
    results as they finish; they are put back in order here, so the file written is the same as
    the local engine's.
    """
    ray = _import_ray()
    if not items:
        return
    if not ray.is_initialized():
        ray.init()  # honours RAY_ADDRESS; a local cluster otherwise
    resources = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    if num_workers is None:
        if num_gpus > 0:
            num_workers = max(1, int(resources.get("GPU", 0) // num_gpus))
        else:
            num_workers = max(1, int(resources.get("CPU", 1) // num_cpus))
    rows = [{"index": k, "path": item.path} for k, item in enumerate(items)]
    # One batch per block: blocks are Ray's unit of work and of streaming back.
    blocks = min(len(rows), math.ceil(len(rows) / batch_size))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        _RayLabeler,
        fn_constructor_kwargs={"spec": spec, "vocab": vocab},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=num_workers,
        num_gpus=num_gpus,
        num_cpus=num_cpus,
    )
    yield from _in_order(items, dataset)


def _in_order(items: Sequence[_Item], dataset: Any) -> Iterator[Outcome]:
    """Rows of ``dataset`` (``index``, ``error``, ``payload``) as outcomes in index order; only
    rows that arrive ahead of a missing one are held."""
    waiting: dict[int, Any] = {}
    next_index = 0
    for row in dataset.iter_rows():
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
