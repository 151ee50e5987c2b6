"""Frames from a video file, a folder of images or arrays, decoded lazily, one at a time.

:func:`open_video` returns a :class:`VideoSource`: iterating it yields :class:`Frame` objects
in order, each decoded only when it is reached, so a one-hour video is never held in memory. A
frame that cannot be decoded (a corrupt packet in the middle of a file, an unreadable image in a
folder) is yielded as a :class:`Frame` with ``image`` None and ``error`` saying why, and the
frames after it are decoded as usual; callers report it and go on.

Video files (mp4, avi, webm, mkv, mov, ...) are read with PyAV (``pip install
'textseg[video]'``); folders of frames and arrays need nothing beyond textseg's own
dependencies.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from textseg._image import IMAGE_SUFFIXES, load_image, to_rgb_uint8

__all__ = ["VIDEO_SUFFIXES", "Frame", "VideoInput", "VideoSource", "open_video"]

#: File suffixes read as videos (any other file is refused with a message naming these).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)

#: What :func:`open_video` accepts: a video file, a folder of frames, or frames as arrays.
VideoInput = Union[str, os.PathLike, Sequence[np.ndarray], Iterable[np.ndarray], "VideoSource"]


@dataclass(frozen=True)
class Frame:
    """One frame of a video.

    Attributes:
        index: 0-based frame number in the source (the first frame of the file or folder is
            0, whatever ``start`` was).
        image: ``(H, W, 3)`` uint8 RGB, or None when the frame could not be decoded.
        time: Seconds from the start of the source (``index / fps``), None when the source
            has no frame rate (arrays, folders without ``fps=``).
        error: Why the frame could not be decoded (one line), None for a good frame.
        fatal: The source cannot go on: this is its last frame (e.g. the demuxer failed on a
            corrupt packet); the frames before it are good.
    """

    index: int
    image: np.ndarray | None
    time: float | None = None
    error: str | None = None
    fatal: bool = False


class VideoSource:
    """Frames of one video, decoded lazily (see :func:`open_video`).

    Attributes:
        name: The path, or ``"frames"`` for arrays.
        fps: Frames per second (None when unknown).
        num_frames: Frames the source says it has after ``start``/``end`` (None when unknown;
            a container's count can be an estimate).
        start: First frame index yielded.
        end: Index after the last frame yielded (None: to the end).
    """

    def __init__(
        self,
        name: str,
        frames: Any,
        *,
        fps: float | None,
        num_frames: int | None,
        start: int,
        end: int | None,
    ) -> None:
        self.name = name
        self._frames = frames
        self.fps = fps
        self.start = start
        self.end = end
        if num_frames is not None:
            stop = num_frames if end is None else min(end, num_frames)
            num_frames = max(0, stop - start)
        self.num_frames = num_frames

    def __iter__(self) -> Iterator[Frame]:
        frames = self._frames()
        last = self.start - 1
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except Exception as err:
                # A demuxer that fails on a corrupt packet (PyAV reports some as a false
                # "[Errno 12] Cannot allocate memory") cannot be resumed: the frames so far
                # stay good, the source ends with one fatal frame that says why.
                index = last + 1
                why = _reason(err)
                yield Frame(
                    index,
                    None,
                    _time(index, self.fps),
                    f"frame {index}: the video cannot be read past frame {last} ({why})",
                    fatal=True,
                )
                return
            if frame.index < self.start:
                continue
            if self.end is not None and frame.index >= self.end:
                return
            last = max(last, frame.index)
            yield frame

    def __repr__(self) -> str:
        return (
            f"VideoSource({self.name!r}, fps={self.fps}, num_frames={self.num_frames}, "
            f"start={self.start}, end={self.end})"
        )


def _check_range(start: int, end: int | None) -> None:
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start: expected a frame index >= 0, got {start!r}")
    if end is not None and (
        isinstance(end, bool) or not isinstance(end, (int, np.integer)) or end <= start
    ):
        raise ValueError(f"end: expected a frame index > start ({start}), got {end!r}")


def open_video(
    source: VideoInput,
    *,
    start: int = 0,
    end: int | None = None,
    fps: float | None = None,
) -> VideoSource:
    """Open a video for lazy, frame-by-frame reading.

    Args:
        source: A video file (mp4, avi, webm, ...; PyAV), a folder of frames (image files in
            natural order: ``frame2.jpg`` before ``frame10.jpg``), a sequence or iterator of
            ``(H, W, 3)`` uint8 RGB arrays, or a :class:`VideoSource` (returned as it is when
            no range is given).
        start: First frame index to yield.
        end: Index after the last frame to yield (None: to the end).
        fps: Frame rate of a folder or of arrays (a file's own rate is read from it).

    Returns:
        The source; nothing is decoded until it is iterated.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: A file that is not a video or cannot be opened, a folder without images,
            an empty sequence, a bad ``start``/``end``/``fps``.
        TypeError: ``source`` is none of the accepted types.
        ImportError: A video file without PyAV installed (the message says how to install).
    """
    _check_range(start, end)
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps: expected a positive number, got {fps!r}")
    if isinstance(source, VideoSource):
        if start == 0 and end is None:
            return source
        raise ValueError("source: already a VideoSource; give start/end to open_video once")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"video not found: {path}")
        if path.is_dir():
            return _folder(path, start, end, fps)
        return _video_file(path, start, end)
    if isinstance(source, np.ndarray):
        if source.ndim != 4:
            raise ValueError(
                f"source: expected frames as a (T, H, W, 3) array or a list of (H, W, 3) "
                f"arrays, got an array of shape {source.shape}"
            )
        source = list(source)
    if isinstance(source, Sequence):
        if len(source) == 0:
            raise ValueError("source: no frames (an empty list); give at least one frame")
        return _arrays(source, len(source), start, end, fps)
    if isinstance(source, Iterable):
        return _arrays(source, None, start, end, fps)
    raise TypeError(
        f"source: expected a video file, a folder of frames or a list of (H, W, 3) uint8 "
        f"arrays, got {type(source).__name__}"
    )


def _time(index: int, fps: float | None) -> float | None:
    return None if fps is None else index / fps


def _arrays(
    frames: Iterable[np.ndarray], count: int | None, start: int, end: int | None, fps: float | None
) -> VideoSource:
    def generate() -> Iterator[Frame]:
        for index, array in enumerate(frames):
            if end is not None and index >= end:
                return
            if index < start:
                continue
            try:
                image = to_rgb_uint8(array, name=f"frames[{index}]")
            except (TypeError, ValueError) as err:
                yield Frame(index, None, _time(index, fps), str(err))
                continue
            yield Frame(index, image, _time(index, fps))

    return VideoSource("frames", generate, fps=fps, num_frames=count, start=start, end=end)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _folder(path: Path, start: int, end: int | None, fps: float | None) -> VideoSource:
    files = sorted(
        (
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ),
        key=_natural_key,
    )
    if not files:
        raise ValueError(
            f"{path}: no frames (no {', '.join(sorted(IMAGE_SUFFIXES))} files in the folder)"
        )

    def generate() -> Iterator[Frame]:
        stop = len(files) if end is None else min(end, len(files))
        for index in range(start, stop):
            try:
                image = load_image(files[index])
            except (OSError, ValueError) as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                yield Frame(index, None, _time(index, fps), f"{files[index].name}: {reason}")
                continue
            yield Frame(index, image, _time(index, fps))

    return VideoSource(str(path), generate, fps=fps, num_frames=len(files), start=start, end=end)


def _import_av() -> Any:
    try:
        import av
    except ImportError as err:
        raise ImportError(
            "reading video files needs PyAV: pip install 'textseg[video]' (or pip install av); "
            "a folder of frames works without it"
        ) from err
    return av


def _video_file(path: Path, start: int, end: int | None) -> VideoSource:
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"{path}: not a video file (expected one of {', '.join(sorted(VIDEO_SUFFIXES))}, "
            f"or a folder of frames)"
        )
    av = _import_av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"cannot read video {path}: {_reason(err)}") from None
    try:
        if not container.streams.video:
            raise ValueError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        num_frames = int(stream.frames) if stream.frames else None
        if num_frames is None and fps and stream.duration and stream.time_base:
            num_frames = round(float(stream.duration * stream.time_base) * fps)
        if num_frames is None and fps and container.duration:
            # WebM/Matroska store no frame count: estimate it from the container's duration.
            num_frames = round(container.duration / 1_000_000 * fps)
    finally:
        container.close()

    def generate() -> Iterator[Frame]:
        yield from _decode(av, path, start, end)

    return VideoSource(str(path), generate, fps=fps, num_frames=num_frames, start=start, end=end)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text


def _decode(av: Any, path: Path, start: int, end: int | None) -> Iterator[Frame]:
    """Frames of ``path`` from ``start``; a packet that fails to decode is one error frame."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"cannot read video {path}: {_reason(err)}") from None
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        base = float(stream.time_base) if stream.time_base else None
        first = stream.start_time or 0

        def index_of(pts: int | None, fallback: int) -> int:
            if pts is None or fps is None or base is None:
                return fallback
            return round((pts - first) * base * fps)

        if start > 0 and fps and base:
            # Seek to the keyframe before ``start``; frames before it are decoded and dropped.
            container.seek(first + int(start / fps / base), stream=stream, backward=True)
        last = start - 1 if start > 0 else -1
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as err:
                if packet.size == 0:
                    continue
                index = index_of(packet.pts, last + 1)
                last = max(last, index)
                if index >= start and (end is None or index < end):
                    yield Frame(index, None, _time(index, fps), f"frame {index}: {_reason(err)}")
                continue
            for frame in decoded:
                index = index_of(frame.pts, last + 1)
                last = max(last, index)
                if index < start:
                    continue
                if end is not None and index >= end:
                    return
                yield Frame(index, frame.to_ndarray(format="rgb24"), _time(index, fps))
