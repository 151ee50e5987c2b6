"""The one runner behind ``textseg segment`` and ``textseg label``: plan -> engine -> write.

- **plan** (:func:`plan_folder`, :func:`plan_files`): the images, their COCO file names and
  image ids (the ground truth's with ``ground_truth=``, else ``1 +`` the listing position),
  the classes and their category ids, and the folder the file names are relative to;
- **engine** (:mod:`textseg.pipelines.engines`): ``"local"`` or ``"ray"``, the same outcomes
  in the same order;
- **write** (:func:`run_plan`): claims the output folder (:func:`textseg.io.folder.claim_output`,
  the owned names are :data:`RUN_OWNED`), writes ``annotations.json``
  (:class:`~textseg.io.coco_writer.CocoWriter`), ``counts.csv``, ``errors.csv``
  (:func:`textseg.io._common.save_errors`) at each checkpoint, annotated images when asked,
  then everything derived from the COCO file (:func:`textseg.io.export.write_exports`).

Every file is rewritten atomically at each checkpoint, so a run that is killed resumes where it
stopped (``mode="resume"``): images already in ``annotations.json`` are skipped after checking
that they are the same files (size and a hash of their first bytes, and the recorded
``info.image_root``), so a folder holding another folder's results is refused, not mixed.
The write sequence, in order (the names of the test hook :data:`KILL_AFTER_ENV`): the manifest
``.textseg.json`` (``manifest``); ``annotations.json`` created (``annotations``); per image the
annotated image when asked (``annotated``) and at each checkpoint ``annotations``, ``counts``
(``counts.csv``), ``errors`` (``errors.csv``); at the end ``counts`` and ``errors`` again, the
exports (``exports``: ``results.json``, ``counts.json``, the formats) and the manifest with
``complete: true`` (``complete``). A run stopped after any of them resumes to the files of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from textseg.io._common import save_errors
from textseg.io.coco_writer import CocoWriter
from textseg.io.counts import count_classes, save_counts_csv
from textseg.io.export import OWNED as EXPORT_OWNED
from textseg.io.export import write_exports
from textseg.io.folder import KILL_ENV, OutputFolderError, claim_output, written
from textseg.pipelines.engines.base import Item, Outcome, SegmenterSpec
from textseg.pipelines.plan import Plan, check_request, plan_files, plan_folder
from textseg.pipelines.text_segmenter import Result
from textseg.validators import non_negative_number, optional_positive_int, positive_int
from textseg.vocab import UNKNOWN, Vocabulary

__all__ = [
    "RUN_OWNED",
    "EngineOptions",
    "Plan",
    "RunReport",
    "WriteOptions",
    "check_request",
    "plan_files",
    "plan_folder",
    "run_plan",
]

ANNOTATIONS = "annotations.json"
COUNTS = "counts.csv"
ERRORS = "errors.csv"
ANNOTATED = "annotated"
#: Everything a segment/label run may write in its output folder (the one list):
#: ``--overwrite`` deletes these and nothing else.
RUN_OWNED: tuple[str, ...] = (
    ANNOTATIONS,
    "results.json",
    COUNTS,
    "counts.json",
    ERRORS,
    ANNOTATED,
    "review_queue.csv",
    *(name for names in EXPORT_OWNED.values() for name in names),
)
#: Image record field: ``"<bytes>:<hash of the first bytes>"`` of the file labelled, checked
#: before a resumed run skips the image.
SOURCE = "textseg_source"
_HASHED_BYTES = 1 << 16
#: Test hook: ``NAME`` or ``NAME:K`` stops the process (exit 137, as SIGKILL) right after the
#: K-th write of NAME (:func:`textseg.io.folder.written`, the one hook of every command).
KILL_AFTER_ENV = KILL_ENV

Engine = Literal["local", "ray"]
WriteMode = Literal["new", "overwrite", "append", "resume"]


# ---------------------------------------------------------------------- options and report
@dataclass(frozen=True)
class EngineOptions:
    """Which engine runs the segmenter, and its resources (Ray only but ``batch_size``).

    Attributes:
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actor pool).
        batch_size: Images per segmenter call (local) or per Ray batch.
        num_workers: Ray actors (default: one per GPU share, else per CPU share).
        num_gpus_per_worker: GPUs per Ray actor (default 1 when the cluster has GPUs, else 0).
        num_cpus_per_worker: CPUs per Ray actor.
    """

    engine: Engine = "local"
    batch_size: int = 1
    num_workers: int | None = None
    num_gpus_per_worker: float | None = None
    num_cpus_per_worker: float = 1.0

    def check(self) -> None:
        """Raises ValueError for a bad option (before anything is written)."""
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine: expected 'local' or 'ray', got {self.engine!r}")
        positive_int(self.batch_size, "batch_size")
        optional_positive_int(self.num_workers, "num_workers")
        if self.engine == "local" and self.num_workers not in (None, 1):
            raise ValueError(
                f"num_workers={self.num_workers} needs engine='ray'; the local engine runs one "
                f"segmenter in this process"
            )
        if self.engine == "local" and self.num_gpus_per_worker:
            raise ValueError(
                "num_gpus_per_worker is for engine='ray'; for the local engine pass device='cuda'"
            )
        if self.num_gpus_per_worker is not None:
            non_negative_number(self.num_gpus_per_worker, "num_gpus_per_worker")
        if not self.num_cpus_per_worker > 0:
            raise ValueError(f"num_cpus_per_worker: expected > 0, got {self.num_cpus_per_worker}")

    def outcomes(self, items: Sequence[Item], spec: SegmenterSpec, vocab: Vocabulary) -> Any:
        """The engine's outcomes (a generator: close it to stop the engine)."""
        if self.engine == "local":
            from textseg.pipelines.engines.local import local_outcomes

            return local_outcomes(items, spec, vocab, self.batch_size)
        from textseg.pipelines.engines.ray import ray_outcomes

        return ray_outcomes(
            items,
            spec,
            vocab,
            self.batch_size,
            self.num_workers,
            self.num_gpus_per_worker,
            self.num_cpus_per_worker,
        )


