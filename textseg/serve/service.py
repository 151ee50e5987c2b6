""":class:`BatchingService`: one :class:`~textseg.pipelines.TextSegmenter` shared by concurrent
HTTP requests.

``segment`` requests go through a bounded queue to one worker thread, which gathers the
requests that arrive within a short window (up to ``max_batch``), groups them by vocabulary,
per-call options and image size, and runs each group through the segmenter's batched path
(``segment([...], vocab, batch_size=n)``: the images of a group are encoded by SAM and prompted
by the detector together). Images of one size only: the detector pads a batch to its largest
image, which changes its boxes, so a request's answer would depend on what it was batched with;
within one size it is the answer the image gets alone. A full queue refuses at once
(:class:`ServiceOverloaded`, the route's 503 with ``Retry-After``); a request not answered
within ``timeout_s`` gets :class:`ServiceTimeout` (504) and is dropped from the queue if it has
not started.

``click`` answers point / box / mask prompts with the segmenter's SAM core: the image is encoded
on its first click (keyed by content hash in the core's embedding cache) and later clicks on it
only decode. One lock serialises everything that touches the models.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from textseg.sam.cache import image_key
from textseg.validators import non_negative_number, positive_int, positive_number
from textseg.vocab import Vocabulary

__all__ = [
    "BatchingService",
    "ServiceClosed",
    "ServiceOverloaded",
    "ServiceTimeout",
    "build_preset",
]

#: Per-call options of ``segment`` (the batch groups requests that agree on them).
SEGMENT_OPTIONS = ("box_threshold", "min_area")


class ServiceOverloaded(RuntimeError):
    """The request queue is full; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceTimeout(TimeoutError):
    """A request was not answered within the service's timeout."""


class ServiceClosed(RuntimeError):
    """The service was closed before the request ran."""


def build_preset(name: str, *, seed: int = 0, device: str = "cpu", **options: Any) -> Any:
    """``TextSegmenter.from_preset(name, device=device, **options)`` built under ``seed`` (the
    global RNG is restored), as ``textseg segment --seed`` builds it: models without weights
    (``tiny=True``, ``pretrained=False``) come out the same in every process and replica."""
    import torch

    from textseg.pipelines import TextSegmenter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TextSegmenter.from_preset(name, device=device, **options)


@dataclass
class _Job:
    id: int
    image: np.ndarray
    vocabulary: Vocabulary
    options: dict[str, Any]
    future: Future = field(default_factory=Future)

    @property
    def group(self) -> Hashable:
        """Requests with the same key run in one batched call (see the module's docstring)."""
        options = (self.options.get(k) for k in SEGMENT_OPTIONS)
        return (self.vocabulary, *options, self.image.shape[:2])


_STOP = object()


