"""Video: textseg's tracker vs the Grounded-SAM-2 way, propagation cost vs objects, memory.

    python benchmarks/bench_video.py [--parts a,b,c,d] [--frames 10] [--objects 4] [--every 5]
        [--sam sam2.1-hiera-tiny] [--scaling 1,8,32] [--scaling-frames 3] [--memory-frames 2]
        [--memory-stride 2]
        [--rss 100,1000,5000] [--rss-bare 100,1000]
        [--loop-models edgetam,sam2.1-hiera-tiny] [--loop-objects 8] [--loop-frames 3]

All in one run, on the same random weights (the published checkpoints cannot be downloaded
here) and the same clip, a camera panning over a coco-dev photo
(:mod:`textseg.video.synthetic`):

(a) **Tracking throughput.** The Grounded-SAM-2 way, written with the public APIs as its demos
    do: on every frame one Grounding DINO call (transformers, one caption for all classes),
    ``SAM2ImagePredictor.set_image`` and one batched ``predict`` of the top boxes (the official
    ``sam2`` package). textseg: ``Tracker`` with the ``grounded-sam`` preset on the same SAM 2
    weights (official checkpoint, converted): the pipeline on keyframes (every ``--every``
    frames), SAM 2 propagation on every frame. Random weights make detections arbitrary, so
    both sides track the same number of objects: the ``--objects`` best boxes of each frame
    (reference) or of the first keyframe (textseg; later keyframes run the whole pipeline, and
    are timed, but their random detections are not handed on). The object-score head is biased
    so that random-weight SAM 2 keeps its objects visible (as trained weights do).
(b) **Propagation cost per frame vs the number of objects** (``--scaling``): textseg's
    ``Sam2Propagator`` (all objects in one batched step) and the official
    ``SAM2VideoPredictor.propagate_in_video`` (one object at a time), same weights, same
    (JPEG-decoded) frames, objects added on frame 0 from random boxes; the masks' IoU against
    the official ones, the cost of each extra object for both, and the opt-in trades
    ``memory_frames`` (``--memory-frames N``) and ``memory_stride`` (``--memory-stride S``),
    alone and together (``--memory-frames-objects``, ``--memory-frames-frames``), timed once the
    memory window is full, with their masks' IoU against the exact path.
(d) **Batched steps vs transformers' per-object loop** (``--loop-models``, ``--loop-objects``):
    ``Sam2Propagator`` (SAM 2 through ``Sam2Step``, EdgeTAM through ``EdgeTamStep``) against
    the same propagator with ``batched=False`` (transformers' ``_run_single_frame_inference``
    once per object, as ``Sam2VideoModel`` / ``EdgeTamVideoModel`` run it), same random
    weights at the real size, same frames and objects; the masks' IoU between both.
(c) **Peak RSS over long videos** (``--rss``, synthetic 256x256 frames, the tiny SAM 2 so that
    5,000 frames run in minutes; the memory logic is the same at every size): each length in a
    fresh process; textseg's tracker (one object) vs transformers' own streaming loop
    (``Sam2VideoModel(session, frame=...)``), which keeps every frame and every output.

Prints Markdown tables with the ratios measured in this run and the machine line.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from _common import DATA, RssSampler, machine, table

CLASSES = ["truck", "person", "car"]
PHOTO = "000000000257.jpg"


def _clip(frames: int) -> Any:
    from textseg.video.synthetic import from_coco

    return from_coco(
        DATA / "coco-dev" / "annotations.json", PHOTO, num_frames=frames, size=(360, 320)
    )


def _official_checkpoint(name: str, folder: Path) -> tuple[Any, Path]:
    """A random official SAM 2 (object score biased) and its checkpoint file."""
    from textseg._registry import get_model_cfg
    from textseg.sam.modeling.sam2 import build_official_sam2

    torch.manual_seed(0)
    model = build_official_sam2(get_model_cfg(name), video=True)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    path = folder / f"{name}.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, path


# ---------------------------------------------------------------------- (a)
class Stages:
    """Seconds spent in each stage of textseg's tracker, from wrappers and module hooks.

    ``detect``: the detector (the prompter); ``encode_key`` / ``encode_prop``: SAM 2's image
    encoder (any call of ``vision_encoder``) inside the keyframe pipeline / inside
    propagation; ``keyframe``: the whole keyframe pipeline; ``propagate`` / ``add``: the
    propagator's ``propagate`` and ``add`` (new objects' first step).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.seconds: dict[str, float] = {}
        self.phase = "encode_prop"
        self._t0 = 0.0
        self.cuda = torch.device(device).type == "cuda"

    def now(self) -> float:
        """The clock, after the GPU's queued work (stage times on CUDA are otherwise lies)."""
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def wrap(self, key: str, fn: Any, phase: str | None = None) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            before, t = self.phase, self.now()
            if phase is not None:
                self.phase = phase
            try:
                return fn(*args, **kwargs)
            finally:
                self.phase = before
                self.add(key, self.now() - t)

        return timed

    def hook_encoder(self, module: torch.nn.Module) -> None:
        def start(*_: Any) -> None:
            self._t0 = self.now()

        def stop(*_: Any) -> None:
            self.add(self.phase, self.now() - self._t0)

        module.register_forward_pre_hook(start)
        module.register_forward_hook(stop)

    def get(self, key: str) -> float:
        return self.seconds.get(key, 0.0)