@dataclass(frozen=True)
class WriteOptions:
    """How the output folder is claimed and what is written in it.

    Attributes:
        command: The command that owns the folder (``"label"``, ``"segment"``).
        mode: ``"new"``, ``"overwrite"``, ``"append"`` or ``"resume"``
            (:func:`textseg.io.folder.claim_output`).
        redo: Segment every planned image again, replacing its earlier results (``segment``);
            False skips images already written (``label``'s resume).
        annotate: Also write ``annotated/<file_name>`` (the image with its masks drawn).
        segmentation: Masks in ``annotations.json``: ``"rle"`` or ``"polygon"``.
        formats: Derived formats (:data:`textseg.io.export.FORMATS`).
        export_options: More keyword arguments of :func:`textseg.io.export.write_exports`
            (``val_fraction``, ``link_images``, ``yolo_trace``...).
        save_every: Seconds between checkpoints; 0 after every image. Once a checkpoint takes
            more than a tenth of this, checkpoints are spaced by ten times their duration.
        hint: How to continue a folder with results, in the command's own options.
    """

    command: str = "label"
    mode: WriteMode = "resume"
    redo: bool = False
    annotate: bool = False
    segmentation: Literal["rle", "polygon"] = "rle"
    formats: Sequence[str] = ()
    export_options: Mapping[str, Any] = field(default_factory=dict)
    save_every: float = 10.0
    hint: str | None = None


