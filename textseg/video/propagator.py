"""Mask propagation through a video: the interface the tracker uses, and SAM 2's.

A :class:`MaskPropagator` carries objects from frame to frame: the tracker adds objects on a
frame with their masks, then asks for every later frame's masks of the objects still alive, and
removes the objects whose tracks ended. :class:`Sam2Propagator` does it with SAM 2's memory
(transformers' ``Sam2VideoModel`` / ``EdgeTamVideoModel``) in streaming mode: frames arrive one
at a time, and the memory is kept to a fixed window, so memory does not grow with the length of
the video.

What the window keeps, per object (what SAM 2 reads; everything older is dropped):

- the conditioning frame (the frame the object was added on, with its mask memory and pointer);
- the mask memories and object pointers of the last ``window`` frames (SAM 2 reads the last
  ``num_maskmem - 1 = 6`` memories and ``max_object_pointers_in_encoder - 1 = 15`` pointers);

and, shared: the image features of the current frame only, one copy of the memories' positional
encoding (the same tensor for every frame), no pixels of past frames.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from textseg.validators import non_negative_int, optional_non_negative_int, positive_int
from textseg.video.sam2_step import Sam2Step, store_step

if TYPE_CHECKING:
    from textseg.sam.cache import ImageEmbedding
    from textseg.sam.core import SamCore
    from textseg.video.edgetam_step import EdgeTamStep

__all__ = ["MaskPropagator", "Propagated", "Sam2Propagator"]


@dataclass(frozen=True)
class Propagated:
    """Masks of the objects alive on one frame.

    Attributes:
        ids: ``(K,)`` int64 object ids.
        masks: ``(K, H, W)`` bool masks at the frame's resolution.
        scores: ``(K,)`` float32 probability that the object is visible in the frame.
    """

    ids: np.ndarray
    masks: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> Propagated:
        return cls(
            np.zeros(0, np.int64), np.zeros((0, height, width), bool), np.zeros(0, np.float32)
        )

    def __len__(self) -> int:
        return len(self.ids)


@runtime_checkable
class MaskPropagator(Protocol):
    """Carries object masks from frame to frame.

    Frames are numbered 0, 1, 2... in the order they are given (the tracker skips frames that
    could not be decoded). For each frame the tracker calls :meth:`propagate` once, then
    :meth:`add` for the objects found on it, and :meth:`remove` for the tracks that ended.
    """

    def reset(self) -> None:
        """Forget every object and frame (a new video)."""

    def propagate(
        self, frame: int, image: np.ndarray, embedding: ImageEmbedding | None = None
    ) -> Propagated:
        """The masks on ``frame`` (``(H, W, 3)`` uint8 RGB) of every object added before it;
        ``embedding`` is the frame's image embedding when the caller already has it."""

    def add(self, frame: int, ids: Sequence[int], masks: np.ndarray) -> Propagated:
        """Start objects ``ids`` on ``frame`` (the frame given to the last :meth:`propagate`)
        from their ``(N, H, W)`` bool masks; returns their masks on that frame."""

    def remove(self, ids: Sequence[int]) -> None:
        """Stop tracking objects ``ids`` (their memory is freed)."""


def _model_of(sam: Any) -> Any:
    """The SAM 2 video model behind a SamCore (or the model itself)."""
    from textseg.sam.backends.sam2 import Sam2Backend

    backend = getattr(sam, "backend", None)
    model = backend.model if isinstance(backend, Sam2Backend) else None
    if model is None or not hasattr(model, "memory_attention"):
        what = type(getattr(backend, "model", sam)).__name__
        raise TypeError(
            f"sam: tracking needs a SAM 2 video model (sam2.1-hiera-*, sam2-hiera-*), got a "
            f"core over {what}; build the pipeline with sam='sam2.1-hiera-base-plus' (or "
            f"--sam on the command line)"
        )
    return model


