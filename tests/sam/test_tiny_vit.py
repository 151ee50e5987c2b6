"""MobileSAM's TinyViT encoder: shapes, parameter count, checkpoint key layout, loading, and
windowed attention against straightforward reference computations.

The official ``mobile_sam.pt`` cannot be downloaded here, so its key layout is derived below
from the reference architecture (ChaoningZhang/MobileSAM ``mobile_sam/modeling/tiny_vit_sam.py``
as built by ``build_sam_vit_t``: ``num_classes=1000``, ``attention_bias_idxs`` not persistent).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from textseg._hub import StateDictError, create_model
from textseg.sam.modeling.tiny_vit import TinyViT, TinyViTBlock, relative_offset_index

REAL = dict(
    embed_dims=(64, 128, 160, 320),
    depths=(2, 2, 6, 2),
    num_heads=(2, 4, 5, 10),
    window_sizes=(7, 7, 14, 7),
    out_chans=256,
)
TINY = dict(
    embed_dims=(8, 16, 16, 32),
    depths=(1, 1, 1, 1),
    num_heads=(1, 1, 1, 2),
    window_sizes=(7, 7, 14, 7),
    out_chans=32,
)

#: Parameters of MobileSAM's encoder used by SAM's forward (trunk + neck). MobileSAM's README
#: rounds it as "5.78M"; the exact figure follows from the architecture and matches timm's
#: independent TinyViT-5M trunk (see test_trunk_parameter_count_matches_timm).
REAL_ENCODER_PARAMS = 5_743_892
#: Plus the unused ImageNet classifier (norm_head + 1000-way head) that mobile_sam.pt holds.
REAL_ENCODER_PARAMS_WITH_HEAD = 6_065_532

_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


# --- the checkpoint layout, derived from the reference architecture --------------------------


def _conv_bn(prefix: str, cin: int, cout: int, k: int, groups: int = 1) -> dict[str, tuple]:
    return {
        f"{prefix}.c.weight": (cout, cin // groups, k, k),
        f"{prefix}.bn.weight": (cout,),
        f"{prefix}.bn.bias": (cout,),
        f"{prefix}.bn.running_mean": (cout,),
        f"{prefix}.bn.running_var": (cout,),
        f"{prefix}.bn.num_batches_tracked": (),
    }


def expected_encoder_state(
    embed_dims: tuple[int, ...],
    depths: tuple[int, ...],
    num_heads: tuple[int, ...],
    window_sizes: tuple[int, ...],
    out_chans: int,
    mlp_ratio: float = 4.0,
    expand_ratio: float = 4.0,
    num_classes: int = 1000,
    in_chans: int = 3,
) -> dict[str, tuple]:
    """Key -> shape of a MobileSAM TinyViT state dict (without the ``image_encoder.`` prefix)."""
    keys: dict[str, tuple] = {}
    d0 = embed_dims[0]
    keys |= _conv_bn("patch_embed.seq.0", in_chans, d0 // 2, 3)
    keys |= _conv_bn("patch_embed.seq.2", d0 // 2, d0, 3)
    for i, (dim, depth) in enumerate(zip(embed_dims, depths, strict=True)):
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}"
            if i == 0:
                hidden = int(dim * expand_ratio)
                keys |= _conv_bn(f"{block}.conv1", dim, hidden, 1)
                keys |= _conv_bn(f"{block}.conv2", hidden, hidden, 3, groups=hidden)
                keys |= _conv_bn(f"{block}.conv3", hidden, dim, 1)
                continue
            hidden = int(dim * mlp_ratio)
            keys[f"{block}.attn.attention_biases"] = (num_heads[i], window_sizes[i] ** 2)
            keys[f"{block}.attn.norm.weight"] = (dim,)
            keys[f"{block}.attn.norm.bias"] = (dim,)
            keys[f"{block}.attn.qkv.weight"] = (3 * dim, dim)
            keys[f"{block}.attn.qkv.bias"] = (3 * dim,)
            keys[f"{block}.attn.proj.weight"] = (dim, dim)
            keys[f"{block}.attn.proj.bias"] = (dim,)
            keys[f"{block}.mlp.norm.weight"] = (dim,)
            keys[f"{block}.mlp.norm.bias"] = (dim,)
            keys[f"{block}.mlp.fc1.weight"] = (hidden, dim)
            keys[f"{block}.mlp.fc1.bias"] = (hidden,)
            keys[f"{block}.mlp.fc2.weight"] = (dim, hidden)
            keys[f"{block}.mlp.fc2.bias"] = (dim,)
            keys |= _conv_bn(f"{block}.local_conv", dim, dim, 3, groups=dim)
        if i < len(embed_dims) - 1:
            out = embed_dims[i + 1]
            keys |= _conv_bn(f"layers.{i}.downsample.conv1", dim, out, 1)
            keys |= _conv_bn(f"layers.{i}.downsample.conv2", out, out, 3, groups=out)
            keys |= _conv_bn(f"layers.{i}.downsample.conv3", out, out, 1)
    last = embed_dims[-1]
    keys["norm_head.weight"] = (last,)
    keys["norm_head.bias"] = (last,)
    keys["head.weight"] = (num_classes, last)
    keys["head.bias"] = (num_classes,)
    keys["neck.0.weight"] = (out_chans, last, 1, 1)
    keys["neck.1.weight"] = (out_chans,)
    keys["neck.1.bias"] = (out_chans,)
    keys["neck.2.weight"] = (out_chans, out_chans, 3, 3)
    keys["neck.3.weight"] = (out_chans,)
    keys["neck.3.bias"] = (out_chans,)
    return keys


def _param_count(layout: dict[str, tuple], with_head: bool) -> int:
    return sum(
        math.prod(shape)
        for key, shape in layout.items()
        if not key.endswith(_BN_STATS)
        and (with_head or not key.startswith(("head.", "norm_head.")))
    )


def _official_prompt_and_decoder_keys() -> dict[str, tuple]:
    """Keys of SAM's prompt encoder and mask decoder at the sizes of every official checkpoint."""
    prompt = PromptEncoder(
        embed_dim=256,
        image_embedding_size=(64, 64),
        input_image_size=(1024, 1024),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    keys = {f"prompt_encoder.{k}": tuple(v.shape) for k, v in prompt.state_dict().items()}
    keys |= {f"mask_decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()}
    return keys


@pytest.fixture(scope="module")
def mobile_sam() -> nn.Module:
    return create_model("mobile-sam", pretrained=False)


# --- helpers ---------------------------------------------------------------------------------


def _randomize(module: nn.Module, seed: int = 0) -> None:
    """Fill every parameter and BatchNorm statistic with random values (defaults such as zero
    attention biases or unit running variances would hide a wrong index or a missed load)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)


def _levit_offset_index(height: int, width: int) -> torch.Tensor:
    """The reference construction: offsets numbered in the order first met, scanning pairs."""
    points = list(itertools.product(range(height), range(width)))
    seen: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(seen.setdefault(offset, len(seen)))
    return torch.tensor(idxs).view(len(points), len(points))


def _naive_window_attention(block: TinyViTBlock, x: torch.Tensor) -> torch.Tensor:
    """Window attention written out window by window and head by head, in float64.

    ``x`` is ``(B, H, W, C)``; the grid is zero-padded at the bottom/right to whole windows, the
    zeros go through the LayerNorm and take part as keys (MobileSAM's behaviour), and the
    result is cropped back.
    """
    attn = block.attn
    ws = block.window_size
    b, h, w, c = x.shape
    heads, hd = attn.num_heads, c // attn.num_heads
    ph, pw = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    padded = torch.zeros(b, ph, pw, c, dtype=torch.float64)
    padded[:, :h, :w] = x.double()
    out = torch.zeros_like(padded)
    index = _levit_offset_index(ws, ws)
    biases = attn.attention_biases.double()
    qkv_w, qkv_b = attn.qkv.weight.double(), attn.qkv.bias.double()
    proj_w, proj_b = attn.proj.weight.double(), attn.proj.bias.double()
    for n, wy, wx in itertools.product(range(b), range(ph // ws), range(pw // ws)):
        tokens = padded[n, wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws].reshape(ws * ws, c)
        mean = tokens.mean(-1, keepdim=True)
        var = tokens.var(-1, unbiased=False, keepdim=True)
        normed = (tokens - mean) / torch.sqrt(var + attn.norm.eps)
        normed = normed * attn.norm.weight.double() + attn.norm.bias.double()
        qkv = normed @ qkv_w.T + qkv_b  # per head: [q | k | v], hd columns each
        head_outs = []
        for head in range(heads):
            base = head * 3 * hd
            q = qkv[:, base : base + hd]
            k = qkv[:, base + hd : base + 2 * hd]
            v = qkv[:, base + 2 * hd : base + 3 * hd]
            logits = q @ k.T / math.sqrt(hd) + biases[head][index]
            head_outs.append(torch.softmax(logits, dim=-1) @ v)
        result = torch.cat(head_outs, dim=-1) @ proj_w.T + proj_b
        out[n, wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws] = result.reshape(ws, ws, c)
    return out[:, :h, :w]


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "img_size", "batch"),
    [
        pytest.param(REAL, 1024, 1, id="mobile-sam-1024"),
        pytest.param(TINY, 1024, 1, id="tiny-1024"),
        pytest.param(TINY, 512, 2, id="tiny-512-batch2"),
    ],
)
def test_output_shape_and_dtype(cfg: dict, img_size: int, batch: int) -> None:
    torch.manual_seed(0)
    encoder = TinyViT(img_size=img_size, **cfg).eval()
    with torch.inference_mode():
        out = encoder(torch.randn(batch, 3, img_size, img_size))
    grid = img_size // 16
    assert out.shape == (batch, cfg["out_chans"], grid, grid)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert encoder.img_size == img_size


def test_bfloat16_output_follows_model_dtype() -> None:
    encoder = TinyViT(img_size=256, **TINY).eval().to(torch.bfloat16)
    with torch.inference_mode():
        out = encoder(torch.randn(1, 3, 256, 256, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert out.shape == (1, 32, 16, 16)


def test_last_patch_merging_keeps_resolution() -> None:
    encoder = TinyViT(**TINY)
    strides = [layer.downsample.conv2.c.stride for layer in encoder.layers[:-1]]
    assert strides == [(2, 2), (2, 2), (1, 1)]
    assert encoder.layers[-1].downsample is None


def test_sam_reads_img_size(mobile_sam: nn.Module) -> None:
    assert mobile_sam.image_encoder.img_size == 1024
    assert isinstance(mobile_sam.image_encoder, TinyViT)


# --- parameter count -------------------------------------------------------------------------


def test_real_encoder_parameter_count(mobile_sam: nn.Module) -> None:
    encoder = mobile_sam.image_encoder
    total = sum(p.numel() for p in encoder.parameters())
    used = total - sum(
        p.numel() for n, p in encoder.named_parameters() if n.startswith(("head.", "norm_head."))
    )
    layout = expected_encoder_state(**REAL)
    assert _param_count(layout, with_head=False) == REAL_ENCODER_PARAMS
    assert _param_count(layout, with_head=True) == REAL_ENCODER_PARAMS_WITH_HEAD
    assert (used, total) == (REAL_ENCODER_PARAMS, REAL_ENCODER_PARAMS_WITH_HEAD)
    assert round(used / 1e6, 2) == 5.74


def test_trunk_parameter_count_matches_timm() -> None:
    """timm's TinyViT-5M is an independent implementation of the same trunk."""
    pytest.importorskip("timm")
    from timm.models.tiny_vit import TinyVit, tiny_vit_5m_224

    # timm's own builder, not timm.create_model: segment_anything_hq, once imported,
    # registers its SAM TinyViT under timm's model names.
    reference = tiny_vit_5m_224(pretrained=False, num_classes=0)
    assert type(reference) is TinyVit
    trunk = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("head."))
    encoder = TinyViT(**REAL)
    ours = sum(
        p.numel()
        for n, p in encoder.named_parameters()
        if not n.startswith(("head.", "norm_head.", "neck."))
    )
    assert ours == trunk


# --- checkpoint layout -----------------------------------------------------------------------


def test_state_dict_matches_official_layout(mobile_sam: nn.Module) -> None:
    state = {k: tuple(v.shape) for k, v in mobile_sam.state_dict().items()}
    expected = {f"image_encoder.{k}": v for k, v in expected_encoder_state(**REAL).items()}
    expected |= _official_prompt_and_decoder_keys()
    assert sorted(set(state) - set(expected)) == []
    assert sorted(set(expected) - set(state)) == []
    assert state == expected
    assert sum(k.startswith("image_encoder.") for k in state) == 302


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("image_encoder.patch_embed.seq.0.c.weight", (32, 3, 3, 3)),
        ("image_encoder.patch_embed.seq.0.bn.running_var", (32,)),
        ("image_encoder.patch_embed.seq.2.c.weight", (64, 32, 3, 3)),
        ("image_encoder.patch_embed.seq.2.bn.num_batches_tracked", ()),
        ("image_encoder.layers.0.blocks.1.conv1.c.weight", (256, 64, 1, 1)),
        ("image_encoder.layers.0.blocks.1.conv2.c.weight", (256, 1, 3, 3)),
        ("image_encoder.layers.0.blocks.1.conv3.bn.bias", (64,)),
        ("image_encoder.layers.0.downsample.conv1.c.weight", (128, 64, 1, 1)),
        ("image_encoder.layers.0.downsample.conv2.c.weight", (128, 1, 3, 3)),
        ("image_encoder.layers.1.blocks.0.attn.attention_biases", (4, 49)),
        ("image_encoder.layers.1.blocks.0.attn.norm.weight", (128,)),
        ("image_encoder.layers.1.blocks.0.attn.qkv.weight", (384, 128)),
        ("image_encoder.layers.1.blocks.0.attn.proj.weight", (128, 128)),
        ("image_encoder.layers.1.blocks.1.mlp.norm.bias", (128,)),
        ("image_encoder.layers.1.blocks.1.mlp.fc1.weight", (512, 128)),
        ("image_encoder.layers.1.blocks.1.local_conv.c.weight", (128, 1, 3, 3)),
        ("image_encoder.layers.1.downsample.conv3.c.weight", (160, 160, 1, 1)),
        ("image_encoder.layers.2.blocks.5.attn.attention_biases", (5, 196)),
        ("image_encoder.layers.2.blocks.5.attn.qkv.bias", (480,)),
        ("image_encoder.layers.2.downsample.conv1.c.weight", (320, 160, 1, 1)),
        ("image_encoder.layers.2.downsample.conv2.c.weight", (320, 1, 3, 3)),
        ("image_encoder.layers.3.blocks.1.attn.attention_biases", (10, 49)),
        ("image_encoder.layers.3.blocks.1.mlp.fc2.weight", (320, 1280)),
        ("image_encoder.norm_head.weight", (320,)),
        ("image_encoder.head.weight", (1000, 320)),
        ("image_encoder.head.bias", (1000,)),
        ("image_encoder.neck.0.weight", (256, 320, 1, 1)),
        ("image_encoder.neck.1.weight", (256,)),
        ("image_encoder.neck.2.weight", (256, 256, 3, 3)),
        ("image_encoder.neck.3.bias", (256,)),
    ],
)
def test_official_key_has_shape(mobile_sam: nn.Module, key: str, shape: tuple) -> None:
    assert tuple(mobile_sam.state_dict()[key].shape) == shape


