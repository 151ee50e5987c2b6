"""Writing tracks: ``tracks.json`` (COCO video style), ``counts.csv``, ``annotated.mp4``, MOT text.

:class:`TrackWriter` takes the tracker's :class:`~textseg.video.FrameResult` objects one at a
time and streams what it can to disk, so memory stays flat however long the video is; the files
are completed (atomically) by :meth:`TrackWriter.close`.

- ``tracks.json``: one COCO-style file for the video, readable by ``pycocotools.coco.COCO``:
  ``videos`` (one entry: name, size, fps, frames, skipped frames), ``images`` (one per tracked
  frame, with ``frame_index`` and ``video_id``), ``categories``, ``annotations`` (one per
  instance per frame: ``track_id``, compressed-RLE ``segmentation``, ``bbox`` XYWH, ``area``,
  ``score``, ``object_score``) and ``tracks`` (one per track: category, first and last frame,
  number of frames). A track has one class, the majority of its votes at the end of the video,
  in every annotation. Written with ``allow_nan=False``: a value not measured is absent.
- ``counts.csv``: ``scope,frame,time_s,class,count``; first the ``distinct`` rows (distinct
  tracks per class over the video; ``frame`` and ``time_s`` empty), then one ``frame`` row per
  frame and class (instances visible in that frame).
- ``annotated.mp4``: the frames with each instance's mask, box and ``#<track id> <class>``,
  coloured by track.
- ``mot.txt`` (optional): MOTChallenge results, ``frame,id,bb_left,bb_top,bb_width,bb_height,
  conf,-1,-1,-1`` with 1-based frame numbers.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg.io.rle import encode_mask
from textseg.vocab import UNKNOWN

__all__ = ["TrackWriter", "VideoWriter", "load_tracks"]

#: Codec per container suffix (PyAV names); the first one PyAV has is used.
_CODECS = {
    ".mp4": ("libx264", "h264", "mpeg4"),
    ".m4v": ("libx264", "h264", "mpeg4"),
    ".mov": ("libx264", "h264", "mpeg4"),
    ".mkv": ("libx264", "h264", "mpeg4"),
    ".avi": ("mjpeg",),
    ".webm": ("libvpx-vp9", "libvpx"),
}


class VideoWriter:
    """Write ``(H, W, 3)`` uint8 RGB frames to a video file with PyAV.

    Odd frame sizes are padded by one pixel (4:2:0 video needs even sizes).

    Args:
        path: ``.mp4`` (H.264, else MPEG-4 part 2), ``.avi`` (Motion JPEG), ``.webm`` (VP9),
            ``.mkv``, ``.mov``.
        fps: Frame rate.
        codec: A PyAV codec name instead of the default for the suffix.

    Raises:
        ValueError: An unknown suffix or a non-positive frame rate.
        ImportError: PyAV is not installed.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fps: float, codec: str | None = None
    ) -> None:
        from fractions import Fraction

        from textseg.video.sources import _import_av

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if codec is None and suffix not in _CODECS:
            raise ValueError(
                f"{self.path}: cannot write {suffix or 'files without a suffix'}; use one of "
                f"{', '.join(sorted(_CODECS))}"
            )
        if not fps or fps <= 0:
            raise ValueError(f"fps: expected a positive frame rate, got {fps!r}")
        self._av = _import_av()
        names = (codec,) if codec else _CODECS[suffix]
        available = self._av.codecs_available
        self.codec = next((c for c in names if c in available), names[-1])
        self.fps = Fraction(fps).limit_denominator(1001)
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = self._av.open(str(self.path), "w")
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuvj420p" if self.codec == "mjpeg" else "yuv420p"
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame (every frame the size of the first)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        h, w = image.shape[:2]
        if self._container is None:
            self._open(h, w)
        if (h + h % 2, w + w % 2) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"image: {h}x{w}, but the video is {self._stream.height}x{self._stream.width}"
            )
        if h % 2 or w % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _annotate(image: np.ndarray, detections: sv.Detections) -> np.ndarray:
    """Masks, boxes and ``#id class`` labels, coloured by track."""
    if len(detections) == 0:
        return image
    h, w = image.shape[:2]
    scene = np.ascontiguousarray(image[:, :, ::-1])  # supervision draws BGR
    lookup = sv.ColorLookup.TRACK
    scene = sv.MaskAnnotator(opacity=0.45, color_lookup=lookup).annotate(scene, detections)
    scene = sv.BoxAnnotator(
        thickness=sv.calculate_optimal_line_thickness((w, h)), color_lookup=lookup
    ).annotate(scene, detections)
    labels = [
        f"#{int(i)} {name}" for i, name in zip(detections.tracker_id, detections.data["class_name"])
    ]
    scene = sv.LabelAnnotator(
        color_lookup=lookup,
        text_scale=sv.calculate_optimal_text_scale((w, h)),
        smart_position=True,
    ).annotate(scene, detections, labels=labels)
    return np.ascontiguousarray(scene[:, :, ::-1])


