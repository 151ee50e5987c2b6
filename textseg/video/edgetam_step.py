"""One EdgeTAM tracking step for every live object at once, equal to transformers' per-object
loop up to float summation order.

transformers' ``EdgeTamVideoModel`` tracks a frame by calling ``_run_single_frame_inference``
once per object: memory-conditioned features (memory attention over the object's memories,
which EdgeTAM's spatial perceiver has already reduced to a few hundred tokens, and its object
pointers), the mask decoder, then the memory encoder and perceiver on the new mask.
:class:`EdgeTamStep` runs the same modules with the objects as the batch dimension:

- objects are grouped by memory layout (the same number of memories and pointers); each
  object's tokens are gathered with transformers' own ``_gather_memory_frame_outputs``,
  ``_build_memory_attention_inputs``, ``_get_object_pointers`` and
  ``_process_object_pointers``, and each group runs through the memory attention in batches
  of ``attention_batch`` objects (on a CPU one at a time: batching transformers' EdgeTAM
  attention was slower there, see :class:`EdgeTamStep`);
- the mask decoder runs once for all objects (:meth:`Sam2Step.decode`: EdgeTAM's
  ``_single_frame_forward`` is SAM 2's);
- the memory encoder and spatial perceiver still run per object: transformers' perceiver
  (``_forward_2d``) only accepts a batch of one.

Unlike SAM 2's step, nothing here computes less than transformers' loop: what batching saves
is per-call overhead (the decoder's passes, and on a GPU the memory attention's kernel
launches). On a CPU at the published size it is about even with the loop (README).
"""

from __future__ import annotations

from typing import Any

import torch

from textseg.video.sam2_step import Sam2Step

__all__ = ["EdgeTamStep"]


class EdgeTamStep:
    """Batched tracking step over a transformers ``EdgeTamVideoModel`` (module docstring).

    Args:
        model: The ``EdgeTamVideoModel`` (eval mode, no gradients).
        attention_batch: Objects per memory-attention call; None: every object of a layout
            group at once. Default: 1 on a CPU (measured: transformers' EdgeTAM memory
            attention over 8 objects took 8.99 s as one batch and 7.78 s one object at a
            time, at the published size), the whole group on a GPU.
    """

    def __init__(self, model: Any, attention_batch: int | str | None = "auto") -> None:
        self.model = model
        if attention_batch == "auto":
            device = next(model.parameters()).device
            attention_batch = 1 if device.type == "cpu" else None
        self.attention_batch = attention_batch
        self._decoder = Sam2Step(model)

    def _inputs(
        self, session: Any, idx: int, frame: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """One object's memory tokens ``(T, 1, C)``, their encoding, its memory count and its
        pointer-token count, as ``_prepare_memory_conditioned_features`` concatenates them."""
        model = self.model
        picked = model._gather_memory_frame_outputs(session, idx, frame, False)
        memories, positions = model._build_memory_attention_inputs(picked, device)
        spatial = len(memories)
        offsets, tokens, most = model._get_object_pointers(
            session, idx, frame, session.num_frames, device, False, True
        )
        pointers = 0
        if tokens:
            ptr, ptr_pos = model._process_object_pointers(
                offsets, tokens, most, 1, model.hidden_dim, device
            )
            if ptr is not None:
                memories.append(ptr)
                positions.append(ptr_pos)
                pointers = ptr.shape[0]
        return torch.cat(memories), torch.cat(positions), spatial, pointers

    def track(self, session: Any, frame: int, rows: list[int]) -> list[dict[str, torch.Tensor]]:
        """transformers' ``_run_single_frame_inference`` (memory encoded) on a tracked frame for
        the objects at ``rows``, batched; per object, its output (nothing is stored).

        Returns:
            Per object at ``rows``: ``pred_masks``, ``object_pointer``, ``maskmem_features``,
            ``maskmem_pos_enc``, ``object_score_logits``, shaped as transformers' loop.
        """
        model = self.model
        feats, pos = model._prepare_vision_features(session, frame, 1)
        top, top_pos = feats[-1], pos[-1]
        device = top.device
        h, w = model.backbone_feature_sizes[-1]
        groups: dict[tuple, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        for idx in rows:
            memory, position, spatial, pointers = self._inputs(session, idx, frame, device)
            groups.setdefault((memory.shape, spatial, pointers), []).append((idx, memory, position))
        conditioned, order = [], []
        chunk = self.attention_batch or len(rows)
        for (_, spatial, pointers), group in groups.items():
            for start in range(0, len(group), chunk):
                part = group[start : start + chunk]
                b = len(part)
                out = model.memory_attention(
                    current_vision_features=top.expand(-1, b, -1),
                    current_vision_position_embeddings=top_pos.expand(-1, b, -1),
                    memory=torch.cat([m for _, m, _ in part], dim=1),
                    memory_posision_embeddings=torch.cat([p for _, _, p in part], dim=1),
                    num_object_pointer_tokens=pointers,
                    num_spatial_memory_tokens=spatial,
                )
                # (1, B, HW, C) sequence-first, as transformers' memory attention returns it
                conditioned.append(out[0].transpose(1, 2).reshape(b, -1, h, w))
                order.extend(idx for idx, _, _ in part)
        out = self._decoder.decode_frame(torch.cat(conditioned), feats)
        at = {idx: i for i, idx in enumerate(order)}
        results = []
        for idx in rows:
            i = at[idx]
            scores = out["object_score_logits"][i : i + 1]
            # One object at a time: transformers' perceiver (``_forward_2d``) views an
            # expanded tensor, which only holds for a batch of one.
            memory, memory_pos = model._encode_new_memory(
                current_vision_feats=top,
                pred_masks_high_res=out["high_res_masks"][i : i + 1],
                object_score_logits=scores,
                is_mask_from_pts=False,
            )
            results.append(
                {
                    "pred_masks": out["pred_masks"][i : i + 1],
                    "object_pointer": out["object_pointer"][i : i + 1],
                    "maskmem_features": memory,
                    "maskmem_pos_enc": memory_pos,
                    "object_score_logits": scores,
                }
            )
        return results
