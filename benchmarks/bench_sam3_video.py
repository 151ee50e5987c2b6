"""SAM 3 video with many classes: textseg's one session vs transformers' loop once per class.

    python benchmarks/bench_sam3_video.py [--classes 5] [--frames 4] [--image-size 1008]
                                          [--long 200] [--long-reference 1000] [--skip-short]
                                          [--tiny] [--max-objects N] [--loop-tracker]

Both sides run in this process on the same synthetic clip (a pan over a coco-dev photo of
trucks and people) with the same random weights of SAM 3's video model at its real size
(``sam3-video``, ~860M parameters; the gated checkpoint cannot be downloaded here), one model
in memory:

- textseg: :class:`textseg.video.sam3_video.Sam3VideoTracker`: every class a text prompt of one
  streaming session (one ViT pass per frame, the detector per prompt, one tracker), pruned.
- reference: transformers' documented streaming loop (``Sam3VideoProcessor.init_video_session``,
  ``add_text_prompt``, ``Sam3VideoModel(inference_session=..., frame=...)``,
  ``postprocess_outputs``) run once per class, as one would to get each class's objects.

Random weights detect nothing, so both sides run with the same nudge as the tests (presence
and tracker object scores pushed up, query scores spread): objects are found and tracked and
the tracker's cost is in the numbers. Agreement: per class and frame, the masks of both sides
matched both ways (the smallest best-match IoU; 1.0: the same masks) and the same counts.

``--image-size`` runs the same weights at a smaller input (the ViT tiles its position
embeddings; the tracker's feature sizes follow), for machines where 1008 px takes too long.
``--long N`` also tracks N frames with the tiny model and prints the session's size and the
process's peak RSS along the way, textseg's pruned session beside transformers' own.

Prints Markdown tables and the machine. A one-frame warm-up per side is not counted.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from _common import DATA, RssSampler, machine, match_iou, table

#: COCO names; the first N are asked for (trucks and people are in the clip).
CLASSES = ("truck", "person", "car", "backpack", "traffic light", "dog", "bus", "bicycle")


def _net(image_size: int | None, tiny: bool) -> Any:
    from textseg._hub import create_model
    from textseg._registry import get_model_cfg

    cfg = get_model_cfg("sam3-video-tiny-test" if tiny else "sam3-video", "sam3-video")
    if image_size and image_size != cfg.arch["vision"]["image_size"]:
        vision = {**cfg.arch["vision"], "image_size": image_size}
        cfg = replace(cfg, arch={**cfg.arch, "vision": vision})
    torch.manual_seed(0)
    net = create_model(cfg, pretrained=False)
    with torch.no_grad():
        det = net.model.detector_model
        det.dot_product_scoring.query_proj.weight.mul_(8.0)
        det.detr_decoder.presence_head.layer3.bias.fill_(10.0)
        net.model.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    return net


def _frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    from textseg.video.synthetic import from_coco

    clip = from_coco(
        DATA / "coco-dev" / "annotations.json",
        "000000000257.jpg",
        num_frames=n,
        min_area=400,
        size=size,
    )
    return list(clip)


def _processor(net: Any) -> Any:
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3VideoProcessor

    size = {"height": net.image_size, "width": net.image_size}
    return Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
        tokenizer=net.tokenizer,
    )


def _reference_class(net: Any, frames: list[np.ndarray], text: str, sizes: list | None = None):
    """transformers' documented streaming loop for one prompt: per frame the non-empty masks."""
    from textseg.video.sam3_video import session_bytes

    processor = _processor(net)
    session = processor.init_video_session(inference_device="cpu")
    processor.add_text_prompt(session, text)
    out = []
    for frame in frames:
        inputs = processor(images=frame, return_tensors="pt")
        outputs = net.model(inference_session=session, frame=inputs.pixel_values[0])
        post = processor.postprocess_outputs(session, outputs, original_sizes=inputs.original_sizes)
        masks = post["masks"].numpy()
        out.append(masks[masks.reshape(len(masks), -1).any(1)] if len(masks) else masks)
        if sizes is not None:
            sizes.append(session_bytes(session))
    return out


