"""MobileSAM's TinyViT image encoder ("vit_t"), written for textseg.

The module tree and parameter names follow MobileSAM's ``mobile_sam/modeling/tiny_vit_sam.py``
(ChaoningZhang/MobileSAM), so the official ``mobile_sam.pt`` checkpoint (keys
``image_encoder.*``) loads strictly into ``segment_anything.modeling.Sam(image_encoder=TinyViT())``:

- ``patch_embed.seq.{0,2}``: two stride-2 3x3 conv + BatchNorm pairs (``.c`` / ``.bn``);
- ``layers.0``: MBConv blocks (``conv1``/``conv2``/``conv3``) and a ``downsample`` PatchMerging;
- ``layers.1..3``: TinyViT blocks (``attn`` with ``attention_biases``, ``local_conv``, ``mlp``),
  each stage but the last followed by a PatchMerging ``downsample``;
- ``norm_head`` / ``head``: TinyViT's ImageNet classifier. SAM never calls it, but the
  official checkpoint holds it, so it is kept for strict loading;
- ``neck``: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d, as in SAM's ViT encoder.

Non-persistent buffers (``attention_bias_idxs``) are rebuilt from the architecture and are not
in the state dict, as in MobileSAM. Training-only parts (drop path, dropout, gradient
checkpointing, layer-wise lr decay, the BatchNorm fusion helper) are left out; none of them
owns a parameter or a persisted buffer.

Shapes: images ``(B, 3, img_size, img_size)`` float in, embeddings
``(B, out_chans, img_size // 16, img_size // 16)`` out. Each module's ``forward`` takes and
returns ``(B, C, H, W)`` maps (TinyViT blocks ``(B, H, W, C)`` tokens), as in MobileSAM.

Speed (inference, CPU). MobileSAM's code took 2.5 s for a 1024 image on 2 cores although the
model has 5.8M parameters; the time went to layout, not arithmetic:

- stage 0 runs at 256x256 with 256 hidden channels, and PyTorch sends its NCHW 1x1
  convolutions to the unblocked ``slow_conv2d`` path (4 GFLOP/s) and its depthwise 3x3
  convolutions to NCHW kernels; every BatchNorm is one more pass over 67 MB maps.
  Here, in eval mode, the whole encoder runs channels-last (``(B, H, W, C)`` memory): 1x1
  convolutions are matrix products, depthwise ones channels-last oneDNN convolutions, and
  each BatchNorm is folded into its convolution (weights folded once, cached until a
  parameter or buffer changes);
- window attention projected the zero padding of 64x64 -> 70x70 grids (20% more
  ``qkv`` work): a padded token is LayerNorm(0) = the norm's bias, so its ``qkv`` row is one
  constant, computed once, and only the real tokens are projected;
- the per-offset attention bias was gathered on every call, and scaled-dot-product attention
  with a float mask fell back to its unfused path plus full-mask checks: here the gathered
  bias is cached (until ``attention_biases`` changes) and the softmax runs on
  ``baddbmm(bias, q, k^T)``.

Training mode keeps MobileSAM's own order of operations (BatchNorm with batch statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from textseg.sam.modeling.kernels import linear, linear_packed, pack_weight

__all__ = ["Attention", "TinyViT", "TinyViTBlock"]

_NUM_STAGES = 4
#: Output stride of the encoder: /4 patch embedding, then /2, /2 and /1 patch merging.
_STRIDE = 16


def _fast(module: nn.Module) -> bool:
    """Take the inference fast path: eval mode and no autograd (cached, folded tensors are
    made without a graph, so they must never meet one)."""
    return not module.training and not torch.is_grad_enabled()


def _versions(*tensors: torch.Tensor) -> tuple[tuple[int, int, int], ...]:
    """Identity + in-place version of each tensor: changes when a state dict is loaded, a
    parameter is assigned or modified in place, or the module moves device/dtype."""
    return tuple((id(t), t._version, t.data_ptr()) for t in tensors)


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d, as children ``c`` and ``bn``.

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        padding: Zero padding on each side.
        groups: Convolution groups (``in_chans`` for a depthwise convolution).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False),
        )
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        self._fused: tuple[tuple, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution's weight and bias with the eval-mode BatchNorm folded in.

        Returns:
            ``(out_chans, in_chans / groups, k, k)`` weight and ``(out_chans,)`` bias, cached
            until any of the parameters or running statistics change.
        """
        conv, bn = self.c, self.bn
        tensors = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = _versions(*tensors)
        if self._fused is None or self._fused[0] != key:
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                weight = conv.weight * scale.view(-1, 1, 1, 1)
                bias = bn.bias - bn.running_mean * scale
            packed = None
            if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
                packed = pack_weight(weight.flatten(1), 4096)
            self._fused = (key, weight, bias, packed)
        return self._fused[1], self._fused[2]

    def forward_nhwc(self, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
        """Eval-mode convolution + BatchNorm on channels-last ``(B, H, W, C_in)`` ->
        ``(B, H', W', C_out)``; ``activation="gelu"`` applies an exact GELU after it (fused
        into 1x1 convolutions)."""
        weight, bias = self.fused()
        conv = self.c
        if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
            packed = self._fused[3] if self._fused is not None else None
            return linear_packed(x, weight.flatten(1), bias, packed, activation)
        # A permuted contiguous NHWC tensor is an NCHW tensor in channels_last memory, which
        # oneDNN convolves without reordering; the result is channels_last again.
        out = F.conv2d(
            x.permute(0, 3, 1, 2), weight, bias, conv.stride, conv.padding, 1, conv.groups
        ).permute(0, 2, 3, 1)
        return F.gelu(out) if activation == "gelu" else out


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: ``(B, in_chans, H, W)`` -> ``(B, dim, H/4, W/4)``."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(dim // 2, dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, in_chans)`` -> ``(B, H/4, W/4, dim)``, eval mode."""
        conv1, act, conv2 = self.seq
        return conv2.forward_nhwc(act(conv1.forward_nhwc(x)))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU.

    Maps ``(B, dim, H, W)`` to the same shape.
    """

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim, 1)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast(self):
            return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(x + self.conv3(y))

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, dim)`` -> same shape, eval mode."""
        y = self.conv1.forward_nhwc(x, "gelu")
        y = self.conv2.forward_nhwc(y, "gelu")
        return self.act3(x + self.conv3.forward_nhwc(y))


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv with ``stride``, 1x1 conv.

    Maps ``(B, dim, H, W)`` to ``(B, out_dim, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast(self):
            return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, dim)`` -> ``(B, H', W', out_dim)``, eval mode."""
        x = self.conv1.forward_nhwc(x, "gelu")
        x = self.conv2.forward_nhwc(x, "gelu")
        return self.conv3.forward_nhwc(x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on ``(B, dim, H, W)``, then an optional PatchMerging."""

    def __init__(
        self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast(self):
            return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, dim)`` -> channels-last output of the stage, eval mode."""
        for block in self.blocks:
            x = block.forward_nhwc(x)
        return x if self.downsample is None else self.downsample.forward_nhwc(x)


class Mlp(nn.Module):
    """Pre-norm MLP on tokens ``(..., dim)``: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast(self):
            return linear(self.fc2, linear(self.fc1, self.norm(x), "gelu"))
        return self.fc2(self.act(self.fc1(self.norm(x))))


def relative_offset_index(height: int, width: int) -> torch.Tensor:
    """Index of the relative offset between every pair of positions in a ``height x width`` window.

    Positions are numbered row-major. The offset of positions ``(y1, x1)`` and ``(y2, x2)`` is
    ``(|y1 - y2|, |x1 - x2|)``, numbered ``|dy| * width + |dx|``: the order in which LeViT /
    TinyViT meet the offsets, so the index selects the same column of ``attention_biases``.

    Returns:
        ``(height * width, height * width)`` int64.
    """
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * width + dx


class Attention(nn.Module):
    """Multi-head self-attention inside one window, with a learned bias per relative offset.

    The input is layer-normalised first (pre-norm). ``qkv`` lays out each head's query, key and
    value side by side (``[q_h0, k_h0, v_h0, q_h1, ...]``), as in the checkpoint.

    Args:
        dim: Token channels.
        num_heads: Attention heads; ``dim`` must be divisible by it.
        window_size: Side of the square window; inputs hold ``window_size**2`` tokens.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer(
            "attention_bias_idxs",
            relative_offset_index(window_size, window_size),
            persistent=False,
        )
        self._bias: tuple[tuple, torch.Tensor] | None = None

    def bias(self) -> torch.Tensor:
        """``(num_heads, L, L)`` additive attention bias (L = window_size**2), gathered from
        ``attention_biases`` and cached until that parameter changes (a state dict loaded
        after eval() changes its version, so a stale bias is never used)."""
        if not _fast(self):
            return self.attention_biases[:, self.attention_bias_idxs]
        key = _versions(self.attention_biases, self.attention_bias_idxs)
        if self._bias is None or self._bias[0] != key:
            self._bias = (key, self.attention_biases[:, self.attention_bias_idxs].clone())
        return self._bias[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend within each window.

        Args:
            x: ``(N, window_size**2, dim)`` tokens of ``N`` windows, row-major in each window.

        Returns:
            ``(N, window_size**2, dim)``.
        """
        return self.attend(linear(self.qkv, self.norm(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention and output projection from projected tokens.

        Args:
            qkv: ``(N, L, 3 * dim)`` output of ``qkv(norm(x))`` for ``N`` windows.

        Returns:
            ``(N, L, dim)``.
        """
        n, length, _ = qkv.shape
        heads, d = self.num_heads, self.head_dim
        qkv = qkv.reshape(n, length, heads, 3 * d).transpose(1, 2)
        q, k, v = qkv.split(d, dim=-1)  # (N, heads, L, d) each
        bias = self.bias().to(q.dtype)
        # Scores, then the (heads, L, L) bias added in place by broadcasting: SDPA with a float
        # mask took its unfused path here, with full-mask checks and a copy of the bias
        # expanded to every window on top.
        scores = torch.matmul(q * d**-0.5, k.transpose(-2, -1))  # (N, heads, L, L)
        scores += bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return linear(self.proj, out.transpose(1, 2).reshape(n, length, heads * d))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise 3x3 ``local_conv``, MLP; on ``(B, H, W, dim)`` tokens.

    The grid is zero-padded at the bottom and right to a multiple of ``window_size`` before the
    attention (whose LayerNorm then sees the zeros) and cropped after it. Padded tokens are not
    masked out, exactly as in MobileSAM, whose trained weights expect it.

    Args:
        dim: Token channels.
        num_heads: Attention heads.
        window_size: Side of the square attention windows.
        mlp_ratio: MLP hidden size as a multiple of ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``self.attn`` applied to each window of ``x`` ``(B, H, W, C)``; same shape out."""
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = -h % ws, -w % ws
        attn = self.attn
        if not _fast(self):
            if pad_b or pad_r:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            qkv = attn.qkv(attn.norm(x))
        else:
            # Project the real tokens only; a zero padding token projects to one constant row.
            qkv = linear(attn.qkv, attn.norm(x))
            if pad_b or pad_r:
                pad_row = attn.qkv(attn.norm(x.new_zeros(1, c)))[0]
                full = pad_row.expand(b, h + pad_b, w + pad_r, -1).clone()
                full[:, :h, :w] = qkv
                qkv = full
        nh, nw = (h + pad_b) // ws, (w + pad_r) // ws
        c3 = qkv.shape[-1]
        windows = qkv.reshape(b, nh, ws, nw, ws, c3).transpose(2, 3).reshape(-1, ws * ws, c3)
        out = attn.attend(windows)
        out = out.reshape(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        return out[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, dim)`` -> ``(B, H, W, dim)``."""
        x = x + self.window_attention(x)
        if not _fast(self):
            x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        else:
            x = self.local_conv.forward_nhwc(x.contiguous())
        return x + self.mlp(x)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward` (TinyViT blocks are channels-last already)."""
        return self.forward(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on ``(B, dim, H, W)``, then an optional PatchMerging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast(self):
            return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, dim)`` -> channels-last output of the stage, eval mode."""
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample.forward_nhwc(x)


def _check_ints(name: str, values: Sequence[int], minimum: int = 1) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != _NUM_STAGES or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values
    ):
        raise ValueError(
            f"TinyViT {name} must be {_NUM_STAGES} integers >= {minimum}, one per stage; got "
            f"{values!r}"
        )
    return values


class TinyViT(nn.Module):
    """MobileSAM's TinyViT image encoder (module and parameter names of ``mobile_sam.pt``).

    Four stages: MBConv at 1/4 resolution, then TinyViT blocks at 1/8, 1/16 and 1/16. The
    last PatchMerging keeps the resolution (stride 1) so that the output grid is 1/16 of the
    input, SAM's embedding grid. MobileSAM writes this rule as "stride 1 when the merged width
    is 320, 448 or 576", the last width of each published TinyViT; here it is stated for the
    last merging directly, so that the tiny test configurations keep the 1/16 grid too.

    Args:
        img_size: Side of the square input; a multiple of 16.
        in_chans: Input channels.
        embed_dims: Channels of the four stages.
        depths: Blocks per stage.
        num_heads: Attention heads of stages 1-3 (the first entry, stage 0 being
            convolutional, is not used); ``embed_dims[i]`` must be divisible by ``num_heads[i]``.
        window_sizes: Attention window side of stages 1-3 (the first entry is not used).
        out_chans: Channels of the output embedding (SAM's prompt embedding size).
        mlp_ratio: MLP hidden size as a multiple of the stage width.
        mbconv_expand_ratio: Hidden width of the MBConv blocks as a multiple of the stage width.
        num_classes: Outputs of the unused ImageNet ``head`` kept for the checkpoint (1000 in
            ``mobile_sam.pt``); 0 drops ``head`` (``norm_head`` stays, as in MobileSAM).

    Attributes:
        img_size: Read by ``segment_anything``'s ``Sam`` to pad and resize images.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        out_chans: int = 256,
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if not isinstance(img_size, int) or img_size <= 0 or img_size % _STRIDE:
            raise ValueError(
                f"TinyViT img_size must be a positive multiple of {_STRIDE} (the output grid is "
                f"img_size // {_STRIDE}); got {img_size!r}"
            )
        embed_dims = _check_ints("embed_dims", embed_dims, minimum=2)
        depths = _check_ints("depths", depths)
        num_heads = _check_ints("num_heads", num_heads)
        window_sizes = _check_ints("window_sizes", window_sizes)
        for i in range(1, _NUM_STAGES):
            if embed_dims[i] % num_heads[i]:
                raise ValueError(
                    f"TinyViT stage {i}: embed_dims[{i}]={embed_dims[i]} is not divisible by "
                    f"num_heads[{i}]={num_heads[i]}; choose a head count that divides the width"
                )
        self.img_size = img_size
        self.in_chans = in_chans
        self.out_chans = out_chans

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(_NUM_STAGES):
            downsample = None
            if i < _NUM_STAGES - 1:
                stride = 1 if i == _NUM_STAGES - 2 else 2
                downsample = PatchMerging(embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                layer: nn.Module = ConvLayer(
                    embed_dims[0], depths[0], mbconv_expand_ratio, downsample
                )
            else:
                layer = BasicLayer(
                    embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, downsample
                )
            self.layers.append(layer)

        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode normalised, padded images.

        Args:
            x: ``(B, in_chans, img_size, img_size)`` float, already normalised (SAM's
                ``preprocess``).

        Returns:
            ``(B, out_chans, img_size // 16, img_size // 16)`` image embeddings, in ``x``'s dtype.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not ``(B, in_chans, img_size, img_size)``.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                f"TinyViT expects a float tensor (B, {self.in_chans}, {self.img_size}, "
                f"{self.img_size}); got {type(x).__name__} "
                f"{getattr(x, 'dtype', '')}: convert with x.float() after normalising"
            )
        expected = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"TinyViT expects images of shape (B, {', '.join(map(str, expected))}); got "
                f"{tuple(x.shape)}: resize the long side to {self.img_size} and pad "
                f"(segment_anything's Sam.preprocess does both)"
            )
        if not _fast(self):
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x)
            return self.neck(x)
        # Eval: channels-last from the first convolution to the neck (see the module notes).
        # One small copy of the 3-channel image into channels-last memory keeps every
        # convolution after it channels-last.
        x = self.patch_embed.forward_nhwc(x.permute(0, 2, 3, 1).contiguous())
        for layer in self.layers:
            x = layer.forward_nhwc(x)
        return self.neck(x.permute(0, 3, 1, 2).contiguous())