@dataclass(frozen=True)
class RunReport:
    """What a run did.

    Attributes:
        out: The output folder.
        annotations: ``out/annotations.json`` (COCO, RLE masks).
        counts: ``out/counts.csv``.
        errors: ``out/errors.csv``.
        engine: ``"local"`` or ``"ray"``.
        images: Images planned (found in the folder / given, and in the ground truth).
        labelled: Images segmented and written by this run.
        resumed: Images already in ``annotations.json`` from an earlier run (skipped).
        instances: Instances written by this run.
        failed: ``{file name: reason}`` of the images that failed this run.
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


# ---------------------------------------------------------------------- write
def run_plan(
    plan: Plan,
    out: str | os.PathLike[str],
    spec: SegmenterSpec,
    *,
    engine: EngineOptions | None = None,
    write: WriteOptions | None = None,
    progress: bool = False,
    on_outcome: Callable[[Item, Result | str], None] | None = None,
) -> RunReport:
    """Run ``plan`` with ``spec``'s segmenter on ``engine`` and write the results into ``out``.

    Args:
        plan: From :func:`plan_folder` or :func:`plan_files`.
        out: The output folder, claimed for ``write.command``.
        spec: How to build the segmenter (:func:`~textseg.pipelines.engines.segmenter_spec`).
        engine: The engine and its resources (default: local, one image per call).
        write: What to write and how to claim the folder (default: ``label``'s resume).
        progress: Show a tqdm progress bar.
        on_outcome: Called with each image's item and result (or error line) once written.

    Returns:
        A :class:`RunReport`.

    Raises:
        OutputFolderError: ``out`` belongs to another command, holds results the mode does not
            allow, or holds another image folder's results (resume/append).
        FolderBusyError: Another run is writing ``out``.
        ValueError: A bad option; a COCO file in ``out`` written for other classes.
    """
    start = time.perf_counter()
    engine = engine or EngineOptions()
    write = write or WriteOptions()
    engine.check()
    non_negative_number(write.save_every, "save_every")
    check_request(plan.vocab, spec)
    if engine.engine == "ray":
        from textseg.pipelines.engines.ray import import_ray

        import_ray()  # fail before any output is written
    owned = RUN_OWNED if write.command in ("label", "segment") else (*RUN_OWNED, write.command)
    info = {"image_root": str(plan.image_root)}
    with claim_output(out, write.command, owned=owned, mode=write.mode, hint=write.hint) as folder:
        written("manifest")
        report = _write_run(
            plan, folder.path, spec, engine, write, progress, on_outcome, start, info
        )
        folder.update(complete=True, formats=list(write.formats))
        written("complete")
        return report


def _write_run(
    plan: Plan,
    out: Path,
    spec: SegmenterSpec,
    engine: EngineOptions,
    write: WriteOptions,
    progress: bool,
    on_outcome: Callable[[Item, Result | str], None] | None,
    start: float,
    info: dict[str, str],
) -> RunReport:
    _remove_stale_temp_files(out)
    classes = plan.vocab.names + ([UNKNOWN] if spec.keeps_unknown() else [])
    category_ids = list(plan.category_ids) if plan.category_ids is not None else None
    if category_ids is not None and UNKNOWN in classes:
        category_ids = [*category_ids, max(category_ids) + 1]
    annotations = out / ANNOTATIONS
    counts, previous = _read_previous(annotations, classes)
    if not write.redo:
        _check_resumable(out, plan, previous)
    writer = CocoWriter(
        annotations,
        classes,
        flush_every=1 << 30,
        category_ids=category_ids,
        segmentation=write.segmentation,
        info={"description": f"written by textseg {write.command}", **info},
    )
    written("annotations")
    failed: dict[str, str] = dict(plan.failed)
    todo = list(plan.items) if write.redo else [i for i in plan.items if i.file_name not in writer]
    resumed = len(plan.items) - len(todo)
    labelled = instances = 0

    def checkpoint() -> None:
        # The COCO file first: counts and errors are rebuilt from it when a run resumes.
        writer.flush()
        written("annotations")
        save_counts_csv(out / COUNTS, counts, names=classes)
        written("counts")
        save_errors(out / ERRORS, failed)
        written("errors")

    outcomes: Iterator[Outcome] = engine.outcomes(todo, spec, plan.vocab)
    bar = _progress(len(plan.items), resumed, progress)
    last_save = time.monotonic()
    interval = write.save_every
    try:
        with writer:  # flushes on the way out, also on Ctrl-C and errors
            for item, outcome in outcomes:
                if isinstance(outcome, str):
                    failed[item.file_name] = outcome
                else:
                    failed.pop(item.file_name, None)
                    instances += _write(writer, item, outcome, classes, counts, write, out)
                    labelled += 1
                if on_outcome is not None:
                    on_outcome(item, outcome)
                bar.update(1)
                if time.monotonic() - last_save >= interval:
                    began = time.monotonic()
                    checkpoint()
                    last_save = time.monotonic()
                    if write.save_every > 0:
                        # Each checkpoint rewrites files that grow with the run: keep their
                        # cost under a tenth of the time, not quadratic in the folder size.
                        interval = max(write.save_every, 10.0 * (last_save - began))
    finally:
        outcomes.close()  # type: ignore[attr-defined]  # stops a Ray execution at once
        bar.close()
        save_counts_csv(out / COUNTS, counts, names=classes)
        written("counts")
        save_errors(out / ERRORS, failed)
        written("errors")
    paths = {item.file_name: item.path for item in plan.items}
    write_exports(
        annotations,
        out,
        formats=write.formats,
        images_root=plan.image_root,
        image_paths=paths,
        **dict(write.export_options),
    )
    written("exports")
    return RunReport(
        out=out,
        annotations=annotations,
        counts=out / COUNTS,
        errors=out / ERRORS,
        engine=engine.engine,
        images=len(plan.items) + len(plan.failed),
        labelled=labelled,
        resumed=resumed,
        instances=instances,
        failed=failed,
        seconds=time.perf_counter() - start,
    )


def _write(
    writer: CocoWriter,
    item: Item,
    result: Result,
    classes: list[str],
    counts: dict[str, dict[str, int]],
    write: WriteOptions,
    out: Path,
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
    if item.file_name in writer:
        writer.remove(item.file_name)  # redo: this run owns the image now
    source = {SOURCE: digest(item.path)}
    # The listing position (or the ground truth's id) is the id: stable across runs. A folder
    # that changed since the last run may have it taken already; then the writer picks the
    # next free id. The masks go to the file as the RLEs the pipeline made.
    try:
        writer.add(item.file_name, w, h, result, image_id=item.image_id, **source)
    except ValueError as err:
        if f"image id {item.image_id} is already used" not in str(err):
            raise
        writer.add(item.file_name, w, h, result, **source)
    counts[item.file_name] = count_classes(result.boxes, classes)
    if write.annotate:
        from textseg.io.annotate import save_annotated

        save_annotated(out / ANNOTATED / item.file_name, item.path, result.detections)
        written("annotated")
    return len(result)


# ---------------------------------------------------------------------- resume
def digest(path: str | os.PathLike[str]) -> str:
    """``"<size in bytes>:<blake2b of the first 64 KiB>"``: cheap, and tells two different
    image files apart in practice (an edited, re-encoded or other image)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HASHED_BYTES)
    return f"{size}:{hashlib.blake2b(head, digest_size=8).hexdigest()}"


