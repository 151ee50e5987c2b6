"""SAM 3's own video path: every class detected and tracked jointly by ``Sam3VideoModel``.

:class:`Sam3VideoTracker` runs transformers' ``Sam3VideoModel`` (registry ``sam3-video``) in
one streaming inference session for the whole vocabulary, one text prompt per class name or
synonym. On every frame SAM 3 itself does what :class:`~textseg.video.tracker.Tracker` does
with separate models:

1. the ViT encodes the frame once; the concept detector runs on it for every prompt (instance
   score = query probability times the prompt's presence score), its masks de-duplicated;
2. SAM 3's tracker propagates every live object with its memory (memory attention over the
   last frames' memories and object pointers);
3. detections are associated to tracks by mask IoU within their prompt; an unmatched confident
   detection starts a new object; overlapping tracks of one prompt are resolved by recent
   occlusion; the memories are encoded from the resolved masks.

This is the documented streaming loop (``model(inference_session=..., frame=...)``, then
``Sam3VideoProcessor.postprocess_outputs``), with three differences that change no output:

- **the tracker steps every object at once.** transformers' tracker runs its memory attention
  and mask decoder once per object; :meth:`Sam3VideoTracker._propagate` runs SAM 3's tracker
  (transformers generates ``Sam3TrackerVideoModel`` from ``Sam2VideoModel``'s code) through
  :class:`~textseg.video.sam2_step.Sam2Step`: objects batched by memory layout, the first
  self-attention once per frame, each memory's key/value projections cached when first read,
  one fused attention call. Equal to the per-object loop up to float summation order (logits
  within ~1e-5); ``batched=False`` keeps transformers' loop;

- **bounded memory.** transformers' session keeps every frame's pixels, every object's outputs
  (high-resolution masks included) and per-frame bookkeeping forever, and deep-copies that
  bookkeeping on every frame. After each frame :meth:`Sam3VideoTracker._prune` drops what the
  model will not read again (see there), so a session's size depends on its objects, not on the
  video's length;
- **frames are indexed by the tracker**, so ``num_frames`` (which scales SAM 3's object-pointer
  time encoding) is the number of frames seen, as in transformers' loop.

Options that do change the output, off by default: ``patience`` ends (and removes from the
session) an object not reported for that many frames, which keeps a long video's cost from
growing with every object it ever showed; ``exemplars`` add box prompts on the first frame
(SAM 3's geometry encoder, with the class's text), the tracker carrying what they found.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import supervision as sv
import torch

from textseg._device import resolve_device, resolve_dtype
from textseg.fields import CLASS_NAME, OBJECT_SCORE
from textseg.io.rle import CompactMasks
from textseg.masks import masks_to_boxes
from textseg.prompters.sam3 import Exemplar, exemplar_rows
from textseg.sam.modeling.sam3 import Sam3Net
from textseg.validators import optional_positive_int
from textseg.video.sam2_step import CACHE_KEY, Sam2Step, store_step
from textseg.video.sources import Frame, VideoInput, open_video
from textseg.video.tracker import FrameResult, checked_frames
from textseg.vocab import ClassesInput, Vocabulary

__all__ = ["Sam3VideoTracker", "session_bytes"]

#: Entries of an object's per-frame output that later frames read (memories, object pointer,
#: the memory's cached key/value projections).
_MEMORY_KEYS = ("maskmem_features", "maskmem_pos_enc", "object_pointer", CACHE_KEY)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _session_class() -> type:
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    class StreamingSession(Sam3VideoInferenceSession):
        """A session whose ``num_frames`` is the number of frames seen (transformers counts the
        frames it keeps, and this session keeps only the current one)."""

        frames_seen = 0

        @property
        def num_frames(self) -> int:
            return self.frames_seen

    return StreamingSession


def _processor(net: Sam3Net) -> Any:
    """transformers' ``Sam3VideoProcessor`` for ``net``: its image processor at the model's
    input size and CLIP's tokenizer (built offline; no processor files are read)."""
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3VideoProcessor

    size = {"height": net.image_size, "width": net.image_size}
    return Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
        tokenizer=net.tokenizer,
    )


