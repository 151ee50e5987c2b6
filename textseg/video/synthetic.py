"""Test clips with exact ground truth: a camera panning over a still photo.

A :class:`SyntheticClip` is a sequence of crops of one or more photos taken along smooth paths;
every instance mask of a photo, cropped the same way, is the exact ground-truth mask of that
instance in every frame, and the instance's annotation id is its track id. Objects enter and
leave the view as the crop moves, so a tracker must start new tracks mid-clip and keep the old
ones; two photos one after the other make a scene cut (:func:`concatenate`).

The ground truth is a label map per photo (each pixel belongs to at most one instance, smaller
instances drawn on top of larger ones), so instance masks never overlap, as in DAVIS; or, with
``overlap=True``, the instance masks as given, so objects can lie inside others as COCO draws
them (cups on a table keep the table's mask whole; carrots lie inside the bowl's). Clips can
be written as a video file (:meth:`SyntheticClip.write_video`), a folder of frames, or a
DAVIS-layout dataset (:meth:`SyntheticClip.write_davis`) for :mod:`textseg.eval.video`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image

from textseg.fields import CLASS_NAME
from textseg.masks import masks_to_boxes

__all__ = ["Shot", "SyntheticClip", "concatenate", "from_coco", "panning_clip"]


@dataclass(frozen=True)
class Shot:
    """One continuous pan over one photo.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB photo.
        labels: ``(H, W)`` int32 label map: 0 background, ``k`` = instance ``ids[k - 1]``.
        ids: Track id of each instance (its annotation id).
        class_names: Class of each instance.
        offsets: ``(T, 2)`` int top-left ``(y, x)`` of the crop in each frame.
        size: ``(h, w)`` of the crop.
        masks: ``(N, H, W)`` bool instance masks that may overlap (``overlap=True``); None
            when ``labels`` is the ground truth.
    """

    image: np.ndarray
    labels: np.ndarray
    ids: tuple[int, ...]
    class_names: tuple[str, ...]
    offsets: np.ndarray
    size: tuple[int, int]
    masks: np.ndarray | None = None


@dataclass
class SyntheticClip:
    """Frames and exact per-frame instance masks of one or more pans (see module).

    Attributes:
        shots: The pans, one after the other (a new shot is a scene cut).
        fps: Frame rate used when the clip is written as a video.
    """

    shots: list[Shot]
    fps: float = 10.0
    _starts: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.shots:
            raise ValueError("shots: a clip needs at least one shot")
        sizes = {s.size for s in self.shots}
        if len(sizes) != 1:
            raise ValueError(f"shots: every shot needs the same crop size, got {sorted(sizes)}")
        self._starts = list(np.cumsum([0] + [len(s.offsets) for s in self.shots]))

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def size(self) -> tuple[int, int]:
        """``(h, w)`` of every frame."""
        return self.shots[0].size

    @property
    def cuts(self) -> list[int]:
        """Frame indices where a new shot starts (scene cuts)."""
        return [int(s) for s in self._starts[1:-1]]

    @property
    def class_names(self) -> list[str]:
        """Every class that appears, sorted."""
        return sorted({c for s in self.shots for c in s.class_names})

    def _locate(self, t: int) -> tuple[Shot, int, int]:
        if not 0 <= t < len(self):
            raise IndexError(f"frame {t} is outside the clip (0..{len(self) - 1})")
        k = int(np.searchsorted(self._starts, t, side="right")) - 1
        shot = self.shots[k]
        y, x = (int(v) for v in shot.offsets[t - self._starts[k]])
        return shot, y, x

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t``: ``(h, w, 3)`` uint8 RGB."""
        shot, y, x = self._locate(t)
        h, w = shot.size
        return np.ascontiguousarray(shot.image[y : y + h, x : x + w])

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(len(self)):
            yield self.frame(t)

    def label_map(self, t: int) -> tuple[np.ndarray, tuple[int, ...], tuple[str, ...]]:
        """Frame ``t``'s ``(h, w)`` label map and its shot's ids and class names.

        Raises:
            ValueError: The clip's instances overlap (use :meth:`instances`).
        """
        shot, y, x = self._locate(t)
        if shot.masks is not None:
            raise ValueError("label_map: the instances overlap; use instances(t)")
        h, w = shot.size
        return shot.labels[y : y + h, x : x + w], shot.ids, shot.class_names

    def instances(self, t: int) -> tuple[np.ndarray, tuple[int, ...], tuple[str, ...]]:
        """The instances visible in frame ``t``: ``(N, h, w)`` bool masks, their ids and
        class names, ordered by id."""
        shot, y, x = self._locate(t)
        h, w = shot.size
        if shot.masks is not None:
            crops = shot.masks[:, y : y + h, x : x + w]
            present = [k for k in range(len(crops)) if crops[k].any()]
        else:
            labels = shot.labels[y : y + h, x : x + w]
            present = [int(k) - 1 for k in np.unique(labels) if k > 0]
            crops = None
        present.sort(key=lambda k: shot.ids[k])
        if not present:
            return np.zeros((0, h, w), bool), (), ()
        if crops is not None:
            masks = np.stack([crops[k] for k in present])
        else:
            masks = np.stack([labels == k + 1 for k in present])
        return (
            masks,
            tuple(shot.ids[k] for k in present),
            tuple(shot.class_names[k] for k in present),
        )

    def mask_of(self, t: int, instance: int) -> np.ndarray:
        """The ``(h, w)`` mask of instance id ``instance`` in frame ``t`` (empty when it is
        out of view)."""
        masks, ids, _ = self.instances(t)
        if instance in ids:
            return masks[ids.index(instance)]
        return np.zeros(self.size, bool)

    def ground_truth(self, t: int, classes: Sequence[str] | None = None) -> sv.Detections:
        """The instances visible in frame ``t`` as ``sv.Detections``.

        Args:
            t: Frame index.
            classes: The vocabulary ``class_id`` indexes (default :attr:`class_names`).

        Returns:
            ``mask`` (N, h, w) bool, ``xyxy`` the masks' boxes, ``tracker_id`` the annotation
            ids, ``class_id`` and ``data["class_name"]``; ordered by track id.
        """
        masks, ids, names = self.instances(t)
        vocab = list(classes) if classes is not None else self.class_names
        class_name = np.array(names, dtype=object)
        return sv.Detections(
            xyxy=masks_to_boxes(masks),
            mask=masks,
            class_id=np.array([vocab.index(n) if n in vocab else -1 for n in class_name], int),
            tracker_id=np.array(ids, int),
            confidence=np.ones(len(ids), np.float32),
            data={CLASS_NAME: class_name},
        )

    def distinct_counts(self) -> dict[str, int]:
        """Distinct instances per class over the whole clip (what a tracker should count)."""
        seen: dict[str, set[int]] = {}
        for t in range(len(self)):
            _, ids, names = self.instances(t)
            for i, name in zip(ids, names):
                seen.setdefault(name, set()).add(i)
        return {name: len(v) for name, v in sorted(seen.items())}

    # ------------------------------------------------------------------ writers
    def write_frames(self, folder: str | Path) -> Path:
        """Write the frames as ``00000.png ...`` (lossless) and return the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for t, image in enumerate(self):
            Image.fromarray(image).save(folder / f"{t:05d}.png")
        return folder

    def write_video(self, path: str | Path, *, codec: str | None = None) -> Path:
        """Write the frames as a video file with PyAV (mjpeg for ``.avi``, else mpeg4)."""
        from textseg.video.export import VideoWriter

        path = Path(path)
        with VideoWriter(path, fps=self.fps, codec=codec) as writer:
            for image in self:
                writer.write(image)
        return path

    def write_davis(self, root: str | Path, name: str = "clip") -> Path:
        """Write the clip as a DAVIS-layout sequence under ``root`` and return ``root``.

        ``JPEGImages/480p/<name>/00000.jpg``, ``Annotations/480p/<name>/00000.png`` (palette
        PNG; pixel value k = object k of the sequence), ``ImageSets/2017/val.txt`` and a
        YouTube-VOS style ``meta.json`` naming each object's category and track id
        (``{"videos": {name: {"objects": {"k": {"category", "track_id", "frames"}}}}}``).
        """
        root = Path(root)
        images = root / "JPEGImages" / "480p" / name
        annotations = root / "Annotations" / "480p" / name
        images.mkdir(parents=True, exist_ok=True)
        annotations.mkdir(parents=True, exist_ok=True)
        objects: dict[int, dict] = {}
        index: dict[int, int] = {}
        palette = _palette()
        for t in range(len(self)):
            labels, ids, names = self.label_map(t)
            out = np.zeros(labels.shape, np.uint8)
            for k in np.unique(labels):
                if k == 0:
                    continue
                track = ids[k - 1]
                if track not in index:
                    index[track] = len(index) + 1
                    if index[track] > 255:
                        raise ValueError("write_davis: more than 255 objects in one sequence")
                    objects[index[track]] = {
                        "category": names[k - 1],
                        "track_id": int(track),
                        "frames": [],
                    }
                out[labels == k] = index[track]
                objects[index[track]]["frames"].append(f"{t:05d}")
            Image.fromarray(self.frame(t)).save(images / f"{t:05d}.jpg", quality=95)
            png = Image.fromarray(out, mode="P")
            png.putpalette(palette)
            png.save(annotations / f"{t:05d}.png")
        sets = root / "ImageSets" / "2017"
        sets.mkdir(parents=True, exist_ok=True)
        listing = sets / "val.txt"
        names_listed = listing.read_text().split() if listing.exists() else []
        if name not in names_listed:
            listing.write_text("\n".join([*names_listed, name]) + "\n")
        meta_path = root / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"videos": {}}
        meta["videos"][name] = {"objects": {str(k): v for k, v in sorted(objects.items())}}
        meta_path.write_text(json.dumps(meta, indent=1, allow_nan=False))
        return root


def _palette() -> list[int]:
    """DAVIS's colour palette (the bit-interleaved PASCAL VOC map)."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def _smooth_path(
    height: int, width: int, size: tuple[int, int], num_frames: int, reverse: bool
) -> np.ndarray:
    """Top-left offsets of a left-to-right sweep (ease in and out) with a slow vertical sway."""
    h, w = size
    t = np.linspace(0.0, 1.0, num_frames)
    ease = 0.5 - 0.5 * np.cos(np.pi * t)
    if reverse:
        ease = ease[::-1]
    x = ease * (width - w)
    y = (height - h) * (0.5 + 0.5 * np.sin(2 * np.pi * t) * 0.8)
    return np.stack([np.round(y), np.round(x)], axis=1).astype(np.int64)