class Sam2Propagator:
    """SAM 2's memory-based propagation, streaming, with a fixed memory window.

    Frames are pre-processed by the SAM core (the same resizing as its image embeddings), so a
    keyframe's embedding computed by the image pipeline is reused instead of encoding the frame
    twice.

    Args:
        sam: A :class:`~textseg.sam.SamCore` over a SAM 2 video model (``sam2.1-hiera-*``).
        window: Past frames whose memories and object pointers are kept per object (default:
            what the model reads, ``max(num_maskmem, max_object_pointers_in_encoder) - 1``).
        memory_frames: Past mask memories read per object and frame, besides the conditioning
            frame's: ``num_maskmem - 1`` (6, the default) is SAM 2 exactly; fewer is an opt-in
            trade, faster (the memory attention's cost grows with the memories it reads) with
            masks that differ from SAM 2's.
        memory_stride: 1 (exact, the default); ``s > 1`` reads each mask memory at ``1/s`` of
            its resolution (``s * s`` times fewer memory tokens in the memory attention): an
            opt-in trade, faster, with masks that differ from SAM 2's (see
            :mod:`textseg.video.sam2_step`).
        key_cache_bytes: Budget for the memories' cached key/value projections (32 MiB per
            memory and object at the published sizes, up to 7 memories per object; a few
            percent of the time). Past it, memories are projected on each read: the same
            masks, bounded memory with many objects. None: unbounded.
        batched: Step every tracked object at once (default; :mod:`textseg.video.sam2_step`,
            :mod:`textseg.video.edgetam_step`); False runs transformers' per-object loop (the
            reference, for comparisons).

    Raises:
        TypeError: ``sam`` is not over a SAM 2 video model.
        ValueError: ``window`` smaller than the memories the model reads, ``memory_frames`` out
            of ``0..num_maskmem - 1``, ``memory_stride`` not a positive integer, or either
            trade asked of EdgeTAM.
    """

    def __init__(
        self,
        sam: SamCore,
        *,
        window: int | None = None,
        memory_frames: int | None = None,
        memory_stride: int = 1,
        key_cache_bytes: int | None = 2 << 30,
        batched: bool = True,
    ) -> None:
        self.sam = sam
        self.model = _model_of(sam)
        config = self.model.config
        needed = max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder)) - 1
        if window is None:
            window = needed
        if window < int(config.num_maskmem) - 1:
            raise ValueError(
                f"window: expected at least {int(config.num_maskmem) - 1} frames (the mask "
                f"memories SAM 2 reads), got {window}"
            )
        self.window = int(window)
        most = int(config.num_maskmem) - 1
        if memory_frames is None:
            memory_frames = most
        memory_frames = non_negative_int(memory_frames, "memory_frames")
        if memory_frames > most:
            raise ValueError(
                f"memory_frames: expected at most {most} (the past memories SAM 2 reads), got "
                f"{memory_frames}"
            )
        self.memory_frames = memory_frames
        self.memory_stride = positive_int(memory_stride, "memory_stride")
        self.key_cache_bytes = optional_non_negative_int(key_cache_bytes, "key_cache_bytes")
        module = importlib.import_module(type(self.model).__module__)
        self._session_class = next(
            getattr(module, name) for name in dir(module) if name.endswith("VideoInferenceSession")
        )
        params = inspect.signature(self.model._run_single_frame_inference).parameters
        # EdgeTAM encodes each object's memory inside the step; SAM 2 batches it afterwards.
        self._memory_inside = "run_mem_encoder" in params
        if self._memory_inside and memory_frames < most:
            raise ValueError(
                f"memory_frames: EdgeTAM reads all {most} past memories; fewer is for SAM 2 "
                f"models (sam2.1-hiera-*), got {memory_frames}"
            )
        if self._memory_inside and self.memory_stride > 1:
            raise ValueError(
                f"memory_stride: EdgeTAM already reads its memories through a resampler; a "
                f"stride is for SAM 2 models (sam2.1-hiera-*), got {self.memory_stride}"
            )
        # SAM 2 steps all objects at once (Sam2Step); EdgeTAM (memory encoded inside its
        # per-object step, through its perceiver) through EdgeTamStep on tracked frames.
        self._batched = bool(batched) and not self._memory_inside
        self._step = Sam2Step(self.model, self.memory_stride, self.key_cache_bytes)
        self._edgetam_step: EdgeTamStep | None = None
        if self._memory_inside and batched:
            from textseg.video.edgetam_step import EdgeTamStep

            self._edgetam_step = EdgeTamStep(self.model)
        self._session: Any = None
        self._size: tuple[int, int] | None = None
        self._frame: int | None = None
        self._memory_pos: torch.Tensor | None = None
        self._feature_pos: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self._session = None
        self._size = None
        self._frame = None

    @property
    def ids(self) -> list[int]:
        """Ids of the objects being tracked."""
        return [] if self._session is None else list(self._session.obj_ids)

    def memory_bytes(self) -> int:
        """Bytes of tensors the session holds (frames, features, per-object memories), each
        storage once."""
        from textseg.sam.cache import held_storages

        s = self._session
        if s is None:
            return 0
        held = [
            s.processed_frames or {},
            s.cache._vision_features,
            s.output_dict_per_obj,
            s.point_inputs_per_obj,
            s.mask_inputs_per_obj,
        ]
        return sum(held_storages(held).values())

    def _start(self, height: int, width: int) -> None:
        device = self.sam.device
        self._session = self._session_class(
            video_height=height,
            video_width=width,
            inference_device=device,
            inference_state_device=device,
            video_storage_device=device,
            dtype=self.sam.backend.dtype,
            max_vision_features_cache_size=1,
        )
        self._size = (height, width)

    # ------------------------------------------------------------------ frames
    def _features_from(self, embedding: ImageEmbedding) -> dict[str, list[torch.Tensor]]:
        """The session's cached-features entry for a frame from the core's packed embedding."""
        from textseg.sam.backends.sam2 import unpack_features

        levels = unpack_features(embedding.embedding.to(self.sam.device))
        feats = [x.flatten(2).permute(2, 0, 1) for x in levels]
        if self._feature_pos is None:
            neck = self.model.vision_encoder.neck
            self._feature_pos = [
                neck.position_encoding(
                    torch.Size((1, self.sam.backend.hidden_size, *x.shape[-2:])),
                    x.device,
                    x.dtype,
                )
                .to(x.dtype)
                .flatten(2)
                .permute(2, 0, 1)
                for x in levels
            ]
        return {"vision_feats": feats, "vision_pos_embeds": list(self._feature_pos)}

    def _prune(self, frame: int) -> None:
        """Drop what SAM 2 will never read again once ``frame`` is processed."""
        s = self._session
        oldest = frame - self.window
        for idx in range(len(s.obj_ids)):
            outputs = s.output_dict_per_obj[idx]["non_cond_frame_outputs"]
            for t in [t for t in outputs if t < oldest]:
                del outputs[t]
            tracked = s.frames_tracked_per_obj[idx]
            for t in [t for t in tracked if t < oldest]:
                del tracked[t]
            for inputs in (s.point_inputs_per_obj[idx], s.mask_inputs_per_obj[idx]):
                for t in [t for t in inputs if t < frame]:
                    del inputs[t]
        for t in [t for t in (s.processed_frames or {}) if t < frame]:
            del s.processed_frames[t]

    @torch.inference_mode()
    def propagate(
        self, frame: int, image: np.ndarray, embedding: ImageEmbedding | None = None
    ) -> Propagated:
        """Masks on ``frame`` of every object added before it (see :class:`MaskPropagator`).

        Raises:
            ValueError: Frames out of order, or a frame of another size than the first.
        """
        height, width = image.shape[:2]
        if self._session is None:
            self._start(height, width)
        elif (height, width) != self._size:
            raise ValueError(
                f"image: frame {frame} is {height}x{width}, the video's frames are "
                f"{self._size[0]}x{self._size[1]}; every frame of a video needs the same size"
            )
        if self._frame is not None and frame <= self._frame:
            raise ValueError(
                f"frame: expected frames in increasing order, got {frame} after {self._frame}"
            )
        self._prune(frame)
        self._frame = frame
        pixels, _ = self.sam.preprocess(image, video=True)
        self._session.add_new_frame(pixels[0], frame_idx=frame)
        if embedding is not None:
            self._session.cache.cache_vision_features(frame, self._features_from(embedding))
        objects = list(range(len(self._session.obj_ids)))
        return self._run(frame, objects, new=False)

    @torch.inference_mode()
    def add(self, frame: int, ids: Sequence[int], masks: np.ndarray) -> Propagated:
        """Start objects from their masks on the current frame (see :class:`MaskPropagator`).

        Raises:
            ValueError: ``frame`` is not the frame last given to :meth:`propagate`, an id is
                already tracked, or the masks do not match the ids or the frame size.
        """
        if self._session is None or frame != self._frame:
            raise ValueError(
                f"frame: objects are added on the frame last given to propagate() "
                f"({self._frame}), got {frame}"
            )
        masks = np.asarray(masks, bool)
        h, w = self._size
        if masks.shape != (len(ids), h, w):
            raise ValueError(
                f"masks: expected ({len(ids)}, {h}, {w}) bool masks for {len(ids)} ids, got "
                f"{masks.shape}"
            )
        if len(ids) == 0:
            return Propagated.empty(h, w)
        s = self._session
        already = [i for i in ids if i in s.obj_ids]
        if already:
            raise ValueError(f"ids: objects {already} are already tracked")
        size = int(self.model.config.image_size)
        rows = []
        for obj_id, mask in zip(ids, masks):
            idx = s.obj_id_to_idx(int(obj_id))
            # As transformers' processor and the official add_new_mask: resize to the model
            # input (antialiased) and binarise at 0.5.
            m = torch.from_numpy(mask)[None, None].to(self.sam.device, torch.float32)
            m = F.interpolate(m, (size, size), mode="bilinear", align_corners=False, antialias=True)
            s.add_mask_inputs(idx, frame, (m >= 0.5).float())
            rows.append(idx)
        return self._run(frame, rows, new=True)

    def remove(self, ids: Sequence[int]) -> None:
        """Stop tracking ``ids``; the remaining objects are re-indexed (their memory kept)."""
        s = self._session
        if s is None:
            return
        drop = {int(i) for i in ids}
        keep = [(obj_id, s.obj_id_to_idx(obj_id)) for obj_id in s.obj_ids if obj_id not in drop]
        per_obj = (
            "point_inputs_per_obj",
            "mask_inputs_per_obj",
            "output_dict_per_obj",
            "frames_tracked_per_obj",
        )
        saved = {name: getattr(s, name) for name in per_obj}
        s._obj_id_to_idx.clear()
        s._obj_idx_to_id.clear()
        for name in per_obj:
            setattr(s, name, {})
        for new_idx, (obj_id, old_idx) in enumerate(keep):
            s._obj_id_to_idx[obj_id] = new_idx
            s._obj_idx_to_id[new_idx] = obj_id
            for name in per_obj:
                getattr(s, name)[new_idx] = saved[name][old_idx]
        s.obj_ids = [obj_id for obj_id, _ in keep]
        s.obj_with_new_inputs = [i for i in s.obj_with_new_inputs if i not in drop]

    # ------------------------------------------------------------------ one step
    def _run(self, frame: int, rows: list[int], *, new: bool) -> Propagated:
        """One tracking step for the objects at ``rows``: their masks on ``frame``, their
        memories of it stored."""
        s = self._session
        h, w = self._size
        if not rows:
            return Propagated.empty(h, w)
        outputs = self._outputs(frame, rows, new=new)
        key = "cond_frame_outputs" if new else "non_cond_frame_outputs"
        logits = torch.cat([o["pred_masks"] for o in outputs]).float()
        scores = torch.cat([o["object_score_logits"].reshape(1) for o in outputs]).float()
        for idx in rows:
            stored = s.output_dict_per_obj[idx][key][frame]
            # Only the memory and the pointer are read again; the masks were for this frame.
            stored.pop("high_res_masks", None)
            stored.pop("pred_masks", None)
            self._share_memory_pos(stored)
        masks = np.zeros((len(rows), h, w), bool)
        for i in range(len(rows)):
            up = F.interpolate(logits[i : i + 1], (h, w), mode="bilinear", align_corners=False)
            masks[i] = (up[0, 0] > 0).cpu().numpy()
        ids = np.array([s.obj_idx_to_id(idx) for idx in rows], np.int64)
        return Propagated(ids, masks, torch.sigmoid(scores).cpu().numpy().astype(np.float32))

    def _outputs(self, frame: int, rows: list[int], *, new: bool) -> list[dict[str, Any]]:
        """Per object at ``rows``: ``pred_masks`` ``(1, 1, h, w)`` logits at the model's mask
        size, ``object_score_logits``, ...; the memories stored."""
        if not self._batched:
            if new or self._edgetam_step is None:
                return self._run_each(frame, rows, new=new)
            return self._run_tracked_edgetam(frame, rows)
        return self._run_added(frame, rows) if new else self._run_tracked(frame, rows)

    def _run_tracked_edgetam(self, frame: int, rows: list[int]) -> list[dict[str, Any]]:
        """EdgeTAM's tracked objects through :class:`EdgeTamStep` (memories encoded)."""
        outputs = self._edgetam_step.track(self._session, frame, rows)
        store_step(self._session, frame, rows, outputs, new=False)
        return outputs

    def _store(self, frame: int, rows: list[int], out: dict[str, torch.Tensor], new: bool) -> None:
        """Store a batched step's outputs per object, and its memories encoded in one batch."""
        s, model = self._session, self.model
        store_step(
            s,
            frame,
            rows,
            [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(rows))],
            new=new,
        )
        feats, _ = model._prepare_vision_features(s, frame, 1)
        memory, pos = self._step.encode(
            feats[-1], out["high_res_masks"], out["object_score_logits"], from_input=new
        )
        key = "cond_frame_outputs" if new else "non_cond_frame_outputs"
        for i, idx in enumerate(rows):
            stored = s.output_dict_per_obj[idx][key][frame]
            stored["maskmem_features"] = memory[:, i : i + 1]
            stored["maskmem_pos_enc"] = pos

    def _run_added(self, frame: int, rows: list[int]) -> list[dict[str, torch.Tensor]]:
        """New objects from their masks, in one batch (their masks are the output)."""
        s, model = self._session, self.model
        feats, _ = model._prepare_vision_features(s, frame, 1)
        levels = [
            x.permute(1, 2, 0).reshape(1, x.shape[2], *size).expand(len(rows), -1, -1, -1)
            for x, size in zip(feats, model.backbone_feature_sizes)
        ]
        masks = torch.cat([s.mask_inputs_per_obj[idx][frame] for idx in rows])
        out = self._step.from_masks(levels, masks)
        self._store(frame, rows, out, new=True)
        return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(rows))]

    def _run_tracked(self, frame: int, rows: list[int]) -> list[dict[str, torch.Tensor]]:
        """Tracked objects through :meth:`Sam2Step.track` (grouped by memory layout)."""
        out = self._step.track(self._session, frame, rows, memory_frames=self.memory_frames)
        self._store(frame, rows, out, new=False)
        return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(rows))]

    def _run_each(self, frame: int, rows: list[int], *, new: bool) -> list[dict[str, Any]]:
        """transformers' per-object loop (``Sam2VideoModel.forward``); EdgeTAM's path."""
        s, model = self._session, self.model
        outputs = []
        for idx in rows:
            kwargs: dict[str, Any] = dict(
                inference_session=s,
                frame_idx=frame,
                obj_idx=idx,
                batch_size=1,
                is_init_cond_frame=new,
                point_inputs=s.point_inputs_per_obj[idx].get(frame) if new else None,
                mask_inputs=s.mask_inputs_per_obj[idx].get(frame) if new else None,
                reverse=False,
                streaming=True,
            )
            if self._memory_inside:
                kwargs["run_mem_encoder"] = True
            out = model._run_single_frame_inference(**kwargs)
            store_step(s, frame, [idx], [out], new=new)
            outputs.append(out)
        if not self._memory_inside:
            model._batch_encode_memories(
                inference_session=s,
                frame_idx=frame,
                objects_needing_memory_encoding=rows,
                high_res_masks_for_memory=[o["high_res_masks"] for o in outputs],
                object_score_logits_for_memory=[o["object_score_logits"] for o in outputs],
                is_mask_from_pts_per_obj=[new] * len(rows),
            )
        return outputs

    def _share_memory_pos(self, stored: dict[str, Any]) -> None:
        """Every memory's positional encoding is the same tensor (a sine of the shape): keep
        one copy instead of one per frame and object."""
        pos = stored.get("maskmem_pos_enc")
        if pos is None:
            return
        shared = self._memory_pos
        if shared is not None and shared.shape == pos.shape and torch.equal(shared, pos):
            stored["maskmem_pos_enc"] = shared
        else:
            self._memory_pos = pos