@dataclass(frozen=True)
class _Previous:
    """What ``annotations.json`` of an earlier run says: its info and image records."""

    info: Mapping[str, Any]
    images: Mapping[str, Mapping[str, Any]]


def _read_previous(path: Path, classes: list[str]) -> tuple[dict[str, dict[str, int]], _Previous]:
    """Counts and records of the images already in ``path`` (empty when new); refuses a file
    written for other classes."""
    if not path.exists():
        return {}, _Previous({}, {})
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
        categories = sorted(dataset["categories"], key=lambda c: c["id"])
        names = [str(c["name"]) for c in categories]
        by_cat = {int(c["id"]): str(c["name"]) for c in categories}
        by_image = {int(im["id"]): str(im["file_name"]) for im in dataset["images"]}
        records = {str(im["file_name"]): im for im in dataset["images"]}
        pairs = [(int(a["image_id"]), int(a["category_id"])) for a in dataset["annotations"]]
        info = dataset.get("info") or {}
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
    return counts, _Previous(info if isinstance(info, dict) else {}, records)


def _check_resumable(out: Path, plan: Plan, previous: _Previous) -> None:
    """Refuse to skip images an earlier run labelled from another folder or another file."""
    root = previous.info.get("image_root")
    if root and Path(str(root)) != plan.image_root:
        raise OutputFolderError(
            f"{out} holds the results of images under {root}, not {plan.image_root}; choose "
            f"another --out, or pass --overwrite to replace them"
        )
    for item in plan.items:
        record = previous.images.get(item.file_name)
        if record is None:
            continue
        try:
            if SOURCE in record:
                same = record[SOURCE] == digest(item.path)
            else:  # written before the digest: the size at least
                from PIL import Image

                with Image.open(item.path) as im:
                    same = (im.width, im.height) == (record["width"], record["height"])
        except (OSError, KeyError):
            continue  # unreadable now: it is skipped as done, and nothing is mixed
        if not same:
            raise OutputFolderError(
                f"{out}: {item.file_name} is not the image labelled there (its size or content "
                f"changed); choose another --out, or pass --overwrite to label again"
            )


def _remove_stale_temp_files(out: Path) -> None:
    """Delete temp files a killed run left mid-write (``atomic_write`` never renamed them)."""
    for name in (ANNOTATIONS, COUNTS, ERRORS):
        for tmp in out.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", disable=not enabled, desc="labelling")