class BatchingService:
    """A :class:`~textseg.serve.protocol.SegmentationService` around one segmenter.

    Args:
        segmenter: A :class:`textseg.pipelines.TextSegmenter`.
        name: What :meth:`describe` calls the model (e.g. the preset name).
        max_batch: Most ``segment`` requests run together.
        batch_window_ms: How long the worker waits for more requests after the first one of a
            batch (0: run what is queued now).
        queue_size: Most requests waiting; one more is refused with :class:`ServiceOverloaded`.
        timeout_s: Seconds a ``segment`` caller waits for its answer (queue time included).
        on_batch: Called in the worker with the request ids of each batch before it runs
            (instrumentation, and tests that pause the worker at a chosen point).
        info: Extra entries for :meth:`describe` (how the model was built).
    """

    def __init__(
        self,
        segmenter: Any,
        *,
        name: str | None = None,
        max_batch: int = 8,
        batch_window_ms: float = 10.0,
        queue_size: int = 64,
        timeout_s: float = 120.0,
        on_batch: Callable[[list[int]], None] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if not callable(getattr(segmenter, "segment", None)):
            raise TypeError(
                f"segmenter: expected a textseg TextSegmenter, got {type(segmenter).__name__}"
            )
        self.segmenter = segmenter
        self.name = name or repr(segmenter)
        self.max_batch = positive_int(max_batch, "max_batch")
        self.batch_window_s = non_negative_number(batch_window_ms, "batch_window_ms") / 1000.0
        self.queue_size = positive_int(queue_size, "queue_size")
        self.timeout_s = positive_number(timeout_s, "timeout_s")
        self.on_batch = on_batch
        self.info = dict(info or {})
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.queue_size)
        self._lock = threading.Lock()  # the models: one forward pass at a time
        self._ids = itertools.count(1)
        self._stats = {"requests": 0, "batches": 0, "batched_images": 0, "refused": 0}
        self._stats_lock = threading.Lock()  # request threads and the worker count together
        self._batch_seconds = 1.0  # running mean, for Retry-After
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="textseg-serve", daemon=True)
        self._worker.start()

    @classmethod
    def from_preset(
        cls,
        preset: str,
        *,
        seed: int = 0,
        device: str = "cpu",
        preset_options: dict[str, Any] | None = None,
        **service_options: Any,
    ) -> BatchingService:
        """Build the preset under ``seed`` (:func:`build_preset`) and serve it.

        Args:
            preset: A preset name (:func:`textseg.pipelines.list_presets`).
            preset_options: ``TextSegmenter.from_preset`` keyword arguments (``tiny``,
                ``pretrained``, ``dtype``, ``box_threshold``...).
            **service_options: :class:`BatchingService` keyword arguments.
        """
        options = dict(preset_options or {})
        segmenter = build_preset(preset, seed=seed, device=device, **options)
        info = {"preset": preset, "device": device, "seed": seed}
        info |= {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool))}
        return cls(segmenter, name=preset, info=info, **service_options)

    # ------------------------------------------------------------------ segment
    def segment(self, image: np.ndarray, vocabulary: Vocabulary, **options: Any) -> Any:
        """Segment one image (batched with concurrent calls); blocks until answered.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            vocabulary: What to look for.
            **options: ``box_threshold`` (float in [0, 1]) and ``min_area`` (pixels), as
                ``TextSegmenter.segment`` takes them.

        Returns:
            A :class:`textseg.pipelines.Result`.

        Raises:
            ServiceOverloaded: The queue is full (nothing was queued).
            ServiceTimeout: No answer within ``timeout_s``.
            ValueError: Unknown options; whatever the segmenter raises for this image.
        """
        future = self.submit(image, vocabulary, **options)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()  # still queued: the worker skips it
            raise ServiceTimeout(
                f"segment: no answer within {self.timeout_s:g} s (the service is busy); "
                f"try again later or raise the timeout"
            ) from None
        except CancelledError:
            raise ServiceClosed("segment: the service closed before the request ran") from None

    def submit(self, image: np.ndarray, vocabulary: Vocabulary, **options: Any) -> Future:
        """Queue one ``segment`` request and return its future at once (see :meth:`segment`)."""
        unknown = sorted(set(options) - set(SEGMENT_OPTIONS))
        if unknown:
            raise ValueError(
                f"segment: unknown options {unknown}; expected some of {list(SEGMENT_OPTIONS)}"
            )
        if not isinstance(vocabulary, Vocabulary):
            raise TypeError(
                f"vocabulary: expected a textseg.Vocabulary, got {type(vocabulary).__name__}"
            )
        if self._closed:
            raise ServiceClosed("segment: the service is closed")
        job = _Job(next(self._ids), image, vocabulary, dict(options))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._count(refused=1)
            raise ServiceOverloaded(
                f"segment: the queue is full ({self.queue_size} requests waiting); "
                f"retry after {self.retry_after()} s",
                self.retry_after(),
            ) from None
        self._count(requests=1)
        return job.future

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for key, delta in deltas.items():
                self._stats[key] += delta

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1)."""
        batches = max(1.0, self._queue.qsize() / self.max_batch)
        return max(1, int(np.ceil(batches * self._batch_seconds)))

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not yet taken by the worker)."""
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if jobs:
                self._run_batch(jobs)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        batch = [first]
        deadline = time.monotonic() + self.batch_window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    item = self._queue.get(timeout=remaining)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run_batch(self, jobs: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            if self.on_batch is not None:
                self.on_batch([job.id for job in jobs])
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.group, []).append(job)
            for group in groups.values():
                self._run_group(group)
        except Exception as err:  # the hook failed: answer every request, keep serving
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
        seconds = time.perf_counter() - start
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self._count(batches=1, batched_images=len(jobs))

    def _run_group(self, jobs: list[_Job]) -> None:
        """One batched call for requests that share a vocabulary and options; if it fails,
        each request runs alone so one bad image fails only its own request."""
        vocab, options = jobs[0].vocabulary, jobs[0].options
        try:
            with self._lock:
                results = self.segmenter.segment(
                    [job.image for job in jobs], vocab, batch_size=len(jobs), **options
                )
        except Exception:
            if len(jobs) == 1:
                raise
            for job in jobs:
                try:
                    with self._lock:
                        job.future.set_result(self.segmenter.segment(job.image, vocab, **options))
                except Exception as err:
                    job.future.set_exception(err)
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)

    # ------------------------------------------------------------------ click
    def _sam(self) -> Any:
        sam = getattr(self.segmenter, "sam", None)
        if sam is None:
            raise ValueError(
                f"click: the {self.name} model has no SAM core to answer clicks; serve a "
                f"preset with SAM (e.g. grounded-sam, fast)"
            )
        return sam

    def click(
        self,
        image: np.ndarray,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = False,
    ) -> sv.Detections:
        """Masks for one prompt on ``image``: SAM's decoder on the cached embedding.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            points: ``(P, 2)`` XY absolute pixels.
            point_labels: ``(P,)`` 1 foreground, 0 background.
            box: ``(4,)`` XYXY absolute pixels.
            mask_input: ``(256, 256)`` low-res logits of an earlier answer
                (``data["low_res_logits"]``).
            multimask: Three candidate masks (best predicted IoU first) instead of one.

        Returns:
            ``sv.Detections`` with ``mask`` (M, H, W) bool, ``xyxy``, ``confidence`` (SAM's
            predicted IoU) and ``data["low_res_logits"]`` (M, 256, 256) float32; M = 1 or 3;
            ``metadata["cached"]``: whether the image's embedding was already cached.
        """
        sam = self._sam()
        with self._lock:
            # A cached image is hashed once per click: the decode takes the embedding found.
            key = image_key(image, sam.model_id, sam.image_size)
            cached = key in sam.cache
            dets = sam.predict(
                sam.cache.get(key) if cached else image,
                points=None if points is None else np.asarray(points, np.float32)[None],
                point_labels=None if point_labels is None else np.asarray(point_labels)[None],
                boxes=None if box is None else np.asarray(box, np.float32).reshape(1, 4),
                mask_inputs=None if mask_input is None else np.asarray(mask_input)[None],
                multimask_output=bool(multimask),
                return_all=bool(multimask),
                return_logits=True,
            )
        order = np.argsort(-np.asarray(dets.confidence), kind="stable")
        dets = dets[order]
        dets.metadata["cached"] = cached
        return dets

    # ------------------------------------------------------------------ the rest
    def describe(self) -> dict[str, Any]:
        """What is served and how it is doing (``GET /health``, ``GET /models``)."""
        sam = getattr(self.segmenter, "sam", None)
        out: dict[str, Any] = {
            "model": self.name,
            "pipeline": repr(self.segmenter),
            "sam": getattr(sam, "name", None),
            "device": str(getattr(sam, "device", "cpu")),
            "max_batch": self.max_batch,
            "batch_window_ms": self.batch_window_s * 1000.0,
            "queue_size": self.queue_size,
            "queue_depth": self.queue_depth,
            "timeout_s": self.timeout_s,
        }
        with self._stats_lock:
            out.update(self._stats)
        if sam is not None:
            stats = sam.cache.stats()
            out["embedding_cache"] = {
                "entries": stats.entries,
                "hits": stats.hits,
                "misses": stats.misses,
                "bytes": stats.nbytes,
            }
        return {**self.info, **out}  # measured values win over how it was built

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker after the batch it is running; queued requests are cancelled."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job.future.cancel()
        self._queue.put(_STOP)
        self._worker.join(timeout)

    def __enter__(self) -> BatchingService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
