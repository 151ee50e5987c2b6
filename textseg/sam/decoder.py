"""A faster forward pass for segment_anything's mask decoder, on the decoder's own weights.

Where the official ``MaskDecoder`` spends its time, per prompt (measured on CPU, vit_b,
``benchmarks/bench_sam_core.py``): copying the image embedding and its positional encoding
once per prompt (``repeat_interleave``); projecting all 4096 image tokens in every cross
attention, although only 5-7 prompt tokens sit on the other side; recomputing the dense
positional encoding on every call; a softmax over rows of 7 elements (slow to vectorise);
and NCHW transposes around the output upscaling. Here:

* the image embedding stays ``(1, HW, C)`` and broadcasts against ``(N, T, C)`` prompt tokens;
* with no mask input, the first block's image-side projections are computed once per image
  (:class:`DecoderContext`, kept with the cached embedding) and reused by every chunk and click;
* cross attention is re-associated so the image is never projected: ``q . W_k x = (W_k^T q) . x``
  and ``P (x W_v^T) = (P x) W_v^T`` (and the mirror image for image->token attention), which
  costs ``H*T`` instead of ``D`` multiply-adds per image token and channel (56 vs 128 for SAM);
* softmaxes run over the image axis layout ``(N, H, T, HW)``;
* the output upscaling (two stride-2 transposed convolutions with a channel LayerNorm) runs
  channels-last as matrix products through oneDNN with prepacked weights and the second GELU
  fused (:mod:`textseg.sam.modeling.kernels`), and the hypernetwork dot product is taken before
  the final NCHW reshape, so only the K requested masks are ever laid out as images;
* the upscaling, which is per pixel, can skip the embedding rows and columns that only cover
  the padding of the model input (``region``; a 4:3 image leaves a quarter of the rows
  unused) when the caller only needs the masks inside the image;
* the image->token attention folds the output bias into the values (each head's attention
  weights sum to one), so its output is one plain batched product, not a product added to a
  broadcast copy of the bias.

The result equals the official decoder up to float re-association (tested to 1e-4 on predicted
IoU and >= 0.99 mask IoU at vit_b size in ``tests/sam/test_core.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.transformer import Attention

from textseg.sam.modeling.kernels import linear_packed, pack_weight

__all__ = ["DecoderContext", "UpscalingWeights", "decode_masks", "make_context"]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _tokens_to_image(
    mod: Attention, tokens: torch.Tensor, img_k: torch.Tensor, img_v: torch.Tensor
) -> torch.Tensor:
    """Few tokens attend to many image positions, without projecting the image.

    ``q . (W_k x + b_k) = (W_k^T q) . x + const`` (the constant cancels in the softmax) and
    ``softmax(S) (x W_v^T + b_v) = (softmax(S) x) W_v^T + b_v`` (rows sum to 1).

    Args:
        tokens: ``(N, T, C)`` queries (before projection).
        img_k: ``(B, HW, C)`` image keys before projection, B = N or 1 (broadcast).
        img_v: ``(B, HW, C)`` image values before projection.

    Returns:
        ``(N, T, C)`` attention output (after ``out_proj``).
    """
    n, t, c = tokens.shape
    h = mod.num_heads
    d = mod.internal_dim // h
    q = mod.q_proj(tokens).view(n, t, h, d).transpose(1, 2) * (1.0 / math.sqrt(d))
    qk = (q @ mod.k_proj.weight.view(h, d, c)).reshape(n, h * t, c)  # (N, hT, C)
    # Scores as (N, HW, hT): the big image operand is used untransposed (no copy).
    scores = torch.bmm(img_k.expand(n, -1, -1), qk.transpose(1, 2))
    probs = torch.softmax(scores, dim=1)  # over HW
    pv = torch.bmm(probs.transpose(1, 2), img_v.expand(n, -1, -1)).view(n, h, t, c)
    out = pv @ mod.v_proj.weight.view(h, d, c).transpose(1, 2) + mod.v_proj.bias.view(h, 1, d)
    return mod.out_proj(out.transpose(1, 2).reshape(n, t, h * d))


def _image_to_tokens(
    mod: Attention,
    img_q: torch.Tensor | None,
    tokens_k: torch.Tensor,
    tokens_v: torch.Tensor,
    shared_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Many image positions attend to few tokens, without projecting the image.

    Scores are ``x (W_q^T k) + b_q . k``; the output is ``sum_h P_h (v_h W_o,h^T) + b_o``.

    Args:
        img_q: ``(B, HW, C)`` image queries before projection (B = N or 1), or None when
            ``shared_q`` is given.
        tokens_k: ``(N, T, C)`` token keys before projection.
        tokens_v: ``(N, T, C)`` token values before projection.
        shared_q: ``(1, h, d, HW)`` queries projected once per image (transposed).

    Returns:
        ``(N, HW, C)`` attention output (after ``out_proj``).
    """
    n, t, c = tokens_k.shape
    h = mod.num_heads
    d = mod.internal_dim // h
    k = mod.k_proj(tokens_k).view(n, t, h, d).transpose(1, 2) * (1.0 / math.sqrt(d))
    if shared_q is not None:
        scores = k @ shared_q  # (N, h, T, HW)
    else:
        assert img_q is not None
        a = (k @ mod.q_proj.weight.view(h, d, c)).reshape(n, h * t, c)  # (N, hT, C)
        bias = (k @ mod.q_proj.bias.view(h, d, 1)).reshape(n, 1, h * t)
        # (N, HW, hT) with the image untransposed, then a cheap transpose of the narrow result.
        scores = torch.baddbmm(bias, img_q.expand(n, -1, -1), a.transpose(1, 2))
        scores = scores.transpose(1, 2).reshape(n, h, t, -1)
    # Softmax over the T prompt tokens, laid out so the long HW axis is the contiguous one.
    probs = torch.softmax(scores, dim=2).view(n, h * t, -1)
    v = mod.v_proj(tokens_v).view(n, t, h, d).transpose(1, 2)  # (N, h, T, d)
    w_o = mod.out_proj.weight.view(c, h, d).permute(1, 2, 0)  # (h, d, C)
    # Each head's weights over the T tokens sum to one, so adding b_o / h to every token's
    # row adds exactly b_o to the output.
    b = (v @ w_o + mod.out_proj.bias / h).reshape(n, h * t, c)
    return torch.bmm(probs.transpose(1, 2), b)


