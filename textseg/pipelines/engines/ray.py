"""The Ray engine: a Ray Data actor pool (``pip install "textseg[ray]"``).

Each actor builds the segmenter once (one model copy per actor, ``num_gpus`` GPUs each when
the cluster has GPUs); results stream back to the driver in listing order, so the runner
writes the same files as with the local engine. An error while building or running the
segmenter in an actor is raised in the driver as the same exception the local engine raises
(the actor's traceback chained to it).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from textseg._image import load_image
from textseg.pipelines.engines.base import Item, Outcome, SegmenterSpec, segment_each
from textseg.pipelines.text_segmenter import Result, TextSegmenter
from textseg.vocab import Vocabulary

__all__ = ["RayLabeler", "check_fits", "import_ray", "in_order", "ray_outcomes"]


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


class RayLabeler:
    """Ray Data UDF: one segmenter per actor; a batch of paths in, pickled results out.

    A failure to build the segmenter is not left to Ray, which would report it wrapped in its
    own errors (``ActorDiedError``, ``RayTaskError``...) after its retries: it is sent back in
    the ``fatal`` column and :func:`in_order` raises it again in the driver, the same
    exception the local engine raises. A failure on one image is that image's error, as in the
    local engine.
    """

    def __init__(self, spec: SegmenterSpec, vocab: Vocabulary) -> None:
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
                for k, outcome in segment_each(self.segmenter, ready, self.vocab):
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


def import_ray() -> Any:
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


def ray_outcomes(
    items: Sequence[Item],
    spec: SegmenterSpec,
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
    ray = import_ray()
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
        check_fits(resources, num_cpus, num_gpus)
    spec = spec.on_device(num_gpus)
    rows = [{"index": k, "path": item.path} for k, item in enumerate(items)]
    per_block = batch_size * math.ceil(len(rows) / (batch_size * _MAX_BLOCKS))
    dataset = ray.data.from_items(
        rows, override_num_blocks=math.ceil(len(rows) / per_block)
    ).map_batches(
        RayLabeler,
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
        yield from in_order(items, dataset)
    except ray.exceptions.RayError as err:
        # Ray's own failures (an actor killed, out of memory, a lost node): one line for the
        # CLI, the details chained.
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RuntimeError(
            f"the Ray run failed ({type(err).__name__}: {first}); the images labelled so far "
            f"are saved, run again to resume"
        ) from err


def check_fits(resources: Mapping[str, float], num_cpus: float, num_gpus: float) -> None:
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


def in_order(items: Sequence[Item], dataset: Any) -> Iterator[Outcome]:
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
