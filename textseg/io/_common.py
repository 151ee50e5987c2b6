"""Checks and file helpers shared by the exporters: one place that validates masks and
detections, writes files atomically and refuses an unwritable output folder early."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg.fields import CLASS_NAME

__all__ = [
    "atomic_write",
    "check_detections",
    "check_mask2d",
    "check_masks",
    "class_indices",
    "iter_masks",
    "json_value",
    "prepare_output_dir",
]


def check_masks(masks: Any, *, what: str = "masks") -> np.ndarray:
    """Return ``masks`` if it is an ``(N, H, W)`` bool numpy array, else raise.

    Raises:
        TypeError: Not a numpy array, or not bool.
        ValueError: Not 3-D.
    """
    if not isinstance(masks, np.ndarray):
        raise TypeError(
            f"{what}: expected a numpy array (N, H, W) bool, got {type(masks).__name__}"
        )
    if masks.ndim != 3:
        hint = "; add the instance axis with mask[None]" if masks.ndim == 2 else ""
        raise ValueError(f"{what}: expected shape (N, H, W), got {masks.shape}{hint}")
    if masks.dtype != np.bool_:
        raise TypeError(
            f"{what}: expected dtype bool, got {masks.dtype}; threshold it first, "
            f"e.g. masks > 0.5 for probabilities or masks > 0 for logits/0-255 images"
        )
    return masks


def check_mask2d(mask: Any, *, what: str = "mask") -> np.ndarray:
    """Return ``mask`` if it is an ``(H, W)`` bool numpy array, else raise like
    :func:`check_masks`."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array (H, W) bool, got {type(mask).__name__}")
    if mask.ndim != 2:
        hint = "; pass one mask at a time, e.g. masks[i]" if mask.ndim == 3 else ""
        raise ValueError(f"{what}: expected shape (H, W), got {mask.shape}{hint}")
    if mask.dtype != np.bool_:
        raise TypeError(
            f"{what}: expected dtype bool, got {mask.dtype}; threshold it first, e.g. mask > 0"
        )
    return mask


def iter_masks(mask: Any, n: int, height: int, width: int, *, what: str) -> Iterator[np.ndarray]:
    """Yield the ``n`` instance masks of ``Detections.mask`` one ``(H, W)`` bool array at a time.

    Accepts a dense ``(N, H, W)`` bool array or a ``supervision.CompactMask`` (decoded one
    instance at a time, so memory stays bounded).

    Raises:
        TypeError / ValueError: Wrong type, dtype, count or image size.
    """
    compact = getattr(sv, "CompactMask", None)
    if compact is not None and isinstance(mask, compact):
        shape = tuple(mask.shape)
    else:
        mask = check_masks(mask, what=what)
        shape = mask.shape
    if shape != (n, height, width):
        raise ValueError(
            f"{what}: expected masks of shape ({n}, {height}, {width}) (N instances of the "
            f"{width}x{height} image), got {shape}; pass the size of the image the masks belong to"
        )
    for i in range(n):
        yield np.asarray(mask[i], dtype=bool)


def check_detections(detections: Any, *, what: str) -> sv.Detections:
    """Return ``detections`` if it is a ``supervision.Detections``, else raise TypeError."""
    if not isinstance(detections, sv.Detections):
        raise TypeError(f"{what}: expected supervision.Detections, got {type(detections).__name__}")
    return detections


def class_indices(detections: sv.Detections, classes: Sequence[str], *, what: str) -> np.ndarray:
    """The ``(N,)`` int64 class index of every detection into ``classes``.

    ``class_id`` is the truth; when it is None, ``data["class_name"]`` is looked up in
    ``classes``. When both are present they must agree (a mismatch means the detections were
    made with another vocabulary).

    Raises:
        ValueError: A class id out of range, an unknown or inconsistent class name, or neither
            given.
    """
    n = len(detections)
    names = detections.data.get(CLASS_NAME)
    if detections.class_id is not None:
        ids = np.asarray(detections.class_id).astype(np.int64, copy=False).reshape(-1)
        bad = np.flatnonzero((ids < 0) | (ids >= len(classes)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{what}: class_id {int(ids[i])} of detection {i} is out of range for "
                f"{len(classes)} classes {list(classes)[:10]}; pass the vocabulary the "
                f"detections were made with"
            )
        if names is not None:
            for i, (k, name) in enumerate(zip(ids, names)):
                if str(name) != classes[k]:
                    raise ValueError(
                        f"{what}: detection {i} has class_id {int(k)} ({classes[k]!r} in the "
                        f"given classes) but class_name {str(name)!r}; pass the vocabulary the "
                        f"detections were made with"
                    )
        return ids
    if names is not None:
        lookup = {name: k for k, name in enumerate(classes)}
        ids = np.empty(n, dtype=np.int64)
        for i, name in enumerate(names):
            if str(name) not in lookup:
                raise ValueError(
                    f"{what}: class_name {str(name)!r} of detection {i} is not one of the "
                    f"classes {list(classes)}; add it to the classes"
                )
            ids[i] = lookup[str(name)]
        return ids
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    raise ValueError(
        f"{what}: detections have neither class_id nor data['class_name']; set one of them"
    )


def json_value(value: Any, *, what: str) -> Any:
    """Convert one per-instance ``data`` value (numpy scalar/array, str, number) to plain JSON.

    Raises:
        TypeError: The value cannot be written as JSON.
    """
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_value(v, what=what) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v, what=what) for k, v in value.items()}
    raise TypeError(
        f"{what}: cannot write a {type(value).__name__} as JSON; store numbers, strings or "
        f"arrays in Detections.data"
    )


def prepare_output_dir(directory: str | os.PathLike[str], *, what: str) -> Path:
    """Create ``directory`` (with parents) and check that a file can be written in it.

    Done when a writer is created, so that a labelling job fails in its first second rather
    than after hours of work.

    Raises:
        NotADirectoryError: A file is in the way.
        PermissionError: The folder cannot be created or written.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(
            f"{what}: cannot use {directory} as output folder: it or a parent is a file; "
            f"choose another output path"
        ) from None
    except PermissionError:
        raise PermissionError(
            f"{what}: cannot create output folder {directory}: permission denied; choose a "
            f"writable output path"
        ) from None
    try:
        # os.access is unreliable (root, network file systems): try the real thing.
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise PermissionError(
            f"{what}: cannot write in output folder {directory} ({err.strerror}); choose a "
            f"writable output path"
        ) from None
    return directory


def place_file(source: Path, target: Path, *, link: bool) -> None:
    """Copy ``source`` to ``target``, or hard-link it when asked and possible (a copy is made
    across file systems or where links are not allowed)."""
    target.unlink(missing_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another file system, or links not allowed: a copy does the same job
    shutil.copyfile(source, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and
    ``os.replace``, so readers (and a resumed job) never see a half-written file."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; an output file gets the usual mode (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_errors(path: str | os.PathLike[str], failed: Mapping[str, str]) -> None:
    """``errors.csv`` (``file,error``, one row per item that failed), written atomically: the
    one errors file of every command that skips bad items."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "error"])
    writer.writerows(failed.items())
    atomic_write(path, buffer.getvalue())
