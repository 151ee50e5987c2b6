"""The output-folder contract every writing command follows: who wrote a folder, what it owns.

A command (``segment``, ``label``, ``track``, ``train``, ``train-text-prompt``, ``eval``, the
app) claims its ``--out`` before writing anything::

    with claim_output(out, "segment", owned=SEGMENT_OWNED, mode="new") as folder:
        ...  # write the files; folder.update(complete=True) at the end

The claim:

1. takes an exclusive lock on ``OUT/.textseg.lock`` (``flock``), so two runs never write one
   folder at the same time: the second is refused with one line (or waits, ``wait=True``),
   and nothing either of them wrote is lost. The lock dies with the process, also on SIGKILL;
2. reads ``OUT/.textseg.json``, the manifest: the command that owns the folder and the files
   and folders it owns. A folder owned by another command is refused with one line, never
   overwritten. A folder without a manifest that holds none of the command's files (a new
   folder, or one with the user's own files) is claimed; one that holds some of them was
   written by a textseg from before the manifest and is taken as the command's own;
3. applies the mode: ``"new"`` refuses a folder that already holds the command's results
   (pass ``--overwrite`` or ``--append``), ``"overwrite"`` deletes what the manifest says the
   command owns, ``"append"`` / ``"resume"`` keep it;
4. writes the manifest (atomically) before any other file, so a run killed at any point
   leaves a folder the same command can resume and other commands refuse.

Only the names in ``owned`` (and the manifest's own list) are ever deleted: a user's file in
the folder is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from textseg.io._common import atomic_write, prepare_output_dir

__all__ = [
    "KILL_ENV",
    "LOCK",
    "MANIFEST",
    "FolderBusyError",
    "OutputFolder",
    "OutputFolderError",
    "claim_output",
    "read_manifest",
    "written",
]

MANIFEST = ".textseg.json"
LOCK = ".textseg.lock"
#: Test-only: ``NAME`` or ``NAME#N`` (``NAME:N``) ends the process after the N-th (default the
#: first) write called ``NAME`` (see :func:`written`).
KILL_ENV = "TEXTSEG_TEST_KILL_AFTER"

_writes: dict[str, int] = {}


def written(name: str) -> None:
    """Mark the write ``name`` of a run as complete on disk. Every command that writes several
    files calls this after each write (``"manifest"``, ``"annotations"``, ``"checkpoint"``...);
    it does nothing unless :data:`KILL_ENV` names this write, and then the process ends at once
    (``os._exit(137)``, no clean-up), as a SIGKILL would end it: tests stop a run between any
    two of its writes deterministically, without racing a clock, and check that it resumes."""
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    _writes[name] = count = _writes.get(name, 0) + 1
    want, _, nth = target.replace(":", "#").partition("#")
    if want == name and count == int(nth or 1):
        os._exit(137)


Mode = Literal["new", "overwrite", "append", "resume"]
_MODES = ("new", "overwrite", "append", "resume")


class OutputFolderError(ValueError):
    """The output folder belongs to another command, or already holds results and the mode
    says neither how to replace nor how to extend them."""


class FolderBusyError(OutputFolderError):
    """Another textseg run holds the output folder's lock."""


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``out`` (``{"command", "owned", ...}``), or None when it has none.

    Raises:
        OutputFolderError: The manifest exists but is not one textseg wrote.
    """
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("command"), str):
            raise ValueError("no command")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise OutputFolderError(
            f"{path} is not a textseg manifest ({err}); choose another output folder or delete "
            f"the file"
        ) from None
    return data


@dataclass
class OutputFolder:
    """A claimed output folder (see the module docstring); release it with :meth:`close` or
    by leaving the ``with`` block of :func:`claim_output`.

    Attributes:
        path: The folder.
        command: The command that owns it (``"segment"``, ``"track"``...).
        owned: The files and folders (names relative to ``path``) it owns.
        fresh: Whether the folder held none of the command's results when claimed (new,
            emptied by ``"overwrite"``, or never written).
        manifest: The manifest as written.
    """

    path: Path
    command: str
    owned: tuple[str, ...]
    fresh: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    _lock_fd: int | None = None

    def update(self, **fields: Any) -> None:
        """Record ``fields`` in the manifest (e.g. ``complete=True``, ``formats=[...]``,
        ``models={...}``), atomically."""
        self.manifest.update(fields)
        self.manifest["updated"] = _now()
        _write_manifest(self.path, self.manifest)

    def own(self, names: Iterable[str]) -> None:
        """Add ``names`` to what the folder's command owns (recorded in the manifest)."""
        added = [n for n in names if n not in self.owned]
        if added:
            self.owned = (*self.owned, *added)
            self.update(owned=sorted(self.owned))

    def close(self) -> None:
        """Release the lock (the manifest stays)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def claim_output(
    out: str | os.PathLike[str],
    command: str,
    *,
    owned: Iterable[str],
    mode: Mode = "new",
    wait: bool = False,
    hint: str | None = None,
    info: dict[str, Any] | None = None,
) -> OutputFolder:
    """Claim ``out`` for ``command`` (see the module docstring); use it as a context manager.

    Args:
        out: The output folder (created with its parents).
        command: The command's name as the user types it (``"segment"``, ``"train"``).
        owned: Names (relative to ``out``) of the files and folders the command writes.
        mode: ``"new"``, ``"overwrite"``, ``"append"`` or ``"resume"``.
        wait: Wait for another run's lock instead of refusing.
        hint: How to continue or replace a folder that holds results, in the command's own
            options (default: ``--overwrite`` / ``--append``).
        info: Extra fields recorded in the manifest.

    Returns:
        The claimed :class:`OutputFolder` (locked until closed).

    Raises:
        OutputFolderError: Another command's folder, or results without a mode that allows
            them.
        FolderBusyError: Another run holds the lock (``wait=False``).
        NotADirectoryError / PermissionError: ``out`` cannot be a writable folder.
    """
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {', '.join(_MODES)}, got {mode!r}")
    path = prepare_output_dir(out, what=f"textseg {command}")
    owned = tuple(dict.fromkeys(owned))
    lock_fd = _lock(path, command, wait)
    try:
        manifest = read_manifest(path)
        if manifest is not None and manifest["command"] != command:
            raise OutputFolderError(
                f"{path} holds the output of `textseg {manifest['command']}` (see "
                f"{path / MANIFEST}); `textseg {command}` will not write into it: choose another "
                f"--out"
            )
        previous = tuple(manifest.get("owned", ())) if manifest else ()
        present = [n for n in dict.fromkeys((*owned, *previous)) if (path / n).exists()]
        if present and mode == "new":
            how = hint or "pass --overwrite to replace them or --append to add to them"
            raise OutputFolderError(
                f"{path} already holds results of `textseg {command}` ({', '.join(present[:3])}"
                f"{'...' if len(present) > 3 else ''}); {how}, or choose another --out"
            )
        if mode == "overwrite":
            for name in present:
                _remove(path / name)
            present = []
        record = {
            "command": command,
            "owned": sorted(set(owned) | set(previous)),
            "created": (manifest or {}).get("created", _now()),
            "updated": _now(),
            "complete": False,
        }
        record.update(info or {})
        if manifest is not None and mode in ("append", "resume"):
            record = {**manifest, **record}
        _write_manifest(path, record)
        return OutputFolder(
            path=path,
            command=command,
            owned=tuple(record["owned"]),
            fresh=not present,
            manifest=record,
            _lock_fd=lock_fd,
        )
    except BaseException:
        os.close(lock_fd)
        raise


@contextlib.contextmanager
def locked(out: str | os.PathLike[str], command: str, *, wait: bool = True) -> Iterator[None]:
    """Hold ``out``'s lock without claiming it (e.g. to read a folder another run may write)."""
    fd = _lock(Path(out), command, wait)
    try:
        yield
    finally:
        os.close(fd)


def _lock(path: Path, command: str, wait: bool) -> int:
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderBusyError(
                f"{path} is being written by another textseg run; wait for it to finish or "
                f"choose another --out for `textseg {command}`"
            ) from None
        raise
    return fd


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    atomic_write(path / MANIFEST, json.dumps(manifest, indent=1, allow_nan=False) + "\n")


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
