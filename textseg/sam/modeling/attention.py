"""SAM ViT attention with fused scaled-dot-product attention.

segment_anything's ``Attention`` adds the decomposed relative-position terms to the full
attention matrix through two broadcasting additions on a 5-D view, then runs a separate softmax
and product. In the four global-attention blocks of ViT-B the matrix is 12 x 4096 x 4096 floats
(800 MB), so on CPU those memory passes cost more than the matrix products (measured: 40% of the
encoder's time in ``add``). Here the two terms form one additive mask and
``torch.nn.functional.scaled_dot_product_attention`` fuses scaling, mask, softmax and product.

Same parameters and state-dict keys as the official module; same result to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, ImageEncoderViT, get_rel_pos

__all__ = ["SdpaRelPosAttention", "use_sdpa_attention"]


class SdpaRelPosAttention(Attention):
    """``segment_anything.modeling.image_encoder.Attention`` with a fused attention kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, HW, d)
        mask = None
        if self.use_rel_pos:
            d = q.shape[-1]
            r_q = q.reshape(b, heads, h, w, d)
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, self.rel_pos_h))
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, self.rel_pos_w))
            mask = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def use_sdpa_attention(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """Replace every block's attention of a SAM ViT encoder by :class:`SdpaRelPosAttention`,
    keeping the parameters (in place; returns the encoder)."""
    for block in encoder.blocks:
        old = block.attn
        if isinstance(old, SdpaRelPosAttention):
            continue
        dim = old.qkv.in_features
        input_size = None
        if old.use_rel_pos:
            input_size = ((old.rel_pos_h.shape[0] + 1) // 2, (old.rel_pos_w.shape[0] + 1) // 2)
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
    return encoder
