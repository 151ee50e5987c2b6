"""Video evaluation on DAVIS-layout data: J, F and J&F from first-frame masks, and, for text
prompts, distinct-count error and identity switches.

Layout (DAVIS 2017; what :meth:`textseg.video.synthetic.SyntheticClip.write_davis` writes)::

    ROOT/JPEGImages/<res>/<sequence>/00000.jpg ...
    ROOT/Annotations/<res>/<sequence>/00000.png ...   palette PNGs, pixel value = object id
    ROOT/ImageSets/2017/val.txt                        sequences (optional: default all)
    ROOT/meta.json                                     optional, YouTube-VOS style:
        {"videos": {"<sequence>": {"objects": {"<id>": {"category": "car"}}}}}

Two parts, run per sequence:

- ``semi`` (semi-supervised VOS, as DAVIS): the ground-truth masks of the first frame are the
  prompts; the propagator tracks them. Per object and frame, J is the mask IoU (1 when both
  masks are empty) and F the boundary F-measure (boundaries matched within 0.8% of the image
  diagonal, as the DAVIS toolkit); the first and last frames are excluded, as in DAVIS. J, F
  are means over objects (each object's mean over its frames); J&F is their mean.
- ``text`` (needs ``meta.json`` categories): the tracker is given the category names only.
  Per sequence and class, the distinct-count error is ``|predicted tracks - objects|``; an
  identity switch is counted when a ground-truth object matched (mask IoU >= 0.5, greedy) on a
  frame is matched to another track than on its previous matched frame (CLEAR-MOT IDSW).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from textseg.eval.metrics import mask_iou
from textseg.fields import CLASS_NAME
from textseg.masks import greedy_match, pairwise_iou

__all__ = [
    "VideoReport",
    "VideoSequence",
    "boundary_f",
    "evaluate_video",
    "id_switches",
    "load_davis",
]


@dataclass(frozen=True)
class VideoSequence:
    """One DAVIS-layout sequence.

    Attributes:
        name: Sequence name.
        frames: Frame image paths, in order.
        annotations: Label-map PNG per frame (None where a frame has none).
        categories: ``{object id: class name}`` from ``meta.json`` (empty without it).
    """

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path | None, ...]
    categories: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, t: int) -> np.ndarray:
        from textseg._image import load_image

        return load_image(self.frames[t])

    def labels(self, t: int) -> np.ndarray | None:
        """Frame ``t``'s ``(H, W)`` label map (object ids), None without an annotation."""
        path = self.annotations[t]
        return None if path is None else np.asarray(Image.open(path))

    def object_ids(self) -> list[int]:
        """Every object id annotated in the sequence."""
        seen: set[int] = set()
        for t in range(len(self)):
            labels = self.labels(t)
            if labels is not None:
                seen.update(int(i) for i in np.unique(labels) if i not in (0, 255))
        return sorted(seen)