def _reference(net: Any, frames: list[np.ndarray], classes: list[str]) -> dict[str, list]:
    return {c: _reference_class(net, frames, c) for c in classes}


def _textseg(
    net: Any,
    frames: list[np.ndarray],
    classes: list[str],
    batched: bool = True,
    tracker_seconds: list[float] | None = None,
) -> dict[str, list]:
    """textseg's one session; ``tracker_seconds`` collects the time of each tracker
    propagation step (SAM 3's ``run_tracker_propagation``, batched or transformers' own)."""
    from textseg.fields import CLASS_NAME
    from textseg.video.sam3_video import Sam3VideoTracker

    tracker = Sam3VideoTracker(net, batched=batched)
    if tracker_seconds is not None:
        step = tracker._propagate if batched else net.model.run_tracker_propagation

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = step(*args, **kwargs)
            tracker_seconds.append(time.perf_counter() - start)
            return out

        if batched:
            tracker._propagate = timed
        else:
            net.model.run_tracker_propagation = timed
    out: dict[str, list] = {c: [] for c in classes}
    try:
        for result in tracker.track(frames, classes):
            dets = result.detections
            for c in classes:
                out[c].append(dets.mask[dets.data[CLASS_NAME] == c])
    finally:
        net.model.__dict__.pop("run_tracker_propagation", None)
    return out


