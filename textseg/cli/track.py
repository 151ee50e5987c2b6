"""``textseg track VIDEO -c car -c person --out DIR``: track named objects through a video
(:class:`textseg.video.Tracker`), and the video part of ``textseg eval`` (:func:`run_video_eval`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from textseg.cli._common import CliError, add_pipeline_args, preset_options, vocabulary

__all__ = ["DEFAULT_SAM", "add_parser", "run", "run_video_eval"]

#: The SAM 2 model tracking uses unless --sam says otherwise (its image predictor also cuts
#: the keyframe masks).
DEFAULT_SAM = "sam2.1-hiera-base-plus"


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


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
            if seconds < 0:
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
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="run the pipeline every N frames (default 10; 0: first frame and scene cuts only)",
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
    p.add_argument("--start", default=None, help="first frame: index (120) or seconds (4.5s)")
    p.add_argument("--end", default=None, help="stop before this frame: index or seconds")
    p.add_argument(
        "--format",
        choices=("coco", "mot"),
        default="coco",
        help="mot: also write MOTChallenge text (DIR/mot.txt)",
    )
    p.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    p.add_argument("--overwrite", action="store_true", help="replace files in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _segmenter(args: argparse.Namespace) -> Any:
    from textseg.pipelines import TextSegmenter

    options = preset_options(args)
    options.setdefault("sam", DEFAULT_SAM)
    return TextSegmenter.from_preset(args.preset, device=args.device, **options)


def _tracker(args: argparse.Namespace) -> Any:
    from textseg.video import Tracker

    return Tracker(
        _segmenter(args),
        every=args.every,
        scene_cut=None if args.no_scene_cut else args.scene_cut,
        patience=args.patience,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``textseg track``; prints the distinct counts and the files written.

    Raises:
        CliError: No classes, a bad --start/--end.
        FileNotFoundError, ValueError: Missing or unreadable video, no decodable frame.
    """
    from tqdm import tqdm

    from textseg.video import open_video
    from textseg.video.export import TrackWriter

    vocab = vocabulary(args)
    probe = open_video(args.video)
    start = _time(args.start, probe.fps, "--start") or 0
    end = _time(args.end, probe.fps, "--end")
    if end is not None and end <= start:
        raise CliError(f"--end ({end}) must be after --start ({start})")
    source = open_video(args.video, start=start, end=end)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    tracker = _tracker(args)
    annotated = not args.no_video
    skipped = 0
    live: set[int] = set()
    with TrackWriter(
        out,
        vocab.names,
        video_name=Path(args.video).name,
        fps=source.fps,
        annotated=annotated,
        mot=args.format == "mot",
        overwrite=args.overwrite,
    ) as writer:
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
                    bar.write(f"textseg: warning: skipped {result.error}", file=sys.stderr)
                else:
                    live = (live | set(result.detections.tracker_id.tolist())) - set(
                        result.ended_tracks
                    )
                writer.write(result, result.image)
                bar.update(1)
                bar.set_postfix(tracks=len(live), refresh=False)
        finally:
            bar.close()
    written = {"tracks.json", "counts.csv", *(["annotated.mp4"] if annotated else [])}
    if args.format == "mot":
        written.add("mot.txt")
    import csv

    with open(out / "counts.csv", encoding="utf-8") as f:
        distinct = {r["class"]: r["count"] for r in csv.DictReader(f) if r["scope"] == "distinct"}
    frames = writer.frames
    print(
        f"{Path(args.video).name}: {frames} frames tracked"
        + (f", {skipped} skipped" if skipped else "")
        + "; distinct objects: "
        + ", ".join(f"{name} {count}" for name, count in distinct.items())
    )
    print(f"wrote {', '.join(sorted(written))} to {out}")
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