def _attend_shared(
    mod: Attention, tokens: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Tokens attend to image keys/values projected once per image (``(1, h, HW, d)``)."""
    n, t, _ = tokens.shape
    h = mod.num_heads
    q = _heads(mod.q_proj(tokens), h)
    probs = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(n, t, -1)
    return mod.out_proj(out)


@dataclass
class UpscalingWeights:
    """The decoder's output upscaling as channels-last matrices.

    ``ConvTranspose2d(k=2, s=2)`` maps each input pixel independently to a 2x2 block: a matrix
    product ``(C_in) -> (2, 2, C_out)``.
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    ln_weight: torch.Tensor
    ln_bias: torch.Tensor
    ln_eps: float
    c1: int
    c2: int
    #: oneDNN-packed ``w1.T`` / ``w2.T`` (None where oneDNN cannot take them).
    p1: torch.Tensor | None = None
    p2: torch.Tensor | None = None
    #: Versions of the decoder parameters these were made from (see :meth:`is_current`).
    key: tuple = ()

    @staticmethod
    def _key(decoder: MaskDecoder) -> tuple:
        tensors = [p for m in decoder.output_upscaling for p in m.parameters()]
        return tuple((id(t), t._version, t.data_ptr(), t.dtype) for t in tensors)

    def is_current(self, decoder: MaskDecoder) -> bool:
        """False once a parameter of the upscaling changed (a state dict loaded, a cast)."""
        return self.key == self._key(decoder)

    @classmethod
    def from_decoder(cls, decoder: MaskDecoder) -> UpscalingWeights:
        conv1, norm, act1, conv2, act2 = decoder.output_upscaling
        for mod in (conv1, conv2):
            if not (
                isinstance(mod, torch.nn.ConvTranspose2d)
                and mod.kernel_size == (2, 2)
                and mod.stride == (2, 2)
            ):
                raise TypeError(f"unexpected output upscaling layer {mod}")
        if not (isinstance(act1, torch.nn.GELU) and isinstance(act2, torch.nn.GELU)):
            raise TypeError("the fast decoder supports GELU activations in the upscaling only")
        c_in, c1 = conv1.weight.shape[:2]
        c2 = conv2.weight.shape[1]
        # (C_in, C_out, ky, kx) -> (C_in, ky, kx, C_out)
        with torch.no_grad():
            w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c1).contiguous()
            w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2).contiguous()
            b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
        return cls(
            w1=w1,
            b1=b1,
            w2=w2,
            b2=b2,
            ln_weight=norm.weight,
            ln_bias=norm.bias,
            ln_eps=float(norm.eps),
            c1=int(c1),
            c2=int(c2),
            p1=pack_weight(w1.t().contiguous(), 8192),
            p2=pack_weight(w2.t().contiguous(), 32768),
            key=cls._key(decoder),
        )


