"""``textseg track VIDEO -c car -c person --out DIR``: track named objects through a video
(:class:`textseg.video.Tracker`), and the video part of ``textseg eval`` (:func:`run_video_eval`).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from textseg.cli._common import CliError, add_pipeline_args, arg_type, build_segmenter, vocabulary
from textseg.validators import non_negative_int, positive_fraction, positive_int

__all__ = ["DEFAULT_SAM", "add_parser", "models", "run", "run_video_eval"]

#: The SAM 2 model tracking uses unless --sam says otherwise (its image predictor also cuts
#: the keyframe masks).
DEFAULT_SAM = "sam2.1-hiera-base-plus"


def _time(text: str | None, fps: float | None, option: str) -> int | None:
    """``--start 120`` (frames) or ``--start 4.5s`` (seconds) as a frame index."""
    if text is None:
        return None
    value = text.strip().lower()
    try:
        if value.endswith("s"):
            if not fps:
                raise CliError(f"{option} {text}: the video has no frame rate; give frames")
            seconds = float(value[:-1])
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError
            return round(seconds * fps)
        frames = int(value)
        if frames < 0:
            raise ValueError
        return frames
    except ValueError:
        raise CliError(
            f"{option} expects a frame index (120) or seconds (4.5s), got {text!r}"
        ) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``track`` subcommand to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "track",
        help="track named objects through a video: tracks.json, counts.csv, annotated.mp4",
        description=(
            "Track every instance of the classes through a video: the preset's pipeline finds "
            "them on keyframes (every N frames and on scene cuts), SAM 2 propagates them in "
            "between with its memory, ids are kept by mask overlap. Writes DIR/tracks.json "
            "(COCO video style, RLE masks), DIR/counts.csv (distinct objects per class and "
            "per-frame counts), DIR/annotated.mp4 and, with --format mot, DIR/mot.txt. A "
            "frame that cannot be decoded is reported and skipped."
        ),
    )
    p.add_argument("video", metavar="VIDEO", help="video file (mp4, avi, webm...) or frame folder")
    add_pipeline_args(p)
    p.set_defaults(sam=None)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--every",
        type=arg_type(non_negative_int),
        default=10,
        metavar="N",
        help="run the pipeline every N frames (default 10; 0: first frame and scene cuts only)",
    )
    p.add_argument(
        "--redetect",
        type=arg_type(positive_fraction, float),
        default=None,
        metavar="S",
        help="also run it on the frame after a tracked object's SAM 2 object score fell below "
        "S (0 < S <= 1; e.g. 0.5); at most once every --redetect-gap frames",
    )
    p.add_argument(
        "--redetect-gap",
        type=arg_type(positive_int),
        default=3,
        metavar="N",
        help="frames at least between a keyframe and a re-detection (default 3)",
    )
    p.add_argument(
        "--scene-cut",
        type=float,
        default=0.5,
        metavar="D",
        help="histogram distance that starts a new shot (default 0.5)",
    )
    p.add_argument("--no-scene-cut", action="store_true", help="no scene-cut detection")
    p.add_argument(
        "--patience",
        type=int,
        default=15,
        metavar="N",
        help="frames an object may stay unseen before its track ends (default 15)",
    )
    p.add_argument(
        "--memory-frames",
        type=arg_type(non_negative_int),
        default=None,
        metavar="N",
        help="past mask memories SAM 2 reads per object (default: all 6, exact); fewer is "
        "faster and changes the masks (recorded in tracks.json)",
    )
    p.add_argument(
        "--memory-stride",
        type=arg_type(positive_int),
        default=None,
        metavar="S",
        help="read SAM 2's mask memories at 1/S resolution (default 1, exact); 2 is faster and "
        "changes the masks (recorded in tracks.json)",
    )
    p.add_argument("--start", default=None, help="first frame: index (120) or seconds (4.5s)")
    p.add_argument("--end", default=None, help="stop before this frame: index or seconds")
    p.add_argument(
        "--format",
        action="append",
        choices=("coco", "mot", "mots", "ytvis"),
        default=[],
        help="also write: mot (MOTChallenge boxes, DIR/mot.txt), mots (MOTS 2020 masks, "
        "DIR/mots.txt), ytvis (YouTube-VIS, DIR/ytvis.json); repeatable (tracks.json, COCO/TAO "
        "style, is always written)",
    )
    p.add_argument(
        "--coco",
        default=None,
        metavar="GT.json",
        help="a COCO file whose category ids (and, without -c, classes) tracks.json uses",
    )
    p.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what an earlier `textseg track` wrote in DIR",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _segmenter(args: argparse.Namespace) -> Any:
    """The keyframe pipeline, built under --seed; SAM 2 by default (it also propagates),
    none with --specialist (the specialist replaces the preset's SAM)."""
    if getattr(args, "specialist", None):
        return build_segmenter(argparse.Namespace(**{**vars(args), "sam": None}))
    return build_segmenter(args, sam=args.sam or DEFAULT_SAM)


def _propagator(args: argparse.Namespace, segmenter: Any) -> Any:
    """SAM 2 propagation: over the pipeline's core, or (a specialist has none) its own."""
    import torch

    from textseg.video import Sam2Propagator

    trades = {
        "memory_frames": getattr(args, "memory_frames", None),
        "memory_stride": getattr(args, "memory_stride", None) or 1,
    }
    if getattr(segmenter, "sam", None) is not None:
        return Sam2Propagator(segmenter.sam, **trades)
    from textseg._registry import test_variant
    from textseg.sam import SamCore

    name = args.sam or DEFAULT_SAM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        core = SamCore(test_variant(name) if args.tiny else name, device=args.device)
    return Sam2Propagator(core, **trades)


#: The preset tracked by SAM 3's own video model (detector and tracker in one session) rather
#: than by keyframe detection + SAM 2 propagation.
SAM3_VIDEO_PRESET = "sam3"
SAM3_VIDEO_MODEL = "sam3-video"


def _sam3_video(args: argparse.Namespace) -> bool:
    return args.preset == SAM3_VIDEO_PRESET and not getattr(args, "specialist", None)


def _sam3_video_tracker(args: argparse.Namespace) -> Any:
    """``--preset sam3``: SAM 3's video model, every class in one session (built under --seed)."""
    import torch

    from textseg.prompters.sam3 import Exemplar
    from textseg.video.sam3_video import Sam3VideoTracker

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return Sam3VideoTracker(
            models(args)["sam3_video"],
            device=args.device,
            dtype=args.dtype,
            exemplars=[Exemplar.parse(text) for text in getattr(args, "exemplar", None) or ()],
            patience=args.patience,
            min_area=getattr(args, "min_area", 0),
        )


def _tracker(args: argparse.Namespace) -> Any:
    from textseg.video import Tracker

    if _sam3_video(args):
        return _sam3_video_tracker(args)
    segmenter = _segmenter(args)
    return Tracker(
        segmenter,
        _propagator(args, segmenter),
        every=args.every,
        redetect=args.redetect,
        redetect_gap=args.redetect_gap,
        scene_cut=None if args.no_scene_cut else args.scene_cut,
        patience=args.patience,
    )


def models(args: argparse.Namespace) -> dict[str, Any]:
    """The registry names of the models a run uses (``tracks.json`` ``info.models``)."""
    from textseg._registry import test_variant
    from textseg.pipelines.presets import get_preset

    preset = get_preset(args.preset)
    tiny = bool(args.tiny or preset.tiny)

    def name(value: str | None) -> str | None:
        return test_variant(value) if value and tiny else value

    out: dict[str, Any] = {"preset": preset.name, "tiny": tiny}
    if _sam3_video(args):
        out["sam3_video"] = name(SAM3_VIDEO_MODEL)
        return out
    sam = name(args.sam or DEFAULT_SAM)
    if getattr(args, "specialist", None):
        out["specialist"] = str(args.specialist)
    else:
        if preset.prompter in ("boxes", "sam3"):
            out["detector"] = name(args.detector or preset.detector)
        out["sam"] = sam
        if preset.labeler:
            out["labeler"] = f"clip-{preset.labeler}"
        if preset.labeler or preset.selector or preset.prompter.startswith("clip"):
            out["clip"] = name(args.clip or preset.clip)
    out["propagator"] = f"sam2:{sam}"
    for trade in ("memory_frames", "memory_stride"):  # opt-in trades: not SAM 2's exact masks
        if getattr(args, trade, None) is not None:
            out[trade] = getattr(args, trade)
    return out


def _classes(args: argparse.Namespace) -> tuple[Any, list[int] | None]:
    """The vocabulary and, with --coco, the ground truth's category id of each class."""
    if not args.coco:
        return vocabulary(args), None
    from textseg.io.coco import GroundTruth

    gt = GroundTruth(args.coco)
    vocab = vocabulary(args, ground_truth=gt)
    return vocab, gt.classes(vocab.names)[1]


def _range(args: argparse.Namespace, probe: Any) -> tuple[int, int | None]:
    start = _time(args.start, probe.fps, "--start") or 0
    end = _time(args.end, probe.fps, "--end")
    total = probe.num_frames
    if total is not None and start >= total:
        raise CliError(
            f"--start {args.start}: past the end of the video ({total} frames, 0..{total - 1})"
        )
    if end is not None and end <= start:
        raise CliError(f"--end ({end}) must be after --start ({start})")
    return start, end


def _refuse_foreign(out: Path) -> None:
    """Refuse a folder without a manifest that holds files named like track's but no
    ``tracks.json`` (e.g. ``counts.csv`` of a ``textseg segment`` from before manifests):
    they are another command's, and --overwrite must not delete them."""
    from textseg.io.folder import read_manifest
    from textseg.video.export import OWNED

    if not out.is_dir() or read_manifest(out) is not None or (out / "tracks.json").exists():
        return
    clash = [name for name in OWNED if (out / name).exists()]
    if clash:
        raise CliError(
            f"{out} holds {', '.join(clash)} that `textseg track` did not write (no "
            f"tracks.json); `textseg track` will not write into it: choose another --out"
        )


def run(args: argparse.Namespace) -> int:
    """Run ``textseg track``; prints the distinct counts and the files written.

    Exit status 130 after Ctrl-C: what was tracked until then is written, marked incomplete.

    Raises:
        CliError: No classes, a bad --start/--end, a SAM 2 trade with --preset sam3.
        OutputFolderError: --out holds another command's output, or results without
            --overwrite.
        FileNotFoundError, ValueError: Missing or unreadable video, no decodable frame.
    """
    from tqdm import tqdm

    from textseg.io.folder import claim_output, written
    from textseg.video import open_video
    from textseg.video.export import OWNED, TrackWriter

    if _sam3_video(args):
        for flag in ("memory_frames", "memory_stride"):
            if getattr(args, flag, None) is not None:
                raise CliError(
                    f"--{flag.replace('_', '-')}: expected SAM 2 propagation (a preset other "
                    f"than {SAM3_VIDEO_PRESET}), got --preset {SAM3_VIDEO_PRESET}, whose video "
                    f"model reads its own memory"
                )
    vocab, category_ids = _classes(args)
    probe = open_video(args.video)
    start, end = _range(args, probe)
    source = open_video(args.video, start=start, end=end)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    formats = [f for f in dict.fromkeys(args.format) if f != "coco"]
    used = models(args)
    _refuse_foreign(out)
    annotated = not args.no_video
    skipped = 0
    complete = True
    interrupted = False
    live: set[int] = set()
    with claim_output(
        out,
        "track",
        owned=OWNED,
        mode="overwrite" if args.overwrite else "new",
        hint="pass --overwrite to replace them",
        info={"models": used},
    ) as folder:
        written("manifest")
        tracker = _tracker(args)
        writer = TrackWriter(
            out,
            vocab.names,
            video_name=Path(args.video).name,
            fps=source.fps,
            annotated=annotated,
            formats=formats,
            overwrite=True,  # the claim decided
            category_ids=category_ids,
            info={"models": used, "seed": args.seed, "keyframes": tracker.keyframe_info()},
        )
        bar = tqdm(
            total=source.num_frames,
            unit="frame",
            file=sys.stderr,
            disable=args.no_progress,
            dynamic_ncols=True,
        )
        try:
            for result in tracker.track(source, vocab, with_images=annotated):
                if result.error is not None:
                    skipped += 1
                    if result.fatal:
                        complete = False
                        bar.write(
                            f"textseg: warning: {result.error}; writing the "
                            f"{writer.frames} frames tracked so far, marked incomplete",
                            file=sys.stderr,
                        )
                    else:
                        bar.write(f"textseg: warning: skipped {result.error}", file=sys.stderr)
                else:
                    live = (live | set(result.detections.tracker_id.tolist())) - set(
                        result.ended_tracks
                    )
                writer.write(result, result.image)
                bar.update(1)
                bar.set_postfix(tracks=len(live), refresh=False)
        except KeyboardInterrupt:
            interrupted, complete = True, False
            if writer.frames == 0:
                writer.abort()
                raise
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        placed = writer.close(complete=complete)
        folder.update(complete=complete, formats=["coco", *formats])
        written("complete")
    import csv

    with open(placed["counts"], encoding="utf-8") as f:
        distinct = {r["class"]: r["count"] for r in csv.DictReader(f) if r["scope"] == "distinct"}
    print(
        f"{Path(args.video).name}: {writer.frames} frames tracked"
        + (f", {skipped} skipped" if skipped else "")
        + ("" if complete else " (incomplete)")
        + "; distinct objects: "
        + ", ".join(f"{name} {count}" for name, count in distinct.items())
    )
    print(f"wrote {', '.join(sorted(p.name for p in placed.values()))} to {out}")
    if interrupted:
        print(
            "textseg: warning: interrupted; what was tracked is written, marked incomplete",
            file=sys.stderr,
        )
        return 130
    return 0


def run_video_eval(args: argparse.Namespace) -> int:
    """``textseg eval DAVIS_ROOT --protocols video``: J, F, J&F from first-frame masks and,
    when meta.json names categories, distinct-count error and ID switches from the class
    names (:func:`textseg.eval.video.evaluate_video`)."""
    import torch

    from textseg.eval.video import evaluate_video, load_davis
    from textseg.video import Sam2Propagator, Tracker

    sequences = load_davis(args.dataset, max_sequences=getattr(args, "max_images", None))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(getattr(args, "seed", 0))
        segmenter = _segmenter(args)
        propagator = Sam2Propagator(segmenter.sam)
        tracker = None
        if any(s.categories for s in sequences):
            tracker = Tracker(segmenter, propagator)
        report = evaluate_video(
            sequences,
            propagator=propagator,
            tracker=tracker,
            out_dir=args.out,
            progress=not args.no_progress,
        )
    print(f"{args.dataset}: {len(sequences)} sequences, {report.timings['wall_s']:.1f} s")
    for line in report.summary():
        print(f"  {line}")
    print(f"wrote video_report.json, video_report.md to {args.out}")
    return 0
