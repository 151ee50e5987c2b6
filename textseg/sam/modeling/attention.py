"""SAM ViT blocks: fused attention, unpadded window projections, oneDNN linear layers.

Same parameters, state-dict keys and result (to float rounding) as segment_anything's
``Block`` / ``Attention``; what changes is where the CPU time goes (measured in
``benchmarks/bench_sam_core.py``, ViT-B, 1024 input):

* **Relative-position attention.** The official ``Attention`` adds the decomposed
  relative-position terms to the full attention matrix through two broadcasting additions on a
  5-D view, then runs a separate softmax and product. In the four global-attention blocks of
  ViT-B the matrix is 12 x 4096 x 4096 floats (800 MB), so those memory passes cost more than
  the matrix products (40% of the official encoder's time in ``add``). Here the two terms form
  one additive mask and ``scaled_dot_product_attention`` fuses scaling, mask, softmax and
  product.
* **Window padding.** Windowed blocks pad the 64 x 64 grid to 70 x 70 (25 windows of 14 x 14)
  before the attention, so the official ``qkv`` and ``proj`` products run on 4900 tokens
  instead of 4096 (20% more work in 8 of 12 blocks). A padded token is zero after ``norm1``, so
  its ``qkv`` row is the bias: here only the real tokens are projected, the padding is filled
  with the bias row, and ``proj`` runs after the crop.
* **Linear layers** (``qkv``, ``proj``, the MLP with its GELU fused) go through oneDNN with
  prepacked weights (:mod:`textseg.sam.modeling.kernels`): MKL's sgemm, which ``nn.Linear``
  calls, runs a generic path on AMD processors.

Training, autograd and non-float32 models keep the official order of operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    get_rel_pos,
    window_partition,
    window_unpartition,
)

from textseg.sam.modeling.kernels import linear

__all__ = ["FastBlock", "SdpaRelPosAttention", "use_sdpa_attention"]


class SdpaRelPosAttention(Attention):
    """``segment_anything.modeling.image_encoder.Attention`` with a fused attention kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        return self.proj(self.attend(self.qkv(x).reshape(b, h * w, -1), h, w))

    def attend(self, qkv: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention from projected tokens, before the output projection.

        Args:
            qkv: ``(B, h * w, 3 * dim)`` output of ``qkv`` on a row-major ``h x w`` grid.

        Returns:
            ``(B, h, w, dim)``.
        """
        b = qkv.shape[0]
        heads = self.num_heads
        qkv = qkv.reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, HW, d)
        mask = None
        if self.use_rel_pos:
            d = q.shape[-1]
            r_q = q.reshape(b, heads, h, w, d)
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, self.rel_pos_h))
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, self.rel_pos_w))
            mask = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)


def _fast(block: Block) -> bool:
    return (
        not block.training
        and not torch.is_grad_enabled()
        and isinstance(block.attn, SdpaRelPosAttention)
        and isinstance(block.mlp.act, torch.nn.GELU)
        and block.mlp.act.approximate == "none"
    )


class FastBlock(Block):
    """segment_anything's ViT ``Block`` with the inference path described above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fast(self):
            return super().forward(x)
        attn: SdpaRelPosAttention = self.attn  # type: ignore[assignment]
        b, h, w, _ = x.shape
        y = self.norm1(x)
        qkv = linear(attn.qkv, y)  # (B, H, W, 3C), real tokens only
        ws = self.window_size
        if ws > 0:
            pad_h, pad_w = -h % ws, -w % ws
            if pad_h or pad_w:
                # The official code pads after norm1: a padding token is zero, its qkv row
                # the projection of zero (the bias), one row for all of them.
                fill = attn.qkv(y.new_zeros(1, y.shape[-1]))[0]
                padded = fill.expand(b, h + pad_h, w + pad_w, -1).clone()
                padded[:, :h, :w] = qkv
                qkv = padded
            windows, pad_hw = window_partition(qkv, ws)  # (B * nW, ws, ws, 3C)
            out = attn.attend(windows.reshape(windows.shape[0], ws * ws, -1), ws, ws)
            out = window_unpartition(out, ws, pad_hw, (h, w))
        else:
            out = attn.attend(qkv.reshape(b, h * w, -1), h, w)
        x = x + linear(attn.proj, out)
        mlp = self.mlp
        return x + linear(mlp.lin2, linear(mlp.lin1, self.norm2(x), "gelu"))


def use_sdpa_attention(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """Give every block of a SAM ViT encoder :class:`SdpaRelPosAttention` and the
    :class:`FastBlock` forward, keeping the parameters (in place; returns the encoder).

    The blocks' class becomes :class:`FastBlock`, a subclass of ``Block`` that adds no
    parameter or buffer, so state dicts are unchanged.
    """
    for block in encoder.blocks:
        old = block.attn
        if not isinstance(old, SdpaRelPosAttention):
            dim = old.qkv.in_features
            input_size = None
            if old.use_rel_pos:
                input_size = (
                    (old.rel_pos_h.shape[0] + 1) // 2,
                    (old.rel_pos_w.shape[0] + 1) // 2,
                )
            new = SdpaRelPosAttention(
                dim,
                num_heads=old.num_heads,
                qkv_bias=old.qkv.bias is not None,
                use_rel_pos=old.use_rel_pos,
                input_size=input_size,
            )
            new.load_state_dict(old.state_dict())
            new.to(device=old.qkv.weight.device, dtype=old.qkv.weight.dtype)
            block.attn = new
        if type(block) is Block:
            block.__class__ = FastBlock
    return encoder