def _upscale_and_project(
    up: UpscalingWeights, keys: torch.Tensor, grid: tuple[int, int], hyper: torch.Tensor
) -> torch.Tensor:
    """Output upscaling + hypernetwork product, channels-last.

    Args:
        keys: ``(N, HW, C)`` image tokens after the transformer.
        grid: ``(h, w)``.
        hyper: ``(N, K, C2)`` hypernetwork outputs of the requested mask tokens.

    Returns:
        ``(N, K, 4h, 4w)`` mask logits.
    """
    n = keys.shape[0]
    h, w = grid
    x = keys.reshape(-1, keys.shape[-1])
    x = linear_packed(x, up.w1.t(), up.b1, up.p1)  # (N*HW, 4*C1): ky, kx, c
    x = F.layer_norm(x.view(-1, up.c1), (up.c1,), up.ln_weight, up.ln_bias, up.ln_eps)
    x = F.gelu(x)
    x = linear_packed(x, up.w2.t(), up.b2, up.p2, "gelu")  # (N*HW*4, 4*C2): ky2, kx2, c
    k = hyper.shape[1]
    # (N, HW*4*4, C2) @ (N, C2, K) -> (N, h, w, ky, kx, ky2, kx2, K)
    m = torch.bmm(x.view(n, -1, up.c2), hyper.transpose(1, 2))
    m = m.view(n, h, w, 2, 2, 2, 2, k)
    # Row = 4y + 2ky + ky2, column = 4x + 2kx + kx2.
    return m.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(n, k, 4 * h, 4 * w)


@dataclass
class DecoderContext:
    """Prompt-independent decoder state of one image.

    Attributes:
        image_tokens: ``(1, HW, C)`` the image embedding as tokens.
        keys: ``(1, HW, C)`` image tokens plus the no-mask dense embedding.
        key_pe: ``(1, HW, C)`` positional encoding of the image tokens.
        t2i_k: ``(1, heads, HW, d)`` first block's token->image keys.
        t2i_v: ``(1, heads, HW, d)`` first block's token->image values.
        i2t_q: ``(1, heads, d, HW)`` first block's image->token queries (transposed).
        upscaling: The output upscaling weights as matrices.
        grid: ``(h, w)`` of the embedding.
    """

    image_tokens: torch.Tensor
    keys: torch.Tensor
    key_pe: torch.Tensor
    t2i_k: torch.Tensor
    t2i_v: torch.Tensor
    i2t_q: torch.Tensor
    upscaling: UpscalingWeights
    grid: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for t in (self.image_tokens, self.keys, self.t2i_k, self.t2i_v, self.i2t_q)
        )