class TopBoxes:
    """The prompter's ``k`` best boxes (the reference decodes its ``k`` best too)."""

    def __init__(self, inner: Any, k: int, stages: Stages | None = None) -> None:
        self.inner, self.k, self.stages = inner, k, stages

    def prompts(self, image: Any, classes: Any) -> Any:
        t = self.stages.now() if self.stages is not None else 0.0
        out = self.inner.prompts(image, classes)
        if self.stages is not None:
            self.stages.add("detect", self.stages.now() - t)
        order = np.argsort(-np.asarray(out.confidence), kind="stable")[: self.k]
        return out.select(order)


class FirstKeyframeOnly:
    """Runs the whole pipeline on every keyframe (timed), hands on the ``k`` best detections
    of the first one only (see the module docstring)."""

    def __init__(self, segmenter: Any, k: int) -> None:
        self.inner, self.k, self.sam, self.calls = segmenter, k, segmenter.sam, 0

    def segment(self, image: np.ndarray, classes: Any) -> Any:
        result = self.inner.segment(image, classes)
        self.calls += 1
        dets = result.detections
        if self.calls > 1:
            return SimpleNamespace(detections=dets[np.zeros(len(dets), bool)])
        order = np.argsort(-np.asarray(dets.confidence), kind="stable")[: self.k]
        return SimpleNamespace(detections=dets[order])