def panning_clip(
    image: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    ids: Sequence[int],
    class_names: Sequence[str],
    *,
    size: tuple[int, int] | None = None,
    num_frames: int = 24,
    reverse: bool = False,
    offsets: np.ndarray | None = None,
    fps: float = 10.0,
    overlap: bool = False,
) -> SyntheticClip:
    """A clip panning over ``image`` with exact ground truth.

    Args:
        image: ``(H, W, 3)`` uint8 RGB photo.
        masks: ``(N, H, W)`` bool instance masks of the photo.
        ids: Track id of each instance (e.g. its COCO annotation id), unique.
        class_names: Class of each instance.
        size: ``(h, w)`` of the crop (default: half the width, 3/4 of the height).
        num_frames: Frames of the sweep.
        reverse: Sweep right to left.
        offsets: ``(T, 2)`` top-left ``(y, x)`` per frame instead of the default sweep.
        fps: Frame rate for written videos.
        overlap: Keep the masks as given (they may overlap: an object inside another) instead
            of one label map (smaller instances on top).

    Raises:
        ValueError: Inconsistent lengths or shapes, duplicate ids, a crop larger than the
            photo or offsets outside it.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    masks = np.asarray(masks, bool).reshape(-1, height, width)
    if not (len(masks) == len(ids) == len(class_names)):
        raise ValueError(
            f"masks, ids, class_names: expected one of each per instance, got {len(masks)}, "
            f"{len(ids)}, {len(class_names)}"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("ids: every instance needs its own track id")
    if size is None:
        size = (int(height * 3 // 4), int(width // 2))
    h, w = size
    if not (0 < h <= height and 0 < w <= width):
        raise ValueError(f"size: the crop {size} must fit in the photo ({height}, {width})")
    if offsets is None:
        offsets = _smooth_path(height, width, size, num_frames, reverse)
    offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
    if (
        (offsets < 0).any()
        or (offsets[:, 0] + h > height).any()
        or (offsets[:, 1] + w > width).any()
    ):
        raise ValueError("offsets: every crop must lie inside the photo")
    # Larger instances first, so smaller ones (often in front) stay visible on top.
    labels = np.zeros((height, width), np.int32)
    for k in np.argsort([-m.sum() for m in masks], kind="stable"):
        labels[masks[k]] = k + 1
    shot = Shot(
        image=image,
        labels=labels,
        ids=tuple(int(i) for i in ids),
        class_names=tuple(class_names),
        offsets=offsets,
        size=(h, w),
        masks=masks if overlap else None,
    )
    return SyntheticClip([shot], fps=fps)


def concatenate(clips: Sequence[SyntheticClip]) -> SyntheticClip:
    """The clips one after the other: a scene cut at each junction.

    Raises:
        ValueError: Different frame sizes, or a track id used in two clips.
    """
    shots = [s for c in clips for s in c.shots]
    seen: set[int] = set()
    for shot in shots:
        if seen & set(shot.ids):
            raise ValueError("clips: a track id appears in two clips; ids must be unique")
        seen |= set(shot.ids)
    return SyntheticClip(shots, fps=clips[0].fps if clips else 10.0)


def from_coco(
    annotations: str | Path | dict,
    image: str,
    *,
    images_dir: str | Path | None = None,
    min_area: float = 0.0,
    **options: object,
) -> SyntheticClip:
    """A panning clip of one image of a COCO dataset (e.g. coco-dev).

    Args:
        annotations: The COCO JSON file (or its loaded dict).
        image: The image's ``file_name``.
        images_dir: Folder of the images (default: ``images/`` beside the JSON).
        min_area: Skip instances with a smaller annotated area (crowd regions are skipped).
        **options: :func:`panning_clip` options (``size``, ``num_frames``, ...).

    Raises:
        ValueError: The image is not in the annotations.
    """
    from textseg._image import load_image
    from textseg.io.rle import decode_masks, to_rle

    if isinstance(annotations, dict):
        data, base = annotations, None
    else:
        base = Path(annotations).parent
        data = json.loads(Path(annotations).read_text())
    entry = next((im for im in data["images"] if im["file_name"] == image), None)
    if entry is None:
        raise ValueError(f"image: {image!r} is not in the COCO annotations")
    folder = Path(images_dir) if images_dir is not None else (base or Path(".")) / "images"
    photo = load_image(folder / image)
    h, w = photo.shape[:2]
    cats = {c["id"]: c["name"] for c in data["categories"]}
    rles, ids, names = [], [], []
    for ann in data["annotations"]:
        if ann["image_id"] != entry["id"] or ann.get("iscrowd") or ann["area"] < min_area:
            continue
        rles.append(to_rle(ann["segmentation"], h, w, what=f"annotation {ann['id']}"))
        ids.append(int(ann["id"]))
        names.append(cats[ann["category_id"]])
    masks_array = decode_masks(rles, h, w)
    return panning_clip(photo, masks_array, ids, names, **options)  # type: ignore[arg-type]