def make_context(
    decoder: MaskDecoder,
    embedding: torch.Tensor,
    image_pe: torch.Tensor,
    no_mask: torch.Tensor,
    upscaling: UpscalingWeights | None = None,
) -> DecoderContext:
    """Precompute the prompt-independent part of the decoder for one image.

    Args:
        decoder: The model's mask decoder.
        embedding: ``(1, C, h, w)`` image embedding.
        image_pe: ``(1, C, h, w)`` dense positional encoding.
        no_mask: ``(1, C, 1, 1)`` dense prompt embedding used when there is no mask input.
        upscaling: Precomputed :class:`UpscalingWeights` (shared across images).
    """
    _, _, h, w = embedding.shape
    keys = (embedding + no_mask).flatten(2).transpose(1, 2)
    image_tokens = embedding.flatten(2).transpose(1, 2)
    key_pe = image_pe.flatten(2).transpose(1, 2)
    first = decoder.transformer.layers[0]
    t2i = first.cross_attn_token_to_image
    i2t = first.cross_attn_image_to_token
    k_in = keys + key_pe
    i2t_q = _heads(i2t.q_proj(k_in), i2t.num_heads).transpose(-2, -1).contiguous()
    return DecoderContext(
        image_tokens=image_tokens,
        keys=keys,
        key_pe=key_pe,
        t2i_k=_heads(t2i.k_proj(k_in), t2i.num_heads).contiguous(),
        t2i_v=_heads(t2i.v_proj(keys), t2i.num_heads).contiguous(),
        i2t_q=i2t_q,
        upscaling=upscaling or UpscalingWeights.from_decoder(decoder),
        grid=(h, w),
    )


def decode_masks(
    decoder: MaskDecoder,
    context: DecoderContext,
    sparse: torch.Tensor,
    dense: torch.Tensor | None,
    mask_tokens: slice,
    region: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the two-way transformer and mask head for N prompts on one image.

    Args:
        decoder: The model's mask decoder.
        context: The image's :class:`DecoderContext`.
        sparse: ``(N, T, C)`` sparse prompt embeddings (points, boxes).
        dense: ``(N, C, h, w)`` dense embeddings of mask inputs, or None for no mask input
            (then the precomputed first-block projections are reused).
        mask_tokens: Which of the decoder's mask tokens to return (``slice(0, 1)`` for the
            single-mask output, ``slice(1, None)`` for the three multimask outputs,
            ``slice(0, None)`` for all four).
        region: ``(rows, cols)`` of the embedding grid whose masks are needed (the top-left
            corner); the upscaling, which is per pixel, skips the rest. None: all.

    Returns:
        ``(N, K, 4 rows, 4 cols)`` low-res mask logits (``(N, K, 4h, 4w)`` without
        ``region``) and ``(N, K)`` predicted IoU.
    """
    n = sparse.shape[0]
    transformer = decoder.transformer
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)

    key_pe = context.key_pe
    if dense is None:
        keys = context.keys
    else:
        keys = context.image_tokens + dense.flatten(2).transpose(1, 2)

    queries = tokens
    query_pe = tokens
    for index, layer in enumerate(transformer.layers):
        shared = index == 0 and dense is None
        # (1) self-attention of the tokens
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        # (2) tokens attend to the image; (4) below reuses keys + pe (keys change after (4))
        t2i = layer.cross_attn_token_to_image
        keys_pe = None if shared else keys + key_pe
        if shared:
            attn = _attend_shared(t2i, queries + query_pe, context.t2i_k, context.t2i_v)
        else:
            attn = _tokens_to_image(t2i, queries + query_pe, keys_pe, keys)
        queries = layer.norm2(queries + attn)
        # (3) MLP on the tokens
        queries = layer.norm3(queries + layer.mlp(queries))
        # (4) the image attends to the tokens
        i2t = layer.cross_attn_image_to_token
        q_tok = queries + query_pe
        attn = _image_to_tokens(
            i2t, keys_pe, q_tok, queries, shared_q=context.i2t_q if shared else None
        )
        keys = layer.norm4(keys + attn)

    final = transformer.final_attn_token_to_image
    attn = _tokens_to_image(final, queries + query_pe, keys + key_pe, keys)
    queries = transformer.norm_final_attn(queries + attn)

    iou_pred = decoder.iou_prediction_head(queries[:, 0, :])[:, mask_tokens]
    token_ids = range(decoder.num_mask_tokens)[mask_tokens]
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[i](queries[:, 1 + i, :]) for i in token_ids], dim=1
    )
    h, w = context.grid
    rows, cols = region if region is not None else (h, w)
    rows, cols = max(1, min(h, rows)), max(1, min(w, cols))
    if (rows, cols) != (h, w):
        keys = keys.view(-1, h, w, keys.shape[-1])[:, :rows, :cols].reshape(
            -1, rows * cols, keys.shape[-1]
        )
    masks = _upscale_and_project(context.upscaling, keys, (rows, cols), hyper)
    return masks, iou_pred