class TrackWriter:
    """Streams tracker results into ``tracks.json``, ``counts.csv``, ``annotated.mp4``,
    ``mot.txt`` (see the module docstring for the formats).

    Args:
        out_dir: Output folder (created).
        classes: The vocabulary's class names (``class_id`` indexes them).
        video_name: Name recorded in ``tracks.json``.
        fps: Frame rate (``annotated.mp4``, ``time_s``); None: 25 for the video, times empty.
        annotated: Write ``annotated.mp4`` (needs each frame's image in :meth:`write`).
        mot: Write ``mot.txt``.
        overwrite: Replace existing output files (else an existing ``tracks.json`` is an error).

    Raises:
        FileExistsError: ``tracks.json`` exists and ``overwrite`` is False.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        classes: list[str] | tuple[str, ...],
        *,
        video_name: str = "video",
        fps: float | None = None,
        annotated: bool = True,
        mot: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise NotADirectoryError(f"--out {self.out_dir} exists and is not a folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if (self.out_dir / "tracks.json").exists() and not overwrite:
            raise FileExistsError(
                f"{self.out_dir / 'tracks.json'} exists; choose another folder or overwrite"
            )
        self.classes = [str(c) for c in classes]
        self.video_name = video_name
        self.fps = fps
        self._tmp = Path(tempfile.mkdtemp(prefix=".textseg-tracks-", dir=self.out_dir))
        # Streamed across write() calls and closed by close(): no context manager fits.
        self._annotations = open(self._tmp / "annotations.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._frames = open(self._tmp / "frames.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._video = (
            VideoWriter(self._tmp / "annotated.mp4", fps=fps or 25.0) if annotated else None
        )
        self._mot = open(self._tmp / "mot.txt", "w", encoding="utf-8") if mot else None  # noqa: SIM115
        self._tracks: dict[int, dict[str, Any]] = {}
        self._skipped: list[dict[str, Any]] = []
        self._size: tuple[int, int] | None = None
        self._next_annotation = 1
        self.frames = 0
        self._closed = False

    def write(self, result: Any, image: np.ndarray | None = None) -> None:
        """Add one frame's result (``image``: the frame, for ``annotated.mp4``).

        Raises:
            ValueError: The writer needs the image for ``annotated.mp4`` and got none.
        """
        if result.error is not None:
            self._skipped.append({"frame_index": int(result.index), "error": str(result.error)})
            return
        if self._video is not None and image is None:
            raise ValueError(
                "image: annotated.mp4 needs each frame's image (track(..., with_images=True))"
            )
        dets = result.detections
        h, w = result.image_size
        self._size = self._size or (h, w)
        image_id = self.frames + 1
        time_s = result.time if result.time is not None else None
        frame_row = {"id": image_id, "frame_index": int(result.index), "tracks": []}
        if time_s is not None:
            frame_row["time_s"] = round(float(time_s), 6)
        for k in range(len(dets)):
            track_id = int(dets.tracker_id[k])
            mask = np.asarray(dets.mask[k], bool)
            x0, y0, x1, y1 = (float(v) for v in dets.xyxy[k])
            area = int(mask.sum())
            ann = {
                "id": self._next_annotation,
                "image_id": image_id,
                "video_id": 1,
                "track_id": track_id,
                "segmentation": encode_mask(mask),
                "area": area,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0,
                "score": float(dets.confidence[k]),
                "object_score": float(dets.data["object_score"][k]),
            }
            self._next_annotation += 1
            self._annotations.write(json.dumps(ann, allow_nan=False) + "\n")
            info = self._tracks.setdefault(track_id, {"first": int(result.index), "frames": 0})
            info["last"] = int(result.index)
            info["frames"] += 1
            info["class_id"] = int(dets.class_id[k])  # the track's class as of this frame
            frame_row["tracks"].append(track_id)
            if self._mot is not None:
                self._mot.write(
                    f"{int(result.index) + 1},{track_id},{x0:.2f},{y0:.2f},{x1 - x0:.2f},"
                    f"{y1 - y0:.2f},{float(dets.confidence[k]):.4f},-1,-1,-1\n"
                )
        self._frames.write(json.dumps(frame_row, allow_nan=False) + "\n")
        if self._video is not None:
            self._video.write(_annotate(np.asarray(image), dets))
        self.frames += 1

    def _class_name(self, class_id: int) -> str:
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else UNKNOWN

    def _categories(self) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """COCO categories (1-based ids in vocabulary order, ``unknown`` last when used) and
        the map class_id -> category id."""
        cats = [{"id": k + 1, "name": name} for k, name in enumerate(self.classes)]
        mapping = {k: k + 1 for k in range(len(self.classes))}
        if any(t["class_id"] < 0 for t in self._tracks.values()):
            cats.append({"id": len(cats) + 1, "name": UNKNOWN})
            mapping[-1] = len(cats)
        return cats, mapping

    def close(self) -> dict[str, Path]:
        """Finish every file (atomically) and return ``{kind: path}``.

        Raises:
            ValueError: No frame was written (nothing was tracked).
        """
        if self._closed:
            raise ValueError("close: the writer is already closed")
        self._closed = True
        self._annotations.close()
        self._frames.close()
        if self._mot is not None:
            self._mot.close()
        if self._video is not None:
            self._video.close()
        try:
            if self.frames == 0:
                raise ValueError("no frame was tracked: nothing to write")
            return self._finish()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _finish(self) -> dict[str, Path]:
        h, w = self._size or (0, 0)
        cats, mapping = self._categories()
        final = {tid: mapping[info["class_id"]] for tid, info in self._tracks.items()}
        video: dict[str, Any] = {
            "id": 1,
            "name": self.video_name,
            "width": w,
            "height": h,
            "length": self.frames,
        }
        if self.fps:
            video["fps"] = float(self.fps)
        if self._skipped:
            video["skipped_frames"] = self._skipped
        tmp = self._tmp / "tracks.json"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write('{"info": ' + json.dumps({"description": "textseg tracks"}))
            out.write(', "videos": [' + json.dumps(video, allow_nan=False) + "]")
            out.write(', "categories": ' + json.dumps(cats))
            out.write(', "images": [')
            with open(self._tmp / "frames.jsonl", encoding="utf-8") as frames:
                for n, line in enumerate(frames):
                    row = json.loads(line)
                    image = {
                        "id": row["id"],
                        "video_id": 1,
                        "frame_index": row["frame_index"],
                        "file_name": f"{self.video_name}/{row['frame_index']:06d}",
                        "width": w,
                        "height": h,
                    }
                    if "time_s" in row:
                        image["time_s"] = row["time_s"]
                    out.write(("," if n else "") + json.dumps(image, allow_nan=False))
            out.write('], "annotations": [')
            with open(self._tmp / "annotations.jsonl", encoding="utf-8") as anns:
                for n, line in enumerate(anns):
                    ann = json.loads(line)
                    ann["category_id"] = final[ann["track_id"]]
                    out.write(("," if n else "") + json.dumps(ann, allow_nan=False))
            tracks = [
                {
                    "id": tid,
                    "video_id": 1,
                    "category_id": final[tid],
                    "first_frame": info["first"],
                    "last_frame": info["last"],
                    "frames": info["frames"],
                }
                for tid, info in sorted(self._tracks.items())
            ]
            out.write('], "tracks": ' + json.dumps(tracks, allow_nan=False) + "}\n")
        written = {"tracks": self.out_dir / "tracks.json"}
        os.replace(tmp, written["tracks"])
        written["counts"] = self._write_counts(cats, final)
        if self._video is not None:
            written["annotated"] = self.out_dir / "annotated.mp4"
            os.replace(self._tmp / "annotated.mp4", written["annotated"])
        if self._mot is not None:
            written["mot"] = self.out_dir / "mot.txt"
            os.replace(self._tmp / "mot.txt", written["mot"])
        return written

    def _write_counts(self, cats: list[dict[str, Any]], final: dict[int, int]) -> Path:
        names = [c["name"] for c in cats]
        by_id = {c["id"]: c["name"] for c in cats}
        distinct = Counter(by_id[c] for c in final.values())
        tmp = self._tmp / "counts.csv"
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["scope", "frame", "time_s", "class", "count"])
            for name in names:
                writer.writerow(["distinct", "", "", name, distinct.get(name, 0)])
            with open(self._tmp / "frames.jsonl", encoding="utf-8") as frames:
                for line in frames:
                    row = json.loads(line)
                    here = Counter(by_id[final[t]] for t in row["tracks"])
                    time_s = row.get("time_s", "")
                    for name in names:
                        writer.writerow(
                            ["frame", row["frame_index"], time_s, name, here.get(name, 0)]
                        )
        path = self.out_dir / "counts.csv"
        os.replace(tmp, path)
        return path

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._closed:
            if exc_type is None:
                self.close()
            else:  # an error mid-video: keep nothing half-written
                self._closed = True
                for f in (self._annotations, self._frames, self._mot):
                    if f is not None:
                        f.close()
                if self._video is not None:
                    self._video.close()
                shutil.rmtree(self._tmp, ignore_errors=True)


def load_tracks(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``tracks.json`` (plain JSON; ``pycocotools.coco.COCO(path)`` reads it too)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