def session_bytes(session: Any) -> int:
    """Bytes of the tensors a SAM 3 video session holds (frames, features, objects' outputs):
    what grows when a session is not pruned. Each storage counts once."""
    from textseg.sam.cache import held_storages

    held = [
        session.processed_frames or {},
        session.cache._vision_features,
        session.output_dict_per_obj,
        session.mask_inputs_per_obj,
        session.obj_id_to_last_occluded,
    ]
    return sum(held_storages(held).values())


class Sam3VideoTracker:
    """Track every instance of the classes with SAM 3's video model (see the module docstring).

    Args:
        model: Registry name (``"sam3-video"``, ``"sam3-video-tiny-test"``; task
            ``"sam3-video"``) or a built :class:`~textseg.sam.modeling.sam3.Sam3Net` holding a
            ``Sam3VideoModel``.
        checkpoint: Explicit weights file or folder, first in the resolution order.
        pretrained: Load weights; False gives random weights (speed measurements).
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
        exemplars: :class:`~textseg.prompters.sam3.Exemplar` boxes, in pixels of the first
            tracked frame, given to the detector with their class's text on that frame.
        patience: End an object's track (and remove it from the session) after this many
            frames without it in the output; None (default) keeps every object, as SAM 3 does.
        min_area: Instances with fewer pixels are not reported on that frame.
        batched: Step every tracked object at once (default; the same results); False runs
            transformers' per-object tracker step (the reference; on a 2-core CPU at the
            published size no speed difference was measured, see docs/performance.md).
        key_cache_bytes: Budget for the memories' cached key/value projections (42 MiB per
            memory and object at the published size); past it memories are projected on each
            read, with the same results. None: unbounded.

    Raises:
        TypeError: ``model`` is neither a registry name nor a SAM 3 video model.
        ValueError: A parameter out of range.
    """

    def __init__(
        self,
        model: str | Sam3Net = "sam3-video",
        *,
        checkpoint: str | None = None,
        pretrained: bool = True,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "float32",
        exemplars: Sequence[Exemplar] = (),
        patience: int | None = None,
        min_area: int = 0,
        batched: bool = True,
        key_cache_bytes: int | None = 2 << 30,
    ) -> None:
        from textseg.validators import non_negative_int, optional_non_negative_int

        if isinstance(model, str):
            from textseg._hub import create_model

            net = create_model(
                model, task="sam3-video", pretrained=pretrained, checkpoint=checkpoint
            )
        elif isinstance(model, Sam3Net) and hasattr(model.model, "tracker_model"):
            net = model
        else:
            raise TypeError(
                f"model: expected a SAM 3 video registry name (textseg.list_models('sam3-video'))"
                f" or a Sam3Net holding a Sam3VideoModel, got {type(model).__name__}"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        net.model.to(device=self.device, dtype=self.dtype).eval()
        self.net = net
        self.processor = _processor(net)
        self.exemplars = tuple(exemplars)
        for i, item in enumerate(self.exemplars):
            if not isinstance(item, Exemplar):
                raise TypeError(
                    f"exemplars[{i}]: expected textseg.prompters.sam3.Exemplar, got "
                    f"{type(item).__name__}"
                )
        self.patience = optional_positive_int(patience, "patience")
        self.min_area = non_negative_int(min_area, "min_area")
        self.batched = bool(batched)
        self.key_cache_bytes = optional_non_negative_int(key_cache_bytes, "key_cache_bytes")
        self._tracker_step = Sam2Step(net.model.tracker_model, cache_bytes=self.key_cache_bytes)
        self.session: Any = None

    def __repr__(self) -> str:
        return f"Sam3VideoTracker({self.net.name})"

    @property
    def model(self) -> Any:
        """The ``transformers.Sam3VideoModel``."""
        return self.net.model

    def new_session(self, vocab: Vocabulary) -> Any:
        """A streaming session with one text prompt per prompt of ``vocab`` (class names and
        synonyms), as transformers' ``init_video_session`` + ``add_text_prompt`` make it.

        Raises:
            ValueError: A negative prompt (SAM 3 video has no way to suppress by text).
        """
        if vocab.negatives:
            raise ValueError(
                f"negatives {list(vocab.negatives)}: SAM 3's video model takes positive prompts "
                f"only; remove the negatives or use another preset"
            )
        device = self.device
        session = _session_class()(
            inference_device=device,
            inference_state_device=device,
            video_storage_device=device,
            dtype=self.dtype,
        )
        self.processor.add_text_prompt(session, list(vocab.prompts))
        return session

    def keyframe_info(self) -> dict[str, Any]:
        """The keyframe policy, as ``tracks.json`` ``info.keyframes`` records it (the same keys
        as :meth:`textseg.video.Tracker.keyframe_info`): SAM 3 detects on every frame."""
        return {"every": 1, "scene_cut": None}

    def track(
        self,
        video: VideoInput,
        classes: ClassesInput,
        *,
        start: int = 0,
        end: int | None = None,
        with_images: bool = False,
    ) -> Iterator[FrameResult]:
        """Track ``classes`` through ``video``, one :class:`~textseg.video.FrameResult` per frame.

        Args:
            video: A video file, a folder of frames, a list or iterator of ``(H, W, 3)`` uint8
                RGB frames, or a :class:`~textseg.video.VideoSource`.
            classes: Class names or a :class:`~textseg.vocab.Vocabulary` (synonyms are extra
                prompts of their class).
            start: First frame index.
            end: Index after the last frame (None: to the end).
            with_images: Put each decoded frame in :attr:`FrameResult.image`.

        Yields:
            One result per frame of the range, in order: ``tracker_id`` is SAM 3's object id
            plus one, ``confidence`` the score of the detection that started the object,
            ``data["object_score"]`` the tracker's probability that the object is visible on
            this frame. Every frame is a keyframe (SAM 3 detects on each). A frame that could
            not be decoded gives a result with ``error`` set and tracking goes on.

        Raises:
            ValueError: No frame could be decoded, bad classes, negatives, a bad exemplar.
        """
        vocab = Vocabulary.coerce(classes)
        source = open_video(video, start=start, end=end)
        self.session = session = self.new_session(vocab)
        prompt_class = {
            session.add_prompt(text): int(c) for text, c in zip(vocab.prompts, vocab.prompt_class)
        }
        seen: set[int] = set()
        unseen: dict[int, int] = {}
        step = 0
        hook = None
        try:
            for item in checked_frames(source, start):
                if isinstance(item, FrameResult):
                    yield item
                    continue
                if step == 0 and self.exemplars:
                    hook = self._exemplar_hook(session, vocab, item.image.shape[:2])
                result = self._step(item, step, vocab, prompt_class, seen, unseen)
                if hook is not None:
                    hook.remove()
                    hook = None
                if with_images:
                    result.image = item.image
                step += 1
                yield result
        finally:
            if hook is not None:
                hook.remove()

    # ------------------------------------------------------------------ one frame
    @torch.inference_mode()
    def _step(
        self,
        frame: Frame,
        step: int,
        vocab: Vocabulary,
        prompt_class: dict[int, int],
        seen: set[int],
        unseen: dict[int, int],
    ) -> FrameResult:
        start = time.perf_counter()
        session = self.session
        image = frame.image
        if image is None:
            raise ValueError(f"frame {frame.index}: no image to track")
        h, w = image.shape[:2]
        writable = image if image.flags.writeable else image.copy()  # torch wants writable
        inputs = self.processor(images=writable, return_tensors="pt")
        session.frames_seen = step + 1
        t = time.perf_counter()
        model = self.model
        if self.batched:  # for this call only: the model is the caller's
            model.run_tracker_propagation = self._propagate
        try:
            out = model(
                inference_session=session,
                frame=inputs.pixel_values[0].to(self.device, self.dtype),
                frame_idx=step,
            )
        finally:
            if self.batched:
                del model.run_tracker_propagation
        timings = {"track": _ms(t)}
        t = time.perf_counter()
        post = self.processor.postprocess_outputs(session, out, original_sizes=[[h, w]])
        ids = [int(i) for i in post["object_ids"].tolist()]
        masks = post["masks"].cpu().numpy().astype(bool)
        areas = masks.reshape(len(ids), h * w).sum(axis=1)
        keep = [i for i, area in enumerate(areas) if area >= max(self.min_area, 1)]
        ended = self._forget(session, {ids[i] for i in keep}, unseen)
        self._prune(session, step)
        timings["postprocess"] = _ms(t)

        report = [ids[i] for i in keep]
        dense = masks[keep] if keep else np.zeros((0, h, w), bool)
        born = tuple(i + 1 for i in report if i not in seen)
        seen.update(report)
        class_id = np.array(
            [prompt_class[session.obj_id_to_prompt_id[i]] for i in report], np.int64
        )
        tracker_scores = out.obj_id_to_tracker_score or {}
        boxes = sv.Detections(
            xyxy=masks_to_boxes(dense).astype(np.float32)
            if report
            else np.zeros((0, 4), np.float32),
            confidence=np.array([post["scores"][i].item() for i in keep], np.float32),
            class_id=class_id,
            tracker_id=np.array([i + 1 for i in report], np.int64),
            data={
                CLASS_NAME: np.array([vocab.names[c] for c in class_id], dtype=object),
                OBJECT_SCORE: np.array(
                    [
                        float(tracker_scores.get(i, post["scores"][k].item()))
                        for i, k in zip(report, keep)
                    ],
                    np.float32,
                ),
            },
        )
        timings["total"] = _ms(start)
        return FrameResult(
            frame.index,
            frame.time,
            (h, w),
            keyframe=True,
            new_tracks=born,
            ended_tracks=tuple(i + 1 for i in ended),
            timings=timings,
            _boxes=boxes,
            _masks=CompactMasks.from_dense(dense) if report else CompactMasks([], h, w),
        )

    def _propagate(
        self, inference_session: Any, frame_idx: int, reverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Sam3VideoModel.run_tracker_propagation`` with every object stepped at once
        (:meth:`Sam2Step.track`): the tracker's masks ``(N, h, w)`` and object score logits
        ``(N,)`` on ``frame_idx``, the outputs stored as transformers' tracker stores them (no
        memory encoding: SAM 3 encodes memories after resolving its heuristics).

        Objects with new inputs or a conditioning output on this frame, and reverse tracking,
        go through transformers' own method (the streaming loop never has them here).
        """
        from transformers.models.sam3_video.modeling_sam3_video import fill_holes_in_mask_scores

        model = self.model
        tracker = model.tracker_model
        s = inference_session
        rows = list(range(s.get_obj_num()))
        special = (
            reverse
            or getattr(s, "obj_with_new_inputs", None)
            or any(frame_idx in s.output_dict_per_obj[i]["cond_frame_outputs"] for i in rows)
        )
        if not rows or special:
            return type(model).run_tracker_propagation(model, s, frame_idx, reverse)
        pointers = min(s.num_frames, int(tracker.config.max_object_pointers_in_encoder))
        out = self._tracker_step.track(
            s, frame_idx, rows, memory_frames=tracker.num_maskmem - 1, pointers=pointers
        )
        split = [{k: v[i : i + 1] for k, v in out.items()} for i in rows]
        store_step(s, frame_idx, rows, split, new=False)
        masks = fill_holes_in_mask_scores(
            out["pred_masks"],
            max_area=model.fill_hole_area,
            fill_holes=True,
            remove_sprinkles=True,
        )
        return masks.squeeze(1), out["object_score_logits"].reshape(len(rows))

    def _exemplar_hook(self, session: Any, vocab: Vocabulary, size: tuple[int, int]) -> Any:
        """A hook giving the detector each prompt's exemplar boxes with its text, for one frame
        (transformers' ``run_detection`` passes text only)."""
        rows = exemplar_rows(self.exemplars, vocab, size)
        by_prompt = {
            session.add_prompt(text): row
            for text, row in zip(vocab.prompts, rows)
            if row is not None
        }
        device, dtype = self.device, self.dtype

        def add_boxes(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            text = kwargs.get("text_embeds")
            for prompt_id, row in by_prompt.items():
                if text is not None and text is session.prompt_embeddings.get(prompt_id):
                    boxes = torch.from_numpy(np.asarray(row[:, :4], np.float32))[None]
                    labels = torch.from_numpy(np.asarray(row[:, 4], np.int64))[None]
                    kwargs = {
                        **kwargs,
                        "input_boxes": boxes.to(device, dtype),
                        "input_boxes_labels": labels.to(device),
                    }
            return args, kwargs

        return self.model.detector_model.register_forward_pre_hook(add_boxes, with_kwargs=True)

    # ------------------------------------------------------------------ bounded memory
    def _forget(self, session: Any, visible: set[int], unseen: dict[int, int]) -> list[int]:
        """Count the frames each object has gone unreported; with ``patience``, remove those
        past it from the session (as SAM 3's hotstart removes objects). Returns their ids."""
        if self.patience is None:
            return []
        ended = []
        for obj_id in list(session.obj_ids):
            unseen[obj_id] = 0 if obj_id in visible else unseen.get(obj_id, 0) + 1
            if unseen[obj_id] >= self.patience:
                ended.append(obj_id)
        for obj_id in ended:
            unseen.pop(obj_id, None)
            session.remove_object(obj_id)
            session.obj_ids = [i for i in session.obj_ids if i != obj_id]
            for table in (
                session.obj_id_to_score,
                session.trk_keep_alive,
                session.obj_id_to_last_occluded,
                session.obj_first_frame_idx,
                session.unmatched_frame_inds,
            ):
                table.pop(obj_id, None)
            for pair in [p for p in session.overlap_pair_to_frame_inds if obj_id in p]:
                del session.overlap_pair_to_frame_inds[pair]
        return ended

    def _prune(self, session: Any, step: int) -> None:
        """Drop what SAM 3 will not read after frame ``step`` (like ``Sam2Propagator._prune``):

        - the frames' pixels (each frame is read once, when it is tracked);
        - of every object's outputs: the masks (read on their own frame only); the memories of
          frames older than the memory window (``num_maskmem - 1`` frames) that are not among
          the ``max_cond_frame_num`` latest conditioning frames; the object pointers of
          non-conditioning frames older than ``max_object_pointers_in_encoder`` frames
          (transformers reads the pointers of every conditioning frame: those stay, one small
          vector per re-conditioning);
        - the mask inputs and per-frame bookkeeping of past frames (frame-wise tracker scores,
          suppressed ids), and the hotstart frame lists beyond their thresholds (the streaming
          path appends to them and never reads them).
        """
        model = self.model
        config = model.tracker_model.config
        memory_from = step + 2 - config.num_maskmem  # oldest frame frame step+1 reads
        pointers_from = step + 2 - config.max_object_pointers_in_encoder
        recent = config.max_cond_frame_num
        session.processed_frames = {}
        for obj_idx, outputs in session.output_dict_per_obj.items():
            cond = outputs["cond_frame_outputs"]
            latest = set(sorted(cond)[-recent:]) if recent >= 0 else set(cond)
            for frame_idx, out in cond.items():
                keep = _MEMORY_KEYS if frame_idx >= memory_from or frame_idx in latest else ()
                _strip(out, keep)
            non_cond = outputs["non_cond_frame_outputs"]
            for frame_idx in list(non_cond):
                if frame_idx < pointers_from:
                    del non_cond[frame_idx]
                else:
                    keep = _MEMORY_KEYS if frame_idx >= memory_from else ()
                    _strip(non_cond[frame_idx], keep)
            session.frames_tracked_per_obj[obj_idx] = {}
            session.mask_inputs_per_obj[obj_idx] = {}
            session.point_inputs_per_obj[obj_idx] = {}
        for table in (session.obj_id_to_tracker_score_frame_wise, session.suppressed_obj_ids):
            for frame_idx in [f for f in table if f <= step]:
                del table[frame_idx]
        for frames in session.unmatched_frame_inds.values():
            del frames[: -model.hotstart_unmatch_thresh]
        for frames in session.overlap_pair_to_frame_inds.values():
            del frames[: -model.hotstart_dup_thresh]


def _strip(out: dict[str, Any], keep: Sequence[str]) -> None:
    """Keep the object pointer and the entries in ``keep`` of one frame's output."""
    for key in [k for k in out if k != "object_pointer" and k not in keep]:
        del out[key]