@pytest.mark.parametrize(
    "key",
    [
        # Registered with persistent=False in MobileSAM, so not in mobile_sam.pt.
        "image_encoder.layers.1.blocks.0.attn.attention_bias_idxs",
        # The last stage has no patch merging.
        "image_encoder.layers.3.downsample.conv1.c.weight",
        # Stage 0 is convolutional: no attention.
        "image_encoder.layers.0.blocks.0.attn.attention_biases",
    ],
)
def test_key_not_in_official_layout(mobile_sam: nn.Module, key: str) -> None:
    assert key not in mobile_sam.state_dict()


def test_attention_bias_idxs_is_a_non_persistent_buffer(mobile_sam: nn.Module) -> None:
    buffers = dict(mobile_sam.image_encoder.named_buffers())
    idxs = buffers["layers.2.blocks.0.attn.attention_bias_idxs"]
    assert idxs.shape == (196, 196)
    assert idxs.dtype == torch.int64


# --- save / load -----------------------------------------------------------------------------


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> tuple[Path, nn.Module]:
    model = create_model("mobile-sam-tiny-test")
    _randomize(model, seed=1)
    path = tmp_path / "mobile_sam_tiny.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_round_trip_is_bit_identical(tiny_checkpoint: tuple[Path, nn.Module]) -> None:
    path, saved = tiny_checkpoint
    loaded = create_model("mobile-sam-tiny-test", checkpoint=path)
    fresh = create_model("mobile-sam-tiny-test")
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = saved.eval().image_encoder(image)
        got = loaded.image_encoder(image)
        other = fresh.image_encoder(image)
    assert torch.equal(got, expected)
    assert not torch.allclose(other, expected)  # the check can fail: weights do matter
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        pytest.param(
            lambda sd: sd.pop("image_encoder.layers.1.blocks.0.attn.attention_biases"),
            "missing keys: image_encoder.layers.1.blocks.0.attn.attention_biases",
            id="missing-attention-biases",
        ),
        pytest.param(
            lambda sd: sd.pop("image_encoder.head.weight"),
            "missing keys: image_encoder.head.weight",
            id="missing-classifier-head",
        ),
        pytest.param(
            lambda sd: sd.__setitem__(
                "image_encoder.layers.1.blocks.0.attn.attention_bias_idxs",
                relative_offset_index(7, 7),
            ),
            "unexpected keys: image_encoder.layers.1.blocks.0.attn.attention_bias_idxs",
            id="persisted-bias-index",
        ),
        pytest.param(
            lambda sd: sd.__setitem__(
                "image_encoder.layers.3.blocks.0.attn.attention_biases", torch.zeros(2, 196)
            ),
            "image_encoder.layers.3.blocks.0.attn.attention_biases (2, 196) vs (2, 49)",
            id="wrong-window-size",
        ),
    ],
)
def test_bad_checkpoint_is_refused(
    tmp_path: Path, tiny_checkpoint: tuple[Path, nn.Module], corrupt, message: str
) -> None:
    path, _ = tiny_checkpoint
    state = torch.load(path, weights_only=True)
    corrupt(state)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(StateDictError, match=re.escape(message)):
        create_model("mobile-sam-tiny-test", checkpoint=bad)


