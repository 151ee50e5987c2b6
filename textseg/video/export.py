"""Writing tracks: ``tracks.json`` (COCO/TAO video style), ``counts.csv``, ``annotated.mp4``,
MOTChallenge and MOTS text, YouTube-VIS JSON.

:class:`TrackWriter` takes the tracker's :class:`~textseg.video.FrameResult` objects one at a
time and streams what it can to disk, so memory stays flat however long the video is; the files
are completed (atomically) by :meth:`TrackWriter.close`.

- ``tracks.json``: one COCO-style file for the video, readable by ``pycocotools.coco.COCO`` and
  by TrackEval's TAO reader as it is: ``info`` (``complete``: false when the run was
  interrupted or the video could not be read to the end; ``models``), ``videos`` (one entry:
  name, size, fps, frames, ``skipped_frames``, TAO's ``neg_category_ids`` and
  ``not_exhaustive_category_ids``), ``images`` (one per tracked frame, with ``frame_index``
  and ``video_id``), ``categories``, ``annotations`` (one per instance per frame:
  ``track_id``, ``video_id``, compressed-RLE ``segmentation``, ``bbox`` XYWH as
  ``pycocotools.mask.toBbox`` gives it, ``area``, ``score``, ``object_score``) and ``tracks``
  (one per track: ``id``, ``category_id``, ``video_id``, first and last frame, number of
  frames). A track has one class, the majority of its votes at the end of the video, in every
  annotation. Written with ``allow_nan=False``: a value not measured is absent.
- ``counts.csv``: ``scope,frame,time_s,class,count``; first the ``distinct`` rows (distinct
  tracks per class over the video; ``frame`` and ``time_s`` empty), then one ``frame`` row per
  frame and class (instances visible in that frame).
- ``annotated.mp4``: the frames with each instance's mask, box and ``#<track id> <class>``,
  coloured by track.
- ``mot.txt`` (``mot``): MOTChallenge results, ``frame,id,bb_left,bb_top,bb_width,bb_height,
  conf,-1,-1,-1``, frames and pixel coordinates 1-based as MOTChallenge counts them.
- ``mots.txt`` (``mots``): MOTS 2020 text, ``frame id class_id height width rle`` (space
  separated, 1-based frames, ``rle`` the mask's COCO compressed RLE string). ``id`` is the
  track id and ``class_id`` the category id of ``tracks.json`` (MOTS's own convention, class 2
  for pedestrians and ids ``class * 1000 + k``, is for its two classes and does not apply).
- ``ytvis.json`` (``ytvis``): YouTube-VIS: ``videos`` (``file_names``, ``length``, ``width``,
  ``height``), ``categories``, ``annotations`` (one per track: ``category_id``, ``score``,
  and per frame ``segmentations`` (compressed RLE, or None where the track is not visible),
  ``areas``, ``bboxes``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg.fields import CLASS_NAME, OBJECT_SCORE
from textseg.io._common import json_value
from textseg.io.folder import written
from textseg.io.rle import encode_mask
from textseg.masks import coco_bbox, masks_to_boxes
from textseg.validators import check_choice
from textseg.vocab import UNKNOWN

__all__ = ["FORMAT_FILES", "OWNED", "TrackWriter", "VideoWriter", "load_tracks"]

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
        f"#{int(i)} {name}" for i, name in zip(detections.tracker_id, detections.data[CLASS_NAME])
    ]
    scene = sv.LabelAnnotator(
        color_lookup=lookup,
        text_scale=sv.calculate_optimal_text_scale((w, h)),
        smart_position=True,
    ).annotate(scene, detections, labels=labels)
    return np.ascontiguousarray(scene[:, :, ::-1])


#: Extra formats :class:`TrackWriter` can write, and their files.
FORMAT_FILES = {"mot": "mot.txt", "mots": "mots.txt", "ytvis": "ytvis.json"}

#: Every file and folder ``textseg track`` may write in its output folder.
OWNED = ("tracks.json", "counts.csv", "annotated.mp4", *FORMAT_FILES.values())

#: Prefix of the writer's temporary folder inside the output folder.
TEMP_PREFIX = ".textseg-tracks-"


def clean_stale(out_dir: Path) -> None:
    """Remove temporary folders a killed run left in ``out_dir`` (call while holding the
    folder's lock, so no live run's folder is among them)."""
    for stale in out_dir.glob(TEMP_PREFIX + "*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


class TrackWriter:
    """Streams tracker results into ``tracks.json``, ``counts.csv``, ``annotated.mp4`` and the
    extra formats (see the module docstring for each).

    Every file is streamed into a temporary folder inside ``out_dir`` and moved into place
    by :meth:`close` (``os.replace``, one file at a time), so no half-written file is ever
    readable; temporary folders of killed runs are removed when the next writer starts.

    Args:
        out_dir: Output folder (created).
        classes: The vocabulary's class names (``class_id`` indexes them).
        video_name: Name recorded in ``tracks.json``.
        fps: Frame rate (``annotated.mp4``, ``time_s``); None: 25 for the video, times empty.
        annotated: Write ``annotated.mp4`` (needs each frame's image in :meth:`write`).
        mot: Write ``mot.txt`` (the same as ``"mot"`` in ``formats``).
        formats: Extra formats: ``"mot"``, ``"mots"``, ``"ytvis"``.
        overwrite: Replace existing output files (else an existing ``tracks.json`` is an error).
        category_ids: The COCO category id of each class (default 1, 2, ... in class order),
            e.g. the user's ground truth's.
        info: Fields recorded in ``tracks.json``'s ``info`` (e.g. ``models``).

    Raises:
        FileExistsError: ``tracks.json`` exists and ``overwrite`` is False.
        ValueError: An unknown format, or category ids that do not fit the classes.
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
        formats: tuple[str, ...] | list[str] = (),
        overwrite: bool = False,
        category_ids: list[int] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise NotADirectoryError(f"--out {self.out_dir} exists and is not a folder")
        self.formats = tuple(dict.fromkeys([*formats, *(["mot"] if mot else [])]))
        for f in self.formats:
            check_choice(f, "formats", tuple(FORMAT_FILES))
        self.classes = [str(c) for c in classes]
        if category_ids is not None and (
            len(category_ids) != len(self.classes) or len(set(category_ids)) != len(category_ids)
        ):
            raise ValueError(
                f"category_ids: expected one distinct id per class ({len(self.classes)}), got "
                f"{list(category_ids)}"
            )
        self.category_ids = (
            [int(c) for c in category_ids]
            if category_ids is not None
            else list(range(1, len(self.classes) + 1))
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if (self.out_dir / "tracks.json").exists() and not overwrite:
            raise FileExistsError(
                f"{self.out_dir / 'tracks.json'} exists; choose another folder or overwrite"
            )
        clean_stale(self.out_dir)
        self.video_name = video_name
        self.fps = fps
        self.info = dict(info or {})
        self._tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.out_dir))
        # Streamed across write() calls and closed by close(): no context manager fits.
        self._annotations = open(self._tmp / "annotations.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._frames = open(self._tmp / "frames.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._video = (
            VideoWriter(self._tmp / "annotated.mp4", fps=fps or 25.0) if annotated else None
        )
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
        frame_row = {"id": image_id, "frame_index": int(result.index), "tracks": []}
        if result.time is not None:
            frame_row["time_s"] = round(float(result.time), 6)
        boxes = coco_bbox(masks_to_boxes(dets.mask)) if len(dets) else np.zeros((0, 4))
        for k in range(len(dets)):
            track_id = int(dets.tracker_id[k])
            mask = np.asarray(dets.mask[k], bool)
            ann = {
                "id": self._next_annotation,
                "image_id": image_id,
                "video_id": 1,
                "track_id": track_id,
                "segmentation": encode_mask(mask),
                "area": int(mask.sum()),
                "bbox": [float(v) for v in boxes[k]],
                "iscrowd": 0,
                "score": float(dets.confidence[k]),
                OBJECT_SCORE: float(dets.data[OBJECT_SCORE][k]),
            }
            self._next_annotation += 1
            self._annotations.write(json.dumps(ann, allow_nan=False) + "\n")
            info = self._tracks.setdefault(track_id, {"first": int(result.index), "frames": 0})
            info["last"] = int(result.index)
            info["frames"] += 1
            info["class_id"] = int(dets.class_id[k])  # the track's class as of this frame
            frame_row["tracks"].append(track_id)
        self._frames.write(json.dumps(frame_row, allow_nan=False) + "\n")
        if self._video is not None:
            self._video.write(_annotate(np.asarray(image), dets))
        self.frames += 1
        if self.frames == 1:
            written("first-frame")

    def _categories(self) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """COCO categories (the classes' ids in vocabulary order, ``unknown`` last when used)
        and the map class_id -> category id."""
        cats = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.classes)]
        mapping = dict(enumerate(self.category_ids))
        if any(t["class_id"] < 0 for t in self._tracks.values()):
            cats.append({"id": max(self.category_ids, default=0) + 1, "name": UNKNOWN})
            mapping[-1] = cats[-1]["id"]
        return cats, mapping

    def close(self, *, complete: bool = True) -> dict[str, Path]:
        """Finish every file and move each into place; return ``{kind: path}``.

        Args:
            complete: The whole video was tracked; False (interrupted, or the source failed
                part-way) records ``info.complete = false`` in ``tracks.json``.

        Raises:
            ValueError: No frame was written (nothing was tracked), or closed twice.
        """
        if self._closed:
            raise ValueError("close: the writer is already closed")
        self._closed = True
        self._annotations.close()
        self._frames.close()
        if self._video is not None:
            self._video.close()
        try:
            if self.frames == 0:
                raise ValueError("no frame was tracked: nothing to write")
            return self._finish(complete)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _lines(self, name: str) -> Iterator[dict[str, Any]]:
        with open(self._tmp / name, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    def _finish(self, complete: bool) -> dict[str, Path]:
        h, w = self._size or (0, 0)
        cats, mapping = self._categories()
        final = {tid: mapping[info["class_id"]] for tid, info in self._tracks.items()}
        video: dict[str, Any] = {
            "id": 1,
            "name": self.video_name,
            "width": w,
            "height": h,
            "length": self.frames,
            # TAO's reader needs these two (no negative or partly labelled classes here).
            "neg_category_ids": [],
            "not_exhaustive_category_ids": [],
        }
        if self.fps:
            video["fps"] = float(self.fps)
        if self._skipped:
            video["skipped_frames"] = self._skipped
        info = {"description": "textseg tracks", **self.info, "complete": bool(complete)}
        staged: dict[str, Path] = {}
        tmp = self._tmp / "tracks.json"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write('{"info": ' + json.dumps(json_value(info, what="info"), allow_nan=False))
            out.write(', "videos": [' + json.dumps(video, allow_nan=False) + "]")
            out.write(', "categories": ' + json.dumps(cats))
            out.write(', "images": [')
            for n, row in enumerate(self._lines("frames.jsonl")):
                image = {
                    "id": row["id"],
                    "video_id": 1,
                    "frame_index": row["frame_index"],
                    "file_name": self._file_name(row["frame_index"]),
                    "width": w,
                    "height": h,
                }
                if "time_s" in row:
                    image["time_s"] = row["time_s"]
                out.write(("," if n else "") + json.dumps(image, allow_nan=False))
            out.write('], "annotations": [')
            for n, ann in enumerate(self._lines("annotations.jsonl")):
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
        staged["tracks"] = tmp
        staged["counts"] = self._write_counts(cats, final)
        if "mot" in self.formats:
            staged["mot"] = self._write_mot(mots=False, final=final)
        if "mots" in self.formats:
            staged["mots"] = self._write_mot(mots=True, final=final)
        if "ytvis" in self.formats:
            staged["ytvis"] = self._write_ytvis(cats, final, (h, w))
        if self._video is not None:
            staged["annotated"] = self._tmp / "annotated.mp4"
        placed = {}
        for kind, path in staged.items():
            target = self.out_dir / path.name
            _fsync(path)
            os.replace(path, target)
            placed[kind] = target
            written(path.name)
        return placed

    def _file_name(self, frame_index: int) -> str:
        return f"{self.video_name}/{frame_index:06d}"

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
            for row in self._lines("frames.jsonl"):
                here = Counter(by_id[final[t]] for t in row["tracks"])
                time_s = row.get("time_s", "")
                for name in names:
                    writer.writerow(["frame", row["frame_index"], time_s, name, here.get(name, 0)])
        return tmp

    def _write_mot(self, *, mots: bool, final: dict[int, int]) -> Path:
        """MOTChallenge boxes (``mot.txt``) or MOTS 2020 masks (``mots.txt``)."""
        frame_of = {row["id"]: row["frame_index"] for row in self._lines("frames.jsonl")}
        tmp = self._tmp / FORMAT_FILES["mots" if mots else "mot"]
        with open(tmp, "w", encoding="utf-8") as out:
            for ann in self._lines("annotations.jsonl"):
                frame = frame_of[ann["image_id"]] + 1  # 1-based, as MOTChallenge counts
                if mots:
                    rle = ann["segmentation"]
                    h, w = rle["size"]
                    out.write(
                        f"{frame} {ann['track_id']} {final[ann['track_id']]} {h} {w} "
                        f"{rle['counts']}\n"
                    )
                else:
                    x, y, bw, bh = ann["bbox"]
                    out.write(
                        f"{frame},{ann['track_id']},{x + 1:.2f},{y + 1:.2f},{bw:.2f},{bh:.2f},"
                        f"{ann['score']:.4f},-1,-1,-1\n"
                    )
        return tmp

    def _write_ytvis(
        self, cats: list[dict[str, Any]], final: dict[int, int], size: tuple[int, int]
    ) -> Path:
        """YouTube-VIS: one video, one annotation per track with a mask (or None) per frame."""
        h, w = size
        order = {row["id"]: k for k, row in enumerate(self._lines("frames.jsonl"))}
        files = [self._file_name(row["frame_index"]) for row in self._lines("frames.jsonl")]
        per_track: dict[int, dict[str, Any]] = {}
        for ann in self._lines("annotations.jsonl"):
            tid = ann["track_id"]
            entry = per_track.setdefault(
                tid,
                {
                    "segmentations": [None] * len(files),
                    "areas": [None] * len(files),
                    "bboxes": [None] * len(files),
                    "scores": [],
                },
            )
            k = order[ann["image_id"]]
            entry["segmentations"][k] = ann["segmentation"]
            entry["areas"][k] = ann["area"]
            entry["bboxes"][k] = ann["bbox"]
            entry["scores"].append(ann["score"])
        annotations = [
            {
                "id": tid,
                "video_id": 1,
                "category_id": final[tid],
                "segmentations": e["segmentations"],
                "areas": e["areas"],
                "bboxes": e["bboxes"],
                "score": float(np.mean(e["scores"])),
                "iscrowd": 0,
                "height": h,
                "width": w,
            }
            for tid, e in sorted(per_track.items())
        ]
        data = {
            "info": {"description": "textseg tracks (YouTube-VIS)"},
            "videos": [
                {"id": 1, "file_names": files, "length": len(files), "width": w, "height": h}
            ],
            "categories": cats,
            "annotations": annotations,
        }
        tmp = self._tmp / FORMAT_FILES["ytvis"]
        tmp.write_text(json.dumps(data, allow_nan=False) + "\n", encoding="utf-8")
        return tmp

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._closed:
            if exc_type is None:
                self.close()
            else:
                self.abort()

    def abort(self) -> None:
        """Stop without writing anything (an error mid-video): the temporary files go."""
        if self._closed:
            return
        self._closed = True
        for f in (self._annotations, self._frames):
            f.close()
        if self._video is not None:
            with contextlib.suppress(Exception):
                self._video.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk before it is moved into place (a crash leaves the old file or
    the whole new one, never a truncated one)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def load_tracks(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``tracks.json`` (plain JSON; ``pycocotools.coco.COCO(path)`` reads it too)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