def _timed(fn) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _long(frames: int, reference_frames: int) -> str:
    """Session size and peak RSS over ``frames`` tiny frames, textseg beside transformers (over
    its first ``reference_frames``: its session grows, and measuring it costs time that grows
    with it)."""
    from textseg.video.sam3_video import Sam3VideoTracker, session_bytes

    net = _net(None, tiny=True)
    net.model.max_num_objects = 3  # a fixed set of objects: what grows is per-frame state
    clip = _frames(8, (96, 128))
    still = [clip[0]] * frames
    reference_frames = min(reference_frames, frames)
    marks = sorted({reference_frames // 2, reference_frames - 1, frames // 2, frames - 1})
    rows = []
    tracker = Sam3VideoTracker(net)
    ours: list[int] = []
    with RssSampler() as rss_ours:
        for _ in tracker.track(still, ["truck"]):
            ours.append(session_bytes(tracker.session))
    theirs: list[int] = []
    with RssSampler() as rss_theirs:
        _reference_class(net, still[:reference_frames], "truck", theirs)
    for m in marks:
        ref = f"{theirs[m] / 2**20:.2f}" if m < len(theirs) else "(not run)"
        rows.append((f"after frame {m + 1}", f"{ours[m] / 2**20:.2f}", ref))
    rows.append(
        (
            f"process peak RSS (MiB; transformers over {reference_frames} frames)",
            f"{rss_ours.peak:.0f}",
            f"{rss_theirs.peak:.0f}",
        )
    )
    return table(("tiny model, 3 objects", "textseg session MiB", "transformers session MiB"), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--frame-size", default="240x320", help="HxW of the clip's frames")
    parser.add_argument("--long", type=int, default=200, help="frames of the memory run; 0: none")
    parser.add_argument(
        "--long-reference",
        type=int,
        default=1000,
        help="frames of transformers' side of the memory run (at most --long)",
    )
    parser.add_argument("--skip-short", action="store_true", help="only the memory run (--long)")
    parser.add_argument("--tiny", action="store_true", help="the tiny model (a smoke run)")
    parser.add_argument(
        "--det-threshold",
        type=float,
        default=None,
        help="detection and new-object score threshold of both sides (SAM 3's default 0.5): "
        "fewer random-weight objects, the same on both sides",
    )
    parser.add_argument(
        "--max-objects",
        type=int,
        default=None,
        help="objects per class: each per-class session keeps at most N, textseg's one session "
        "N x classes (random weights find hundreds, and at 1008 px their tracker memory "
        "exhausts 24 GB)",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip transformers' per-class loop"
    )
    parser.add_argument(
        "--loop-tracker",
        action="store_true",
        help="also time textseg's session with transformers' per-object tracker step "
        "(batched=False): what batching the tracker saves",
    )
    args = parser.parse_args()
    if args.skip_short:
        print(_long(args.long, args.long_reference))
        print()
        print(f"machine: {machine()}")
        return
    h, w = (int(v) for v in args.frame_size.split("x"))
    classes = list(CLASSES[: args.classes])
    net = _net(args.image_size, args.tiny)
    frames = _frames(args.frames, (h, w))
    if args.det_threshold is not None:
        net.model.score_threshold_detection = args.det_threshold
        net.model.new_det_thresh = max(net.model.new_det_thresh, args.det_threshold)
    with torch.inference_mode():
        cap = net.model.max_num_objects
        if args.max_objects:
            net.model.max_num_objects = args.max_objects * len(classes)
        _textseg(net, frames[:1], classes)  # warm-up
        if not args.no_reference:
            _reference(net, frames[:1], classes[:1])
        steps_ours: list[float] = []
        steps_loop: list[float] = []
        t_ours, ours = _timed(lambda: _textseg(net, frames, classes, True, steps_ours))
        t_loop = loop = None
        if args.loop_tracker:
            t_loop, loop = _timed(lambda: _textseg(net, frames, classes, False, steps_loop))
        if args.max_objects:
            net.model.max_num_objects = args.max_objects
        t_ref, ref = (None, None)
        if not args.no_reference:
            t_ref, ref = _timed(lambda: _reference(net, frames, classes))
        net.model.max_num_objects = cap
    found = sum(len(a) for c in classes for a in ours[c])
    n = len(frames)
    print(
        f"SAM 3 video, {len(classes)} classes, {n} frames of {h}x{w}, model input "
        f"{net.image_size} px ({'tiny' if args.tiny else 'real size'}, random weights); "
        f"{found} instances reported over the clip"
        + (f"; at most {args.max_objects} objects per class" if args.max_objects else "")
        + (f"; detection threshold {args.det_threshold}" if args.det_threshold else "")
    )
    print()
    rows = [("textseg, one session", f"{t_ours:.1f}", f"{t_ours / n:.2f}", "1.00x")]
    if t_ref is not None:
        slower = f"{t_ref / t_ours:.2f}x slower"
        rows.insert(
            0, ("transformers' loop, once per class", f"{t_ref:.1f}", f"{t_ref / n:.2f}", slower)
        )
    if t_loop is not None:
        slower = f"{t_loop / t_ours:.2f}x slower"
        name = "textseg, one session, transformers' per-object tracker step"
        rows.append((name, f"{t_loop:.1f}", f"{t_loop / n:.2f}", slower))
    print(table(("side", "seconds", "s / frame", "vs textseg"), rows))
    print()
    if ref is not None:
        pairs = [(a, b) for c in classes for a, b in zip(ours[c], ref[c], strict=True)]
        agree = min(match_iou(a, b) for a, b in pairs)
        counts = all(len(a) == len(b) for a, b in pairs)
        print(
            f"agreement: smallest matched mask IoU {agree:.4f}; same counts every frame: {counts}"
        )
        if args.max_objects:
            print(
                "(with --max-objects the sides keep different objects: the one session's cap "
                "is shared by all classes, filled by the most confident detections of any "
                "class, where each per-class session keeps its own N)"
            )
    if loop is not None:
        same = min(match_iou(a, b) for c in classes for a, b in zip(ours[c], loop[c], strict=True))
        print(f"batched vs per-object tracker step: smallest matched mask IoU {same:.4f}")
        print(
            f"tracker propagation steps: batched {sum(steps_ours):.1f} s, transformers' "
            f"per-object {sum(steps_loop):.1f} s over {len(steps_loop)} frames "
            f"({sum(steps_loop) / max(sum(steps_ours), 1e-9):.2f}x)"
        )
    if args.long:
        print()
        print(_long(args.long, args.long_reference))
    print()
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
