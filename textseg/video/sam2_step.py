"""One SAM 2 tracking step for every live object at once, exact to transformers' per-object loop.

transformers' ``Sam2VideoModel`` tracks a frame by calling ``_run_single_frame_inference`` once
per object (memory-conditioned features, memory attention, mask decoder), then
``_batch_encode_memories``. :class:`Sam2Step` computes the same thing with the objects as the
batch dimension:

- **Groups by memory layout.** Objects whose memories sit at the same temporal offsets (same
  conditioning-frame offset, same past frames, same object pointers: typically every object
  added on the same keyframe) share the memory attention's token layout and run as one batch.
  Objects with another layout form another group; nothing is padded, so every object attends to
  exactly the tokens it attends to alone.
- **Shared work done once.** The frame's image features come from the session cache; the first
  memory-attention layer's self-attention reads only the image (identical for every object) and
  runs once per frame; the memory encoder's projection of the image runs once.
- **No re-projection of unchanged memories.** The cross-attention's keys are
  ``RoPE(k_proj(memory + spatial_pos + temporal_pos[offset]))``. The key projection is linear and
  RoPE rotates each position by a fixed angle, so this is ``RoPE(k_proj(memory + spatial_pos))``,
  cached per memory and layer when the memory is first read, plus ``RoPE(W_k temporal_pos
  [offset])``, one ``(HW, C)`` table per layer and offset. Values (``v_proj(memory)``) are
  cached likewise. A memory is read at up to ``num_maskmem`` offsets as it ages, so its
  projection runs once instead of once per frame; the cache lives in the memory's stored output
  and goes with it when the window drops it. It takes ``2 x layers x HW x C`` floats per memory
  and object (32 MiB at the published sizes, 7 memories per object); past the propagator's
  budget (``key_cache_bytes``), memories are projected on each read instead (same results).
- **Fused attention.** Both attentions run through one ``F.scaled_dot_product_attention`` call
  and the linear layers through oneDNN with prepacked weights
  (:func:`textseg.sam.modeling.kernels.linear`).

The results equal the per-object loop up to float summation order (logits within ~1e-5).

**Opt-in trade: memory at reduced resolution** (``memory_stride=s``, not exact). Each memory's
cached keys and values are averaged over ``s x s`` cells of the feature grid (the keys after
RoPE, so each pooled key is the mean of its cells' rotated keys), and each pooled key's logit
gets ``log(s * s)``: a pooled token stands for ``s * s`` similar tokens, and keeps their share of
the softmax against the object pointers. The cross-attention then reads ``s * s`` times fewer
memory tokens, which is where SAM 2's time per object goes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from textseg.sam.modeling.kernels import linear

__all__ = ["CACHE_KEY", "Sam2Step", "cached_bytes", "memory_layout", "store_step"]

#: transformers' placeholder logit for a missing object (``NO_OBJ_SCORE``).
_NO_OBJECT = -1024.0
#: Objects per attention call: bounds the concatenated keys/values (each object's are
#: ``layers x tokens x C`` floats, ~30 MB per layer at the published sizes).
_CHUNK = 8
#: Where a stored output keeps its cached projections (kept while the memory is read).
CACHE_KEY = "textseg_keys"


def _rotate_pairwise(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_pairwise(x) * sin


def _pool(x: torch.Tensor, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """``(HW, C)`` tokens on an ``H x W`` grid averaged over ``stride x stride`` cells
    (``(ceil(H / s) * ceil(W / s), C)``; cells cut by the border average what they hold)."""
    if stride == 1:
        return x
    h, w = grid
    image = x.T.reshape(1, -1, h, w)
    pooled = F.avg_pool2d(image, stride, stride, ceil_mode=True, count_include_pad=False)
    return pooled.flatten(2)[0].T.contiguous()


def _resize(
    x: torch.Tensor, size: tuple[int, int], dtype: torch.dtype, always: bool = False
) -> torch.Tensor:
    """Antialiased bilinear resize in float32, as SAM 2 resizes its masks (skipped when
    ``x`` already has ``size``, unless ``always``)."""
    if not always and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size, mode="bilinear", align_corners=False, antialias=True).to(
        dtype
    )


def cached_bytes(stored: dict[str, Any]) -> int:
    """Bytes of the projections :class:`Sam2Step` cached in one stored output (0: none)."""
    return sum(t.nbytes for pair in stored.get(CACHE_KEY) or () for t in pair)


def store_step(
    session: Any, frame: int, rows: list[int], outputs: list[dict[str, Any]], *, new: bool
) -> None:
    """Store one step's outputs per object as transformers' ``forward`` stores them: under the
    conditioning outputs for objects added on ``frame`` (``new``), else under the tracked
    ones, with the frame marked tracked."""
    for idx, out in zip(rows, outputs):
        session.store_output(idx, frame, output_value=out, is_conditioning_frame=new)
        if not new:
            session.frames_tracked_per_obj[idx][frame] = {"reverse": False}


def memory_layout(
    model: Any,
    outputs: dict[str, dict[int, dict[str, Any]]],
    frame: int,
    memory_frames: int,
    pointers: int | None = None,
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any]]]]:
    """What one object reads on ``frame``, as transformers' ``_gather_memory_frame_outputs`` and
    ``_get_object_pointers`` (forward in time) select it.

    Args:
        model: The ``Sam2VideoModel`` (or ``Sam3TrackerVideoModel``, the same code).
        outputs: The object's ``{"cond_frame_outputs": ..., "non_cond_frame_outputs": ...}``.
        frame: The frame being tracked.
        memory_frames: Past (non-conditioning) memory frames read, ``num_maskmem - 1`` exact.
        pointers: The object pointers the model uses (its ``max_object_pointers_to_use``):
            ``max_object_pointers_in_encoder`` (None, streaming) or, outside streaming,
            ``min(frames, max_object_pointers_in_encoder)``.

    Returns:
        ``(memories, pointers)``: ``(temporal offset, stored output)`` pairs in the order the
        model concatenates them (offset 0 for a conditioning frame's memory).
    """
    most = int(model.config.max_object_pointers_in_encoder) if pointers is None else pointers
    cond = outputs["cond_frame_outputs"]
    if not cond:
        raise ValueError(f"frame {frame}: an object without a conditioning frame cannot be tracked")
    selected, unselected = model._select_closest_cond_frames(
        frame, cond, max_cond_frame_num=model.config.max_cond_frame_num
    )
    memories = [(0, out) for out in selected.values()]
    past = outputs["non_cond_frame_outputs"]
    for offset in range(memory_frames, 0, -1):
        out = past.get(frame - offset, unselected.get(frame - offset))
        if out is not None:
            memories.append((offset, out))
    read = [(frame - t, out) for t, out in cond.items() if t <= frame]
    for offset in range(1, most):
        if frame - offset < 0:
            break
        out = past.get(frame - offset)
        if out is not None:
            read.append((offset, out))
    return memories, read


class Sam2Step:
    """Batched tracking step over a transformers ``Sam2VideoModel`` (see the module docstring).

    Args:
        model: The ``Sam2VideoModel`` (eval mode, no gradients), or SAM 3's
            ``Sam3TrackerVideoModel`` (transformers generates it from the same code).
        memory_stride: 1 (exact); ``s > 1`` reads each memory at ``1/s`` resolution (an
            opt-in trade, see the module docstring).
        cache_bytes: Budget for the memories' cached key/value projections, over every
            object of a session (None: unbounded); past it memories are projected on each read.
    """

    def __init__(self, model: Any, memory_stride: int = 1, cache_bytes: int | None = None) -> None:
        self.model = model
        self.memory_stride = int(memory_stride)
        self.cache_bytes = cache_bytes
        #: Bytes the memories' cached projections may still take during one step (None:
        #: unbounded); :meth:`track` sets it from :attr:`cache_bytes` and what is cached.
        self.cache_room: int | None = None
        #: The object pointers of the step being run (see :func:`memory_layout`).
        self._max_pointers = int(model.config.max_object_pointers_in_encoder)
        attention = model.memory_attention
        self._layers = list(attention.layers)
        self._rope_tables: tuple[torch.Tensor, torch.Tensor] | None = None
        self._offset_keys: dict[tuple[int, int], torch.Tensor] = {}

    # ------------------------------------------------------------------ rope
    def _tables(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``(HW, C)`` of the memory attention's axial RoPE on the feature grid."""
        if self._rope_tables is None:
            attention = self.model.memory_attention
            cos, sin = attention.rotary_emb(like, attention.position_ids)
            # (HW, head_dim) tiled over the heads: the pairs RoPE rotates stay inside a head.
            heads = self._layers[0].self_attn.num_attention_heads
            self._rope_tables = tuple(t[0].repeat(1, heads).to(like.dtype) for t in (cos, sin))
        return self._rope_tables

    def _offset_key(self, layer: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        """``RoPE(W_k temporal_pos[offset - 1])`` ``(HW, C)``: what a memory's temporal
        encoding adds to its cached keys at ``offset`` (offset 0: a conditioning frame)."""
        key = (layer, offset)
        if key not in self._offset_keys:
            proj = self._layers[layer].cross_attn_image.k_proj
            tpos = self.model.memory_temporal_positional_encoding[offset - 1].reshape(1, -1)
            cos, sin = self._tables(like)
            shift = F.linear(tpos.to(like.dtype), proj.weight)
            self._offset_keys[key] = self._pooled(_rope(shift, cos, sin))
        return self._offset_keys[key]

    def _memory_tokens(self) -> int:
        """Tokens of one memory as the cross-attention reads it (``memory_stride`` applied)."""
        h, w = self.model.backbone_feature_sizes[-1]
        return -(-h // self.memory_stride) * -(-w // self.memory_stride)

    def _pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """A memory's ``(HW, C)`` tokens as the cross-attention reads them (``memory_stride``)."""
        grid = tuple(self.model.backbone_feature_sizes[-1])
        return _pool(tokens, grid, self.memory_stride)

    def _memory_kv(
        self, stored: dict[str, Any], layer_idx: int, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A memory's ``(RoPE(k_proj(memory + pos)), v_proj(memory))`` for one layer: cached in
        the stored output for every layer on its first read while :attr:`cache_room` (bytes)
        allows, else computed for this layer only."""
        cached = stored.get(CACHE_KEY)
        if cached is not None:
            return cached[layer_idx]
        memory = stored["maskmem_features"].to(like.device, like.dtype)[:, 0]  # (HW, 64)
        keyed = memory + stored["maskmem_pos_enc"].to(like.device, like.dtype)[:, 0]
        cos, sin = self._tables(like)

        def project(layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
            attn = layer.cross_attn_image
            keys = _rope(linear(attn.k_proj, keyed), cos, sin)
            return self._pooled(keys), self._pooled(linear(attn.v_proj, memory))

        width = self._layers[0].cross_attn_image.internal_dim
        size = 2 * self._memory_tokens() * width * like.element_size() * len(self._layers)
        if self.cache_room is not None and size > self.cache_room:
            return project(self._layers[layer_idx])
        cached = [project(layer) for layer in self._layers]
        stored[CACHE_KEY] = cached
        if self.cache_room is not None:
            self.cache_room -= size
        return cached[layer_idx]

    # ------------------------------------------------------------------ one step
    def track(
        self,
        session: Any,
        frame: int,
        rows: list[int],
        *,
        memory_frames: int,
        pointers: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """transformers' per-object ``_run_single_frame_inference`` on a tracked frame (no new
        inputs) for the objects at ``rows`` of ``session``, batched; nothing is stored.

        Objects are grouped by memory layout (:func:`memory_layout`) and conditioned group by
        group; the mask decoder then runs once for all.

        Args:
            session: The inference session (its frame features cached for ``frame``).
            frame: The frame being tracked.
            rows: Object indices in the session.
            memory_frames: Past memory frames read (``num_maskmem - 1``: exact).
            pointers: See :func:`memory_layout`.

        Returns:
            The outputs of :meth:`decode`, row ``i`` for the object at ``rows[i]``.
        """
        model = self.model
        self._max_pointers = (
            int(model.config.max_object_pointers_in_encoder) if pointers is None else pointers
        )
        groups: dict[tuple, list[tuple[int, list, list]]] = {}
        for idx in rows:
            outputs = session.output_dict_per_obj[idx]
            mems, ptrs = memory_layout(model, outputs, frame, memory_frames, pointers)
            layout = (tuple(o for o, _ in mems), tuple(o for o, _ in ptrs))
            groups.setdefault(layout, []).append((idx, mems, ptrs))
        if self.cache_bytes is not None:
            used = sum(
                cached_bytes(stored)
                for outputs in session.output_dict_per_obj.values()
                for kind in outputs.values()
                for stored in kind.values()
            )
            self.cache_room = self.cache_bytes - used
        feats, pos = model._prepare_vision_features(session, frame, 1)
        conditioned = self.condition(
            feats[-1], pos[-1], [[(m, p) for _, m, p in g] for g in groups.values()]
        )
        out = self.decode_frame(torch.cat(conditioned), feats)
        order = [idx for g in groups.values() for idx, _, _ in g]
        if order != list(rows):
            at = {idx: i for i, idx in enumerate(order)}
            back = torch.tensor([at[idx] for idx in rows], device=out["pred_masks"].device)
            out = {k: v.index_select(0, back) for k, v in out.items()}
        return out

    # ------------------------------------------------------------------ attention
    def _self_attention(self, layer: Any, x: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        cos, sin = self._tables(x)
        y = layer.layer_norm1(x)
        q = _rope(linear(attn.q_proj, y), cos, sin)
        k = _rope(linear(attn.k_proj, y), cos, sin)
        v = linear(attn.v_proj, y)
        out = self._attend(attn, q, k, v)
        return x + linear(attn.o_proj, out)

    @staticmethod
    def _attend(
        attn: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Multi-head attention of ``(B, N, C)`` tensors, one fused call (``bias``: ``(T,)``
        added to every query's logit of each key)."""
        heads = attn.num_attention_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (heads, -1)).transpose(1, 2)

        mask = None if bias is None else bias.to(q.dtype).expand(q.shape[1], -1)
        out = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=mask, scale=attn.scaling
        )
        return out.transpose(1, 2).flatten(2)

    def _cross_inputs(
        self,
        layer_idx: int,
        objects: list[tuple[list[tuple[int, dict]], torch.Tensor | None, torch.Tensor | None]],
        like: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, tokens, C)`` of one group's memories for layer ``layer_idx``."""
        attn = self._layers[layer_idx].cross_attn_image
        memories, pointers, _ = objects[0]
        hw = self._memory_tokens()
        spatial = len(memories) * hw
        n_ptr = 0 if pointers is None else pointers.shape[1]
        width = attn.internal_dim
        keys = like.new_empty(len(objects), spatial + n_ptr, width)
        values = like.new_empty(len(objects), spatial + n_ptr, width)
        for b, (mems, ptr, ptr_pos) in enumerate(objects):
            for j, (offset, stored) in enumerate(mems):
                k, v = self._memory_kv(stored, layer_idx, like)
                rows = slice(j * hw, (j + 1) * hw)
                torch.add(k, self._offset_key(layer_idx, offset, like), out=keys[b, rows])
                values[b, rows] = v
            if n_ptr:
                keys[b, spatial:] = linear(attn.k_proj, ptr[b] + ptr_pos)
                values[b, spatial:] = linear(attn.v_proj, ptr[b])
        return keys, values

    def condition(
        self,
        features: torch.Tensor,
        position: torch.Tensor,
        groups: list[list[tuple[list[tuple[int, dict]], list[tuple[int, dict]]]]],
    ) -> list[torch.Tensor]:
        """Memory-conditioned features of every object, group by group.

        Args:
            features: ``(HW, 1, C)`` top-level image features of the frame.
            position: ``(HW, 1, C)`` their positional encoding.
            groups: Per group, per object, the ``(memories, pointers)`` of :func:`memory_layout`
                (the same offsets for every object of a group).

        Returns:
            Per group, ``(B, C, H, W)`` features for the mask decoder.
        """
        model = self.model
        x = (features + 0.1 * position).transpose(0, 1)  # (1, HW, C)
        first = self._self_attention(self._layers[0], x)  # the same for every object
        h, w = model.backbone_feature_sizes[-1]
        results = []
        for group in groups:
            offsets = [o for o, _ in group[0][1]]
            outs = []
            for start in range(0, len(group), _CHUNK):
                chunk = group[start : start + _CHUNK]
                ptr, ptr_pos = self._pointers(chunk, offsets, x)
                objects = [(mems, ptr, ptr_pos) for mems, _ in chunk]
                y = first.expand(len(chunk), -1, -1)
                for i, layer in enumerate(self._layers):
                    if i:
                        y = self._self_attention(layer, y)
                    y = self._cross_attention(i, layer, y, objects)
                    z = F.relu(linear(layer.linear1, layer.layer_norm3(y)))
                    y = y + linear(layer.linear2, z)
                y = model.memory_attention.layer_norm(y)
                outs.append(y.transpose(1, 2).reshape(len(chunk), -1, h, w))
            results.append(torch.cat(outs))
        return results

    def _cross_attention(
        self, i: int, layer: Any, y: torch.Tensor, objects: list[tuple]
    ) -> torch.Tensor:
        attn = layer.cross_attn_image
        cos, sin = self._tables(y)
        q = _rope(linear(attn.q_proj, layer.layer_norm2(y)), cos, sin)
        keys, values = self._cross_inputs(i, objects, y)
        bias = None
        if self.memory_stride > 1 and objects[0][1] is not None:  # pooled tokens vs pointers
            bias = keys.new_zeros(keys.shape[1])
            bias[: keys.shape[1] - objects[0][1].shape[1]] = 2 * math.log(self.memory_stride)
        return y + linear(attn.o_proj, self._attend(attn, q, keys, values, bias))

    def _pointers(
        self, chunk: list[tuple], offsets: list[int], like: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Object-pointer tokens ``(B, P * splits, 64)`` and their encoding ``(P * splits, 64)``
        as transformers' ``_process_object_pointers`` builds them."""
        if not offsets:
            return None, None
        model = self.model
        tokens = [
            torch.cat([pointers[j][1]["object_pointer"].reshape(1, -1) for _, pointers in chunk])
            for j in range(len(offsets))
        ]
        ptr, pos = model._process_object_pointers(
            offsets,
            tokens,
            self._max_pointers,
            len(chunk),
            model.hidden_dim,
            like.device,
        )
        # (P * splits, B, 64) sequence-first -> batch-first
        return ptr.to(like.dtype).transpose(0, 1), pos[:, 0].to(like.dtype)

    # ------------------------------------------------------------------ decoder
    def decode_frame(
        self, conditioned: torch.Tensor, features: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """:meth:`decode` of tracked objects (no prompts, the model's tracking multimask
        setting) from the frame's sequence-first features ``(HW_i, 1, C_i)``, top level
        last, as the session caches them."""
        model = self.model
        high_res = [
            x.permute(1, 2, 0).reshape(1, x.shape[2], *size)
            for x, size in zip(features[:-1], model.backbone_feature_sizes[:-1])
        ]
        return self.decode(conditioned, high_res, multimask=model._use_multimask(False, None))

    def decode(
        self,
        conditioned: torch.Tensor,
        high_res: list[torch.Tensor],
        multimask: bool,
        mask_prompts: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """transformers' ``_single_frame_forward`` without prompts, batched over objects.

        Args:
            conditioned: ``(B, C, H, W)`` memory-conditioned features.
            high_res: The two high-resolution feature maps ``(1, C_i, H_i, W_i)``.
            multimask: Whether the decoder outputs three masks and keeps the best.
            mask_prompts: ``(B, 1, h, w)`` mask prompts (for objects added from masks).

        Returns:
            ``pred_masks`` ``(B, 1, h, w)``, ``high_res_masks`` ``(B, 1, S, S)``,
            ``object_pointer`` ``(B, 1, C)``, ``object_score_logits`` ``(B, 1, 1)``.
        """
        model = self.model
        b = conditioned.shape[0]
        dtype, device = conditioned.dtype, conditioned.device
        n = 1 if mask_prompts is None else b
        sparse, dense = model.prompt_encoder(
            input_points=torch.zeros(n, 1, 1, 2, dtype=dtype, device=device),
            input_labels=-torch.ones(n, 1, 1, dtype=torch.int32, device=device),
            input_boxes=None,
            input_masks=mask_prompts,
        )
        image_pe = model.get_image_wide_positional_embeddings()
        low, iou, tokens, scores = model.mask_decoder(
            image_embeddings=conditioned,
            image_positional_embeddings=image_pe.expand(b, -1, -1, -1),
            sparse_prompt_embeddings=sparse.expand(b, -1, -1, -1),
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=[f.expand(b, -1, -1, -1) for f in high_res],
        )
        rows = torch.arange(b, device=device)
        best = iou[:, 0].argmax(-1) if multimask else torch.zeros_like(rows)
        low = low[rows, 0, best][:, None]  # (B, 1, h, w)
        token = tokens[rows, 0, best if tokens.shape[2] > 1 else 0][:, None]  # (B, 1, C)
        appearing = scores > 0  # (B, 1, 1)
        low = torch.where(appearing[..., None], low, _NO_OBJECT)
        size = int(model.image_size)
        high = F.interpolate(low.float(), (size, size), mode="bilinear", align_corners=False)
        pointer = model.object_pointer_proj(token)
        weight = appearing.to(pointer.dtype)
        pointer = weight * pointer + (1 - weight) * model.no_object_pointer
        return {
            "pred_masks": low,
            "object_pointer": pointer,
            "high_res_masks": high.to(low.dtype),
            "object_score_logits": scores,
        }

    def from_masks(
        self, levels: list[torch.Tensor], masks: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """transformers' ``_use_mask_as_output`` for ``B`` objects added from masks (its own
        broadcasting only holds for one).

        Args:
            levels: The frame's feature maps ``(B, C_i, H_i, W_i)``, top level last.
            masks: ``(B, 1, S, S)`` binary masks at the model's input size.

        Returns:
            The outputs of :meth:`decode`, the masks as logits of -10 / +10.
        """
        model = self.model
        dtype = levels[-1].dtype
        size = int(model.image_size)
        small = tuple(model.prompt_encoder.mask_input_size)
        given = _resize(masks.to(dtype), (size, size), masks.dtype)
        high = given * 20.0 - 10.0  # sigmoid(-10) = 4.5e-5
        low = _resize(high, small, dtype, always=True)
        prompt = _resize(model.mask_downsample(given.to(dtype)), small, dtype)
        pointer = self.decode(levels[-1], levels[:-1], False, prompt)["object_pointer"]
        appearing = (masks.flatten(1).float() > 0).any(1).to(dtype)[:, None, None]
        pointer = appearing * pointer + (1 - appearing) * model.no_object_pointer
        return {
            "pred_masks": low,
            "object_pointer": pointer,
            "high_res_masks": high,
            "object_score_logits": 20.0 * appearing - 10.0,
        }

    # ------------------------------------------------------------------ memory encoder
    def encode(
        self,
        features: torch.Tensor,
        high_res_masks: torch.Tensor,
        score_logits: torch.Tensor,
        from_input: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' ``_encode_new_memory`` for ``B`` objects on one frame, the image's
        projection computed once.

        Args:
            features: ``(HW, 1, C)`` top-level image features.
            high_res_masks: ``(B, 1, S, S)`` mask logits.
            score_logits: ``(B, 1, 1)`` object score logits.
            from_input: The masks were given (binarised) rather than predicted (sigmoid).

        Returns:
            ``maskmem_features`` ``(HW, B, 64)`` bfloat16 and ``maskmem_pos_enc`` ``(HW, 1, 64)``.
        """
        model = self.model
        encoder = model.memory_encoder
        h, w = model.backbone_feature_sizes[-1]
        side_h, side_w = (4 * s for s in model.prompt_encoder.mask_input_size)
        masks = _resize(high_res_masks, (side_h, side_w), high_res_masks.dtype)
        pix = features.permute(1, 2, 0).reshape(1, -1, h, w)
        masks = (masks > 0).to(masks.dtype) if from_input else torch.sigmoid(masks)
        masks = (
            masks * model.config.sigmoid_scale_for_mem_enc + model.config.sigmoid_bias_for_mem_enc
        )
        fused = encoder.feature_projection(pix) + encoder.mask_downsampler(masks)
        fused = encoder.projection(encoder.memory_fuser(fused))
        pos = encoder.position_encoding(fused[:1].shape, fused.device, fused.dtype)
        if model.occlusion_spatial_embedding_parameter is not None:
            absent = 1 - (score_logits > 0).float()  # (B, 1, 1)
            occlusion = model.occlusion_spatial_embedding_parameter[..., None, None]
            fused = fused + absent[..., None] * occlusion
        memory = fused.to(torch.bfloat16).flatten(2).permute(2, 0, 1)
        return memory, pos.to(high_res_masks.dtype).flatten(2).permute(2, 0, 1)