# --- attention against reference computations ------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(7, 7), (14, 14), (3, 5), (4, 9)])
def test_relative_offset_index_matches_reference_enumeration(height: int, width: int) -> None:
    assert torch.equal(relative_offset_index(height, width), _levit_offset_index(height, width))


@pytest.mark.parametrize(
    ("height", "width", "window_size", "num_heads"),
    [
        pytest.param(4, 4, 4, 2, id="one-window"),
        pytest.param(8, 12, 4, 2, id="whole-windows"),
        pytest.param(5, 7, 4, 2, id="pad-both"),
        pytest.param(9, 4, 4, 1, id="pad-bottom"),
        pytest.param(3, 3, 4, 2, id="smaller-than-window"),
        pytest.param(6, 10, 3, 4, id="three-by-three-windows"),
    ],
)
def test_window_attention_matches_naive_computation(
    height: int, width: int, window_size: int, num_heads: int
) -> None:
    block = TinyViTBlock(dim=8, num_heads=num_heads, window_size=window_size, mlp_ratio=2.0)
    _randomize(block, seed=3)
    x = torch.randn(2, height, width, 8, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        got = block.eval().window_attention(x)
    expected = _naive_window_attention(block, x)
    assert got.shape == (2, height, width, 8)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_padding_acts_as_zero_tokens() -> None:
    """MobileSAM does not mask the padding: a 5x5 grid padded to 8x8 gives exactly what an 8x8
    grid with explicit zero tokens there gives (masking the padding would not)."""
    block = TinyViTBlock(dim=8, num_heads=2, window_size=4, mlp_ratio=2.0)
    _randomize(block, seed=5)
    x = torch.randn(1, 5, 5, 8, generator=torch.Generator().manual_seed(6))
    zeros_around = torch.zeros(1, 8, 8, 8)
    zeros_around[:, :5, :5] = x
    with torch.inference_mode():
        padded = block.eval().window_attention(x)
        explicit = block.window_attention(zeros_around)[:, :5, :5]
        neighbours = zeros_around.clone()
        neighbours[:, 5:, :] = 1.0 + torch.arange(3 * 8 * 8).reshape(1, 3, 8, 8) / 100
        with_neighbours = block.window_attention(neighbours)[:, :5, :5]
    torch.testing.assert_close(padded, explicit)
    # Window (0, 0) holds only real tokens; the border windows see what lies beyond the grid.
    torch.testing.assert_close(padded[:, :4, :4], with_neighbours[:, :4, :4])
    assert not torch.allclose(padded[:, 4, :], with_neighbours[:, 4, :])


def test_trunk_matches_timm_tinyvit() -> None:
    """Numerical parity with timm's independent TinyViT after renaming its keys.

    timm's last patch merging has stride 2; MobileSAM's has stride 1, set here by hand.
    """
    pytest.importorskip("timm")
    from timm.models.tiny_vit import TinyVit

    cfg = dict(
        embed_dims=(8, 16, 16, 32), depths=(2, 1, 2, 1), num_heads=(1, 2, 2, 4),
        window_sizes=(7, 7, 14, 7),
    )  # fmt: skip
    reference = TinyVit(num_classes=0, drop_path_rate=0.0, **cfg).eval()
    reference.stages[3].downsample.conv2.conv.stride = (1, 1)
    _randomize(reference, seed=8)
    ours = TinyViT(img_size=256, out_chans=32, num_classes=0, **cfg).eval()
    renamed = {}
    for key, value in reference.state_dict().items():
        if key.startswith("head."):
            continue
        key = key.replace(".conv.", ".c.")
        key = key.replace("patch_embed.conv1.", "patch_embed.seq.0.")
        key = key.replace("patch_embed.conv2.", "patch_embed.seq.2.")
        if key.startswith("stages.") and ".downsample." in key:
            stage = int(key.split(".")[1])
            key = key.replace(f"stages.{stage}.downsample.", f"layers.{stage - 1}.downsample.")
        renamed[key.replace("stages.", "layers.")] = value
    own = ours.state_dict()
    trunk = {k: v for k, v in own.items() if not k.startswith(("neck.", "norm_head."))}
    assert set(renamed) == set(trunk)
    ours.load_state_dict({**own, **renamed}, strict=True)
    image = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        expected = reference.forward_features(image)
        got = ours.patch_embed(image)
        for layer in ours.layers:
            got = layer(got)
    assert got.shape == expected.shape == (2, 32, 16, 16)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(img_size=1000), "img_size must be a positive multiple of 16"),
        (dict(img_size=0), "img_size must be a positive multiple of 16"),
        (dict(embed_dims=(8, 16, 32)), r"embed_dims must be 4 integers >= 2, one per stage"),
        (dict(depths=(1, 0, 1, 1)), r"depths must be 4 integers >= 1"),
        (dict(window_sizes=(7, 7, 14.0, 7)), r"window_sizes must be 4 integers >= 1"),
        (dict(num_heads=(1, 1, 3, 2)), r"stage 2: embed_dims\[2\]=16 is not divisible by"),
    ],
)
def test_bad_config_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TinyViT(**{**TINY, **kwargs})


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (torch.zeros(3, 256, 256), ValueError, r"expects images of shape \(B, 3, 256, 256\)"),
        (torch.zeros(1, 3, 224, 224), ValueError, r"got \(1, 3, 224, 224\): resize the long side"),
        (torch.zeros(1, 1, 256, 256), ValueError, r"expects images of shape \(B, 3, 256, 256\)"),
        (torch.zeros(1, 3, 256, 256, dtype=torch.uint8), TypeError, "expects a float tensor"),
    ],
)
def test_bad_image_is_refused(image: torch.Tensor, error: type, message: str) -> None:
    encoder = TinyViT(img_size=256, **TINY).eval()
    with pytest.raises(error, match=message), torch.inference_mode():
        encoder(image)


def test_block_accepts_non_contiguous_channels_last() -> None:
    """Stages hand their blocks permuted (non-contiguous) views of NCHW maps."""
    block = TinyViTBlock(dim=8, num_heads=2, window_size=4, mlp_ratio=2.0).eval()
    x = torch.randn(1, 8, 5, 6).permute(0, 2, 3, 1)
    assert not x.is_contiguous()
    with torch.inference_mode():
        out = block(x)
        reference = block(x.contiguous())
    assert out.shape == (1, 5, 6, 8)
    torch.testing.assert_close(out, reference)