def load_davis(
    root: str | Path,
    *,
    resolution: str | None = None,
    split: str | None = "val",
    sequences: Sequence[str] | None = None,
    max_sequences: int | None = None,
) -> list[VideoSequence]:
    """The sequences of a DAVIS-layout folder (see the module docstring).

    Args:
        root: The dataset folder.
        resolution: Sub-folder of ``JPEGImages`` (default: ``480p`` if present, else the only
            one).
        split: ``ImageSets/2017/<split>.txt`` lists the sequences (all sequences when the
            file does not exist or ``split`` is None).
        sequences: Only these sequences.
        max_sequences: Only the first N.

    Raises:
        FileNotFoundError: No ``JPEGImages`` or ``Annotations`` folder, or a listed sequence
            without frames.
        ValueError: No sequence to evaluate.
    """
    root = Path(root)
    images_root, ann_root = root / "JPEGImages", root / "Annotations"
    for folder in (images_root, ann_root):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{root}: not a DAVIS-layout folder ({folder.name}/ is missing; expected "
                f"JPEGImages/<res>/<sequence>/ and Annotations/<res>/<sequence>/)"
            )
    if resolution is None:
        options = sorted(p.name for p in images_root.iterdir() if p.is_dir())
        resolution = "480p" if "480p" in options else options[0] if len(options) == 1 else None
        if resolution is None:
            raise ValueError(f"{images_root}: several resolutions {options}; choose one")
    names: list[str]
    listing = root / "ImageSets" / "2017" / f"{split}.txt" if split else None
    if sequences is not None:
        names = list(sequences)
    elif listing is not None and listing.is_file():
        names = listing.read_text().split()
    else:
        names = sorted(p.name for p in (images_root / resolution).iterdir() if p.is_dir())
    if max_sequences is not None:
        names = names[:max_sequences]
    meta_path = root / "meta.json"
    meta = json.loads(meta_path.read_text())["videos"] if meta_path.is_file() else {}
    out = []
    for name in names:
        folder = images_root / resolution / name
        frames = sorted(
            p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if not frames:
            raise FileNotFoundError(f"{folder}: no frames for sequence {name!r}")
        anns = tuple(
            (ann_root / resolution / name / f"{p.stem}.png")
            if (ann_root / resolution / name / f"{p.stem}.png").is_file()
            else None
            for p in frames
        )
        objects = meta.get(name, {}).get("objects", {})
        categories = {int(k): str(v["category"]) for k, v in objects.items() if "category" in v}
        out.append(VideoSequence(name, tuple(frames), anns, categories))
    if not out:
        raise ValueError(f"{root}: no sequence to evaluate")
    return out


def _boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a mask (pixels that differ from the right, lower or lower-right
    neighbour), as DAVIS's ``seg2bmap`` at the mask's own size."""
    m = mask.astype(bool)
    e = np.zeros_like(m)
    s = np.zeros_like(m)
    se = np.zeros_like(m)
    e[:, :-1] = m[:, 1:]
    s[:-1, :] = m[1:, :]
    se[:-1, :-1] = m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS boundary F-measure of one predicted mask against one ground-truth mask.

    Boundaries match within ``ceil(bound_th * image diagonal)`` pixels; two empty masks score
    1, one empty mask 0.
    """
    h, w = gt.shape
    radius = int(np.ceil(bound_th * np.hypot(h, w)))
    pb, gb = _boundary(pred), _boundary(gt)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    p_dil = cv2.dilate(pb.astype(np.uint8), kernel).astype(bool)
    g_dil = cv2.dilate(gb.astype(np.uint8), kernel).astype(bool)
    precision = float((pb & g_dil).sum()) / n_p
    recall = float((gb & p_dil).sum()) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def id_switches(matches: Sequence[dict[int, int]]) -> int:
    """CLEAR-MOT identity switches from per-frame ``{ground-truth id: track id}`` matches: a
    switch is a ground-truth object matched to another track than on its last matched frame."""
    last: dict[int, int] = {}
    switches = 0
    for frame in matches:
        for gt_id, track_id in frame.items():
            if gt_id in last and last[gt_id] != track_id:
                switches += 1
            last[gt_id] = track_id
    return switches


def _match(
    gt: dict[int, np.ndarray], pred: dict[int, np.ndarray], threshold: float
) -> dict[int, int]:
    """Greedy one-to-one matching of ground-truth to predicted masks by IoU >= threshold."""
    if not gt or not pred:
        return {}
    g_ids, p_ids = list(gt), list(pred)
    iou, _ = pairwise_iou(np.stack([gt[g] for g in g_ids]), np.stack([pred[p] for p in p_ids]))
    return {g_ids[r]: p_ids[c] for r, c in greedy_match(iou, threshold)}


@dataclass
class VideoReport:
    """Results of :func:`evaluate_video`.

    Attributes:
        metrics: Overall numbers: ``J``, ``F``, ``J&F`` (semi), ``count_mae`` (mean absolute
            distinct-count error over sequences and classes), ``id_switches`` (total) and
            ``tracks``/``objects`` (text).
        sequences: Per sequence: ``J``, ``F``, ``J&F``, ``objects``; ``counts``
            ``{class: [predicted, true]}``, ``id_switches``.
        timings: ``wall_s`` and frames per second of each part.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    sequences: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"metrics": self.metrics, "sequences": self.sequences, "timings": self.timings},
            indent=1,
            allow_nan=False,
        )

    def summary(self) -> list[str]:
        lines = []
        m = self.metrics
        if "J&F" in m:
            lines.append(
                f"semi (first-frame masks): J&F {m['J&F']:.4f}, J {m['J']:.4f}, F {m['F']:.4f}"
            )
        if "count_mae" in m:
            lines.append(
                f"text: distinct-count MAE {m['count_mae']:.4f}, ID switches "
                f"{int(m['id_switches'])}, tracks {int(m['tracks'])} for "
                f"{int(m['objects'])} objects"
            )
        return lines

    def markdown(self) -> str:
        rows = [
            "| sequence | J | F | J&F | ID switches | counts (predicted/true) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, s in self.sequences.items():
            counts = ", ".join(f"{c} {p}/{t}" for c, (p, t) in s.get("counts", {}).items())
            cells = [f"{s[k]:.4f}" if k in s else "-" for k in ("J", "F", "J&F")]
            rows.append(
                f"| {name} | {' | '.join(cells)} | {s.get('id_switches', '-')} | {counts or '-'} |"
            )
        return (
            "\n".join(["# Video evaluation", "", *[f"- {x}" for x in self.summary()], "", *rows])
            + "\n"
        )

    def write(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "video_report.json", out / "video_report.md"]
        paths[0].write_text(self.to_json())
        paths[1].write_text(self.markdown())
        return paths


def _semi(sequence: VideoSequence, propagator: Any) -> tuple[dict[str, Any], int]:
    first = sequence.labels(0)
    if first is None:
        raise ValueError(f"sequence {sequence.name!r}: the first frame has no annotation")
    ids = [int(i) for i in np.unique(first) if i not in (0, 255)]
    propagator.reset()
    scores_j: dict[int, list[float]] = defaultdict(list)
    scores_f: dict[int, list[float]] = defaultdict(list)
    n = len(sequence)
    for t in range(n):
        image = sequence.image(t)
        out = propagator.propagate(t, image)
        if t == 0:
            out = propagator.add(0, ids, np.stack([first == i for i in ids]))
            continue
        labels = sequence.labels(t)
        if labels is None or t == n - 1:  # DAVIS scores neither the first nor the last frame
            continue
        predicted = {int(i): m for i, m in zip(out.ids, out.masks)}
        for i in ids:
            pred = predicted.get(i, np.zeros(labels.shape, bool))
            gt = labels == i
            scores_j[i].append(float(mask_iou(pred, gt)[0]))
            scores_f[i].append(boundary_f(pred, gt))
    per_object_j = [float(np.mean(v)) for v in scores_j.values() if v]
    per_object_f = [float(np.mean(v)) for v in scores_f.values() if v]
    result: dict[str, Any] = {"objects": len(ids)}
    if per_object_j:
        result["J"] = float(np.mean(per_object_j))
        result["F"] = float(np.mean(per_object_f))
        result["J&F"] = (result["J"] + result["F"]) / 2
        result["_per_object"] = (per_object_j, per_object_f)
    return result, n


def _text(sequence: VideoSequence, tracker: Any) -> tuple[dict[str, Any], int]:
    classes = sorted(set(sequence.categories.values()))
    if not classes:
        raise ValueError(f"sequence {sequence.name!r}: meta.json names no categories")
    final_class: dict[int, str] = {}
    matches: list[dict[int, int]] = []
    source = (sequence.image(t) for t in range(len(sequence)))
    for t, result in enumerate(tracker.track(source, classes)):
        if result.error is not None:
            continue
        dets = result.detections
        for tid, name in zip(dets.tracker_id, dets.data[CLASS_NAME]):
            final_class[int(tid)] = str(name)
        labels = sequence.labels(t)
        if labels is None:
            continue
        gt = {int(i): labels == i for i in np.unique(labels) if i not in (0, 255)}
        pred = {int(i): m for i, m in zip(dets.tracker_id, dets.mask)}
        matches.append(_match(gt, pred, 0.5))
    objects = sequence.object_ids()
    true_counts = defaultdict(int)
    for i in objects:
        if i in sequence.categories:
            true_counts[sequence.categories[i]] += 1
    predicted = defaultdict(int)
    for name in final_class.values():
        predicted[name] += 1
    counts = {c: [int(predicted.get(c, 0)), int(true_counts.get(c, 0))] for c in classes}
    return {
        "counts": counts,
        "id_switches": id_switches(matches),
        "tracks": len(final_class),
        "objects": len(objects),
    }, len(sequence)


def evaluate_video(
    sequences: Sequence[VideoSequence] | str | Path,
    *,
    propagator: Any = None,
    tracker: Any = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> VideoReport:
    """Run the semi-supervised part (with ``propagator``) and the text part (with ``tracker``)
    on DAVIS-layout sequences (see the module docstring).

    Args:
        sequences: Loaded sequences, or the dataset folder (:func:`load_davis` defaults).
        propagator: A :class:`~textseg.video.MaskPropagator` (e.g. ``Sam2Propagator(core)``):
            the ``semi`` part; None skips it.
        tracker: A :class:`~textseg.video.Tracker`: the ``text`` part on sequences whose
            ``meta.json`` names categories; None skips it.
        out_dir: Write ``video_report.json`` and ``video_report.md`` there.
        progress: Show a progress bar over sequences.

    Raises:
        ValueError: Neither part requested, or the text part on data without categories.
    """
    if propagator is None and tracker is None:
        raise ValueError("evaluate_video: give a propagator (semi) and/or a tracker (text)")
    if not isinstance(sequences, (list, tuple)):
        sequences = load_davis(sequences)
    if tracker is not None and not any(s.categories for s in sequences):
        raise ValueError(
            "the text part needs object categories: add a meta.json (YouTube-VOS style) "
            "naming each object's category"
        )
    report = VideoReport()
    start = time.perf_counter()
    frames = {"semi": 0, "text": 0}
    seconds = {"semi": 0.0, "text": 0.0}
    objects_j: list[float] = []
    objects_f: list[float] = []
    count_errors: list[int] = []
    switches = tracks = n_objects = 0
    iterator: Any = sequences
    if progress:
        from tqdm import tqdm

        iterator = tqdm(sequences, unit="seq")
    for sequence in iterator:
        entry: dict[str, Any] = {}
        if propagator is not None:
            t = time.perf_counter()
            result, n = _semi(sequence, propagator)
            seconds["semi"] += time.perf_counter() - t
            frames["semi"] += n
            per_object = result.pop("_per_object", None)
            if per_object is not None:
                objects_j += per_object[0]
                objects_f += per_object[1]
            entry.update(result)
        if tracker is not None and sequence.categories:
            t = time.perf_counter()
            result, n = _text(sequence, tracker)
            seconds["text"] += time.perf_counter() - t
            frames["text"] += n
            count_errors += [abs(p - g) for p, g in result["counts"].values()]
            switches += result["id_switches"]
            tracks += result["tracks"]
            n_objects += result["objects"]
            entry.update(result)
        report.sequences[sequence.name] = entry
    if objects_j:
        report.metrics["J"] = float(np.mean(objects_j))
        report.metrics["F"] = float(np.mean(objects_f))
        report.metrics["J&F"] = (report.metrics["J"] + report.metrics["F"]) / 2
    if count_errors:
        report.metrics["count_mae"] = float(np.mean(count_errors))
        report.metrics["id_switches"] = float(switches)
        report.metrics["tracks"] = float(tracks)
        report.metrics["objects"] = float(n_objects)
    report.timings["wall_s"] = time.perf_counter() - start
    for part in ("semi", "text"):
        if frames[part] and seconds[part] > 0:
            report.timings[f"{part}_fps"] = frames[part] / seconds[part]
    if out_dir is not None:
        report.write(out_dir)
    return report