class GroundedSam2Reference:
    """Detector + SAM 2 image predictor on every frame, as Grounded-SAM-2's demos."""

    def __init__(self, net: Any, official: Any, box_threshold: float) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

        size = {
            "shortest_edge": net.options["shortest_edge"],
            "longest_edge": net.options["longest_edge"],
        }
        self.processor = GroundingDinoProcessor(
            image_processor=GroundingDinoImageProcessor(size=size), tokenizer=net.tokenizer
        )
        self.model = net.model
        self.device = next(net.model.parameters()).device
        self.predictor = SAM2ImagePredictor(official)
        self.box_threshold = box_threshold

    @torch.inference_mode()
    def frame(self, image: np.ndarray, classes: list[str], k: int) -> tuple[int, dict[str, float]]:
        h, w = image.shape[:2]
        times = {}
        t = time.perf_counter()
        caption = " ".join(f"{c}." for c in classes)
        inputs = self.processor(images=image, text=caption, return_tensors="pt").to(self.device)
        out = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            out, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(h, w)]
        )[0]
        scores = result["scores"].cpu().numpy()
        boxes = result["boxes"].cpu().numpy()[np.argsort(-scores, kind="stable")[:k]]
        times["detect"] = time.perf_counter() - t
        t = time.perf_counter()
        self.predictor.set_image(image)
        times["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        masks = []
        if len(boxes):
            masks, _, _ = self.predictor.predict(box=boxes, multimask_output=False)
        times["decode"] = time.perf_counter() - t
        return len(masks), times


def part_a(args: argparse.Namespace, folder: Path) -> str:
    from textseg.pipelines import TextSegmenter
    from textseg.video import Tracker

    clip = _clip(args.frames)
    frames = list(clip)
    official, checkpoint = _official_checkpoint(args.sam, folder)
    official.to(args.device)
    torch.manual_seed(0)
    seg = TextSegmenter.from_preset(
        "grounded-sam", pretrained=False, sam=args.sam, device=args.device
    )
    # Random detector weights (pretrained=False); the official SAM 2 weights into the core.
    from textseg._hub import load_state_dict, load_strict
    from textseg.sam.modeling.convert_sam2 import to_hf_state_dict

    load_strict(seg.sam.backend.model, to_hf_state_dict(load_state_dict(checkpoint)), args.sam)
    net = seg.prompter.detector.net
    stages = Stages(args.device)
    seg.prompter = TopBoxes(seg.prompter, args.objects, stages)
    # Random-weight masks all look alike: de-duplication would fold the objects into one and
    # leave textseg less work than the reference. Keep every object on both sides.
    seg.dedup_iou, seg.dedup_containment = 1.0, None
    reference = GroundedSam2Reference(net, official, 0.0)

    # Warm-up (not counted): one frame each.
    reference.frame(frames[0], CLASSES, args.objects)
    list(Tracker(FirstKeyframeOnly(seg, args.objects), every=0).track(frames[:2], CLASSES))

    ref_times = {"detect": 0.0, "encode": 0.0, "decode": 0.0}
    ref_objects = []
    start = time.perf_counter()
    for image in frames:
        found, times = reference.frame(image, CLASSES, args.objects)
        ref_objects.append(found)
        for key, value in times.items():
            ref_times[key] += value
    ref_total = time.perf_counter() - start
    print(f"  (a) reference: {ref_total:.1f} s", file=sys.stderr, flush=True)

    # The stages: every SAM 2 image encoding is timed where it happens (keyframe pipeline or
    # propagation), whatever path the propagator takes to the encoder.
    stages.hook_encoder(seg.sam.backend.model.vision_encoder)

    def run_ours(**trades: Any) -> dict[str, Any]:
        """textseg's tracker over the clip; ``trades``: the propagator's opt-in trades."""
        from textseg.video import Sam2Propagator

        tracker = Tracker(
            FirstKeyframeOnly(seg, args.objects),
            Sam2Propagator(seg.sam, **trades),
            every=args.every,
            scene_cut=None,
            patience=10**6,
            duplicate_iou=1.0,
        )
        seg.sam.cache.clear()  # no frame encoded by the warm-up or an earlier run is reused
        tracker.segmenter.segment = stages.wrap("keyframe", tracker.segmenter.segment, "encode_key")
        tracker.propagator.propagate = stages.wrap("propagate", tracker.propagator.propagate)
        tracker.propagator.add = stages.wrap("add", tracker.propagator.add)
        stages.seconds.clear()
        match = 0.0
        live, masks = [], []
        keyframes = 0
        start = time.perf_counter()
        for result in tracker.track(frames, CLASSES):
            match += result.timings["match"] / 1e3
            keyframes += result.keyframe
            live.append(len(tracker.propagator.ids))  # tracked, visible or not
            dets = result.detections
            masks.append(dict(zip(dets.tracker_id.tolist(), dets.mask)))
        total = time.perf_counter() - start
        s = stages.get
        times = {
            "detect": s("detect"),
            "encode": s("encode_key") + s("encode_prop"),
            "decode": s("keyframe") - s("detect") - s("encode_key"),
            "propagate": s("propagate") + s("add") - s("encode_prop"),
            # The tracker's match timing holds the new objects' first SAM 2 step (add),
            # counted under propagation above.
            "match": match - s("add"),
        }
        times["other"] = total - sum(times.values())
        return {
            "times": times,
            "total": total,
            "keyframes": keyframes,
            "live": live,
            "masks": masks,
        }

    exact = run_ours()
    trades = {
        k: v
        for k, v in (
            ("memory_frames", args.a_memory_frames),
            ("memory_stride", args.a_memory_stride),
        )
        if v is not None
    }
    traded = run_ours(**trades) if trades else None
    runs = [exact] + ([traded] if traded else [])
    ours_total = exact["total"]
    n = len(frames)
    ref_times["other"] = ref_total - sum(ref_times.values())

    def ms(seconds: float) -> str:
        return f"{seconds / n * 1e3:.0f}"

    def stage(name: str, key: str | None) -> tuple:
        ref = ms(ref_times[key]) if key in ref_times else "-"
        return (name, ref, *(ms(r["times"][key]) for r in runs))

    rows = [
        stage("detector (Grounding DINO)", "detect"),
        stage("SAM 2 image encoder (reference: set_image)", "encode"),
        stage("SAM 2 mask decoder (textseg: rest of the keyframe pipeline)", "decode"),
        stage(
            "SAM 2 propagation without the encoder (memory attention, decoder, memory encoder)",
            "propagate",
        ),
        stage("matching, bookkeeping", "match"),
        stage("other (results, RLE, loop)", "other"),
        ("**total (ms/frame)**", ms(ref_total), *(ms(r["total"]) for r in runs)),
        ("frames per second", f"{n / ref_total:.3f}", *(f"{n / r['total']:.3f}" for r in runs)),
        ("detector calls", n, *(r["keyframes"] for r in runs)),
        (
            "objects segmented / tracked per frame",
            f"{np.mean(ref_objects):.1f}",
            *(f"{np.mean(r['live']):.1f}" for r in runs),
        ),
    ]
    header = ["stage", "Grounded-SAM-2 way (every frame)", "textseg (keyframes + propagation)"]
    text = (
        f"(a) {n} frames {clip.size[0]}x{clip.size[1]}, {args.sam}, grounding-dino-tiny, "
        f"{args.objects} objects, textseg keyframes every {args.every}; ms per frame, mean "
        f"over the {n} frames\n\n"
    )
    tail = f"\n\nspeed-up (reference / textseg): **{ref_total / ours_total:.2f}x**\n"
    if traded:
        name = ", ".join(f"{k}={v}" for k, v in trades.items())
        header.append(f"textseg, opt-in {name}")
        from textseg.masks import paired_iou

        ious = [
            paired_iou(np.stack([a[i] for i in ids]), np.stack([b[i] for i in ids]))
            for a, b in zip(exact["masks"], traded["masks"])
            if (ids := sorted(set(a) & set(b)))
        ]
        iou = np.concatenate(ious) if ious else np.zeros(0)
        agree = f"{iou.mean():.4f} (min {iou.min():.4f})" if len(iou) else "no common track"
        tail += (
            f"speed-up with the opt-in {name}: **{ref_total / traded['total']:.2f}x**; its masks "
            f"against the exact path's (same track ids, every frame): IoU {agree}\n"
        )
    return text + table(tuple(header), rows) + tail


# ---------------------------------------------------------------------- (b)
def _boxes_to_masks(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    masks = np.zeros((n, h, w), bool)
    for k in range(n):
        x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
        x1, y1 = (
            min(w - 1, x0 + rng.uniform(20, w * 0.3)),
            min(h - 1, y0 + rng.uniform(20, h * 0.3)),
        )
        masks[k, int(y0) : int(y1), int(x0) : int(x1)] = True
    return masks


def _ours(core: Any, frames: list, masks: np.ndarray, timed_from: int = 1, **options: Any):
    """textseg's propagation of ``masks`` (added on frame 0): mean s/frame over the frames from
    ``timed_from`` on, and the ``(n, H, W)`` masks of every frame after 0."""
    from textseg.video import Sam2Propagator

    prop = Sam2Propagator(core, **options)
    prop.propagate(0, frames[0])
    prop.add(0, list(range(1, len(masks) + 1)), masks)
    out, times = [], []
    for t in range(1, len(frames)):
        start = time.perf_counter()
        result = prop.propagate(t, frames[t])
        if t >= timed_from:
            times.append(time.perf_counter() - start)
        out.append(result.masks)
    return float(np.mean(times)), out


def _agreement(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    """Mean and minimum mask IoU of the same objects over the same frames."""
    from textseg.masks import paired_iou

    iou = np.concatenate([paired_iou(x, y) for x, y in zip(a, b)])
    return f"{iou.mean():.4f} (min {iou.min():.4f})"


def part_b(args: argparse.Namespace, folder: Path) -> str:
    from PIL import Image

    from textseg.sam import SamCore

    clip = _clip(max(args.scaling_frames, args.memory_frames_frames) + 1)
    official, checkpoint = _official_checkpoint(args.sam, folder)
    core = SamCore(args.sam, checkpoint=str(checkpoint))
    h, w = clip.size
    frame_dir = folder / "frames"
    frame_dir.mkdir(exist_ok=True)
    frames = []
    for t, image in enumerate(clip):
        # Both sides get the frames the official loader reads (JPEG decoded).
        Image.fromarray(image).save(frame_dir / f"{t:05d}.jpg", quality=95)
        frames.append(np.asarray(Image.open(frame_dir / f"{t:05d}.jpg").convert("RGB")))
    scaling_frames = frames[: args.scaling_frames + 1]
    for t in range(args.scaling_frames + 1, len(frames)):
        (frame_dir / f"{t:05d}.jpg").unlink()  # the official loader reads the whole folder
    rng = np.random.default_rng(0)
    rows, costs = [], {}
    for n in args.scaling:
        masks = _boxes_to_masks(rng, n, h, w)
        ours, our_masks = _ours(core, scaling_frames, masks)
        gc.collect()
        with torch.inference_mode():
            state = official.init_state(str(frame_dir))
            for k in range(n):
                official.add_new_mask(state, 0, k + 1, masks[k])
            times, their_masks = [], []
            last = time.perf_counter()
            for t, _, logits in official.propagate_in_video(state):
                now = time.perf_counter()
                if t > 0:
                    times.append(now - last)
                    their_masks.append((logits[:, 0] > 0).numpy())
                last = now
            theirs = float(np.mean(times))
            del state
        gc.collect()
        costs[n] = (theirs, ours)
        rows.append(
            (
                n,
                f"{theirs * 1e3:.0f}",
                f"{ours * 1e3:.0f}",
                f"{theirs / ours:.2f}x",
                _agreement(our_masks, their_masks),
            )
        )
    text = (
        f"(b) propagation per frame, {args.sam} at {core.image_size}x{core.image_size}, "
        f"{len(scaling_frames) - 1} frames after the prompt (objects added on frame 0)\n\n"
        + table(
            (
                "objects",
                "official SAM2VideoPredictor (ms/frame)",
                "textseg Sam2Propagator (ms/frame)",
                "speed-up",
                "mask IoU vs official (mean, min)",
            ),
            rows,
        )
        + "\n"
    )
    if len(costs) > 1:
        lo, hi = min(costs), max(costs)
        slope = [(costs[hi][i] - costs[lo][i]) / (hi - lo) * 1e3 for i in (0, 1)]
        text += (
            "\n"
            + table(
                ("cost of each extra object", "official (ms/frame)", "textseg (ms/frame)", "ratio"),
                [
                    (
                        f"{lo} -> {hi} objects",
                        f"{slope[0]:.0f}",
                        f"{slope[1]:.0f}",
                        f"{slope[1] / slope[0]:.2f}",
                    )
                ],
            )
            + "\n"
        )
    if args.memory_frames is not None or args.memory_stride is not None:
        print(text, flush=True)  # the opt-in rows take longer (a full memory window)
        text = _memory_frames_row(args, core, frames, rng, h, w)
    return text


def _memory_frames_row(args, core, frames, rng, h, w) -> str:
    """The opt-in trades (fewer memory frames, memory at reduced resolution, both), timed once
    the memory window is full, each against the exact path on the same frames and objects."""
    n = args.memory_frames_objects
    masks = _boxes_to_masks(rng, n, h, w)
    full = int(core.backend.model.config.num_maskmem)  # frame from which all memories exist
    timed = min(full, len(frames) - 1)
    exact, exact_masks = _ours(core, frames, masks, timed_from=timed)
    gc.collect()
    trades = []
    if args.memory_frames is not None:
        trades.append({"memory_frames": args.memory_frames})
    if args.memory_stride is not None:
        trades.append({"memory_stride": args.memory_stride})
    if len(trades) == 2:
        trades.append({**trades[0], **trades[1]})
    rows = [
        (
            f"exact ({full - 1} memory frames, full resolution)",
            f"{exact * 1e3:.0f}",
            "1.00x",
            "1.0000",
        )
    ]
    for options in trades:
        took, got = _ours(core, frames, masks, timed_from=timed, **options)
        gc.collect()
        rows.append(
            (
                ", ".join(f"{k}={v}" for k, v in options.items()),
                f"{took * 1e3:.0f}",
                f"{exact / took:.2f}x",
                _agreement(got, exact_masks),
            )
        )
    return (
        f"opt-in trades (--memory-frames, --memory-stride), {n} objects, {len(frames) - 1} "
        f"frames, timed from frame {timed} (memory window full)\n\n"
        + table(("textseg", "ms/frame", "speed-up", "mask IoU vs exact path (mean, min)"), rows)
        + "\n"
    )


# ---------------------------------------------------------------------- (c)
def part_d(args: argparse.Namespace) -> str:
    """Batched step vs transformers' per-object loop, per model (see the module docstring)."""
    from textseg.sam import SamCore

    frames = list(_clip(args.loop_frames + 1))
    h, w = frames[0].shape[:2]
    rows = []
    for name in args.loop_models.split(","):
        torch.manual_seed(0)
        core = SamCore(name, pretrained=False)
        with torch.no_grad():  # random weights keep objects visible, as in (a)
            core.backend.model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
        masks = _boxes_to_masks(np.random.default_rng(0), args.loop_objects, h, w)
        with torch.inference_mode():
            _ours(core, frames[:2], masks)  # warm-up
            loop, loop_masks = _ours(core, frames, masks, batched=False)
            gc.collect()
            ours, our_masks = _ours(core, frames, masks)
        rows.append(
            (
                f"{name} ({core.image_size} px)",
                f"{loop * 1e3:.0f}",
                f"{ours * 1e3:.0f}",
                f"{loop / ours:.2f}x",
                _agreement(our_masks, loop_masks),
            )
        )
        del core
        gc.collect()
    return (
        f"(d) batched step vs transformers' per-object loop, {args.loop_objects} objects, "
        f"{args.loop_frames} frames after the prompt\n\n"
        + table(
            (
                "model",
                "transformers' loop (ms/frame)",
                "textseg batched (ms/frame)",
                "speed-up",
                "mask IoU (mean, min)",
            ),
            rows,
        )
        + "\n"
    )


def rss_child(frames: int, mode: str) -> None:
    """One long synthetic video in this (fresh) process; prints JSON with peak RSS (MiB)."""
    import torch.nn.functional as F

    from textseg.sam import SamCore
    from textseg.video import Tracker

    # Memory, not speed, is measured here: one thread keeps long runs short on a shared CPU.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    core = SamCore("sam2.1-tiny-test")
    with torch.no_grad():
        core.backend.model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)

    def video():
        for t in range(frames):
            yield np.roll(base, t % 256, axis=1)

    mask = np.zeros((256, 256), bool)
    mask[64:160, 64:192] = True
    start_rss = RssSampler.current()
    start = time.perf_counter()
    with RssSampler() as rss:
        if mode == "textseg":

            class One:
                sam, n = core, 0

                def segment(self, image, classes):
                    import supervision as sv

                    core.encode(image)
                    self.n += 1
                    m = mask[None] if self.n == 1 else np.zeros((0, 256, 256), bool)
                    return SimpleNamespace(
                        detections=sv.Detections(
                            xyxy=sv.mask_to_xyxy(m).astype(np.float32),
                            mask=m,
                            confidence=np.ones(len(m), np.float32),
                            class_id=np.zeros(len(m), int),
                            data={"class_name": np.array(["x"] * len(m), object)},
                        )
                    )

            tracker = Tracker(One(), every=0, scene_cut=None, patience=10**6)
            for _ in tracker.track(video(), ["x"]):
                pass
        else:
            from transformers import Sam2VideoInferenceSession

            model = core.backend.model
            session = Sam2VideoInferenceSession(
                video_height=256, video_width=256, dtype=torch.float32
            )
            size = model.config.image_size
            m = torch.from_numpy(mask)[None, None].float()
            m = F.interpolate(m, (size, size), mode="bilinear", antialias=True) >= 0.5
            with torch.inference_mode():
                for t, image in enumerate(video()):
                    pixels = core.preprocess(image)[0][0]
                    if t == 0:
                        session.add_new_frame(pixels, frame_idx=0)
                        session.add_mask_inputs(session.obj_id_to_idx(1), 0, m.float())
                        session.obj_with_new_inputs = [1]
                        model(session, frame_idx=0)
                    else:
                        model(session, frame=pixels)
    print(
        json.dumps(
            {
                "peak": rss.peak,
                "growth": rss.peak - start_rss,
                "seconds": time.perf_counter() - start,
            }
        )
    )


def part_c(args: argparse.Namespace) -> str:
    results: dict[tuple[str, int], dict[str, float]] = {}
    for mode, lengths in (("textseg", args.rss), ("bare", args.rss_bare)):
        for n in lengths:
            out = subprocess.run(
                [sys.executable, __file__, "--rss-child", str(n), "--rss-mode", mode],
                capture_output=True,
                text=True,
                check=True,
            )
            results[(mode, n)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {mode} {n} frames: {results[(mode, n)]}", file=sys.stderr, flush=True)
    rows = []
    for n in sorted(set(args.rss) | set(args.rss_bare)):
        ours, bare = results.get(("textseg", n)), results.get(("bare", n))
        rows.append(
            (
                n,
                f"{ours['peak']:.0f} (+{ours['growth']:.0f})" if ours else "-",
                f"{ours['seconds']:.0f}" if ours else "-",
                f"{bare['peak']:.0f} (+{bare['growth']:.0f})" if bare else "-",
                f"{bare['seconds']:.0f}" if bare else "-",
            )
        )
    return (
        "(c) peak RSS in MiB (growth during the run), one object, sam2.1-tiny-test, 256x256 "
        "synthetic frames, each length in a fresh process\n\n"
        + table(
            (
                "frames",
                "textseg Tracker peak RSS",
                "textseg s",
                "transformers streaming loop peak RSS",
                "transformers s",
            ),
            rows,
        )
        + "\n"
    )


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="a,b,c,d")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--objects", type=int, default=4)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--sam", default="sam2.1-hiera-tiny")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--scaling", type=_ints, default=[1, 8, 32])
    p.add_argument("--scaling-frames", type=int, default=3)
    p.add_argument("--memory-frames", type=int, default=2, help="opt-in row (-1: none)")
    p.add_argument("--memory-stride", type=int, default=2, help="opt-in row (-1: none)")
    p.add_argument(
        "--a-memory-frames", type=int, default=None, help="(a): also track with this trade"
    )
    p.add_argument(
        "--a-memory-stride", type=int, default=None, help="(a): also track with this trade"
    )
    p.add_argument("--memory-frames-objects", type=int, default=1)
    p.add_argument("--memory-frames-frames", type=int, default=8)
    p.add_argument("--loop-models", default="edgetam,sam2.1-hiera-tiny")
    p.add_argument("--loop-objects", type=int, default=8)
    p.add_argument("--loop-frames", type=int, default=3)
    p.add_argument("--rss", type=_ints, default=[100, 1000, 5000])
    p.add_argument("--rss-bare", type=_ints, default=[100, 1000])
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rss-mode", default="textseg", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_frames is not None and args.memory_frames < 0:
        args.memory_frames = None
    if args.memory_stride is not None and args.memory_stride < 0:
        args.memory_stride = None
    if args.rss_child is not None:
        rss_child(args.rss_child, args.rss_mode)
        return
    import tempfile

    print(machine())
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "a" in parts:
            print(part_a(args, folder), flush=True)
        if "b" in parts:
            print(part_b(args, folder), flush=True)
    if "d" in parts:
        print(part_d(args), flush=True)
    if "c" in parts:
        print(part_c(args), flush=True)


if __name__ == "__main__":
    main()
