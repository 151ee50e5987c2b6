"""ClipEncoder against the libraries' own code paths, on the same random tiny weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from textseg.clip import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ClipEncoder,
    HfClipEncoder,
    OpenClipEncoder,
    load_clip,
)
from textseg.clip.encoders import MAX_DENSE_TOKENS, build_hf_clip_tokenizer

TEXTS = [
    "a photo of a cat.",
    "Hot-Dog!!  and   pizza's",
    "a photo of the traffic light",
    "café über",
    "1234 people",
    "",
]
# (H, W): landscape, portrait, smaller than the input (upscaled), odd crop margins
# (87 - 64 = 23: open_clip rounds the offset 11.5 to 12, transformers floors it to 11).
SHAPES = [(48, 80), (130, 70), (40, 40), (87, 64), (64, 87), (64, 64)]


def _images(data_dir: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in SHAPES]
    coco = data_dir / "coco-dev" / "images"
    images += [np.array(Image.open(p).convert("RGB")) for p in sorted(coco.glob("*.jpg"))[:2]]
    return images


@pytest.fixture(scope="module")
def oc() -> OpenClipEncoder:
    torch.manual_seed(0)
    encoder = load_clip("clip-vit-tiny-test")
    assert isinstance(encoder, OpenClipEncoder)
    return encoder


@pytest.fixture(scope="module")
def hf() -> HfClipEncoder:
    torch.manual_seed(0)
    encoder = load_clip("hf-clip-vit-tiny-test")
    assert isinstance(encoder, HfClipEncoder)
    return encoder


@pytest.fixture(params=["oc", "hf"])
def encoder(request: pytest.FixtureRequest) -> ClipEncoder:
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- parity: open_clip


def test_open_clip_text_parity(oc: OpenClipEncoder) -> None:
    import open_clip

    tokens = open_clip.tokenize(TEXTS)
    with torch.inference_mode():
        expected = oc.model.encode_text(tokens, normalize=True)
    torch.testing.assert_close(oc.encode_text(TEXTS), expected, rtol=0, atol=1e-6)


def test_open_clip_image_parity(oc: OpenClipEncoder, data_dir: Path) -> None:
    import open_clip

    transform = open_clip.image_transform(
        oc.input_size,
        is_train=False,
        mean=tuple(m / 255 for m in OPENAI_CLIP_MEAN),
        std=tuple(s / 255 for s in OPENAI_CLIP_STD),
    )
    images = _images(data_dir)
    reference = torch.stack([transform(Image.fromarray(im)) for im in images])
    ours = oc.preprocess(images)
    # open_clip resizes with PIL, we resize uint8 tensors with torchvision: both antialiased
    # bicubic, identical geometry, at most a couple of grey levels apart on a few pixels.
    diff = (ours - reference).abs() * torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    assert ours.shape == reference.shape
    assert diff.max() <= 2.5
    assert (diff > 0.5).float().mean() < 0.02
    with torch.inference_mode():
        expected = oc.model.encode_image(reference, normalize=True)
    torch.testing.assert_close(oc.encode_images(images), expected, rtol=0, atol=2e-3)


# ------------------------------------------------------------------------ parity: transformers


def test_tokenizers_agree() -> None:
    """The transformers tokenizer built offline gives open_clip's token ids."""
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    hf_tok = build_hf_clip_tokenizer()
    for text in TEXTS:
        expected = [simple.sot_token_id, *simple.encode(text), simple.eot_token_id]
        assert hf_tok(text)["input_ids"] == expected, text


def test_hf_text_parity(hf: HfClipEncoder) -> None:
    tokenizer = build_hf_clip_tokenizer()
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = hf.model.get_text_features(**inputs)
    expected = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(hf.encode_text(TEXTS), expected, rtol=0, atol=1e-6)


def test_hf_image_parity(hf: HfClipEncoder, data_dir: Path) -> None:
    from transformers import CLIPImageProcessor

    size = hf.input_size
    processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    images = _images(data_dir)
    reference = torch.cat([processor(im, return_tensors="pt")["pixel_values"] for im in images])
    torch.testing.assert_close(hf.preprocess(images), reference, rtol=0, atol=1e-5)
    with torch.inference_mode():
        out = hf.model.get_image_features(pixel_values=reference)
    expected = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(hf.encode_images(images), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("fixture", "expected_top"),
    [("oc", 12), ("hf", 11)],  # round(11.5) == 12 in torchvision's CenterCrop, floor in HF
)
def test_center_crop_rounding_follows_each_library(
    fixture: str, expected_top: int, request: pytest.FixtureRequest
) -> None:
    encoder = request.getfixturevalue(fixture)
    image = np.zeros((87, 64, 3), np.uint8)
    image[np.arange(87), :, 0] = np.arange(87, dtype=np.uint8)[:, None]  # row index in red
    pixels = encoder.preprocess([image])[0, 0]
    first_row = round(float(pixels[0, 0]) * OPENAI_CLIP_STD[0] + OPENAI_CLIP_MEAN[0])
    assert first_row == expected_top


# ------------------------------------------------------------------------ encoder behaviour


def test_embeddings_normalised_float32(encoder: ClipEncoder, data_dir: Path) -> None:
    text = encoder.encode_text(["a dog", "a cat", "a bird"])
    images = encoder.encode_images(_images(data_dir)[:3])
    for emb, n in ((text, 3), (images, 3)):
        assert emb.shape == (n, encoder.embed_dim)
        assert emb.dtype == torch.float32
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(n), rtol=0, atol=1e-5)
    assert math.isclose(encoder.logit_scale, 1 / 0.07, rel_tol=1e-4)
    assert encoder.context_length == 77
    assert encoder.device == torch.device("cpu")


def test_batching_does_not_change_results(encoder: ClipEncoder, data_dir: Path) -> None:
    images = _images(data_dir)
    torch.testing.assert_close(
        encoder.encode_images(images, batch_size=3),
        encoder.encode_images(images),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        encoder.encode_text(TEXTS, batch_size=2), encoder.encode_text(TEXTS), atol=1e-6, rtol=0
    )


def test_long_text_raises_or_truncates(encoder: ClipEncoder) -> None:
    long_text = "cat " * 100
    with pytest.raises(
        ValueError, match=r"has 102 tokens, more than the model's 77 .*truncate=True"
    ):
        encoder.encode_text(["a dog", long_text])
    import open_clip

    # open_clip's tokenize() truncates the same way: 76 tokens, then the end token.
    assert encoder.encode_text([long_text], truncate=True).shape == (1, encoder.embed_dim)
    if isinstance(encoder, OpenClipEncoder):
        with torch.inference_mode():
            expected = encoder.model.encode_text(open_clip.tokenize([long_text]), normalize=True)
        torch.testing.assert_close(encoder.encode_text([long_text], truncate=True), expected)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda e: e.encode_text("a cat"), TypeError, "got the string 'a cat'; wrap it in a list"),
        (lambda e: e.encode_text([]), ValueError, "expected at least one text"),
        (lambda e: e.encode_text(["a", 3]), TypeError, "expected strings, got int"),
        (lambda e: e.encode_text(["a"], batch_size=0), ValueError, "positive integer, got 0"),
        (
            lambda e: e.encode_images(np.zeros((8, 8, 3), np.uint8)),
            TypeError,
            r"got ndarray array of shape \(8, 8, 3\); wrap a single image in a list",
        ),
        (lambda e: e.encode_images([]), ValueError, "expected at least one image"),
        (
            lambda e: e.encode_images([np.zeros((8, 8, 2), np.uint8)]),
            ValueError,
            r"images\[0\]: expected shape",
        ),
        (
            lambda e: e.dense_features(np.zeros((8, 8, 3), np.uint8), attention="qk"),
            ValueError,
            "attention: expected 'value' or 'value-value', got 'qk'",
        ),
        (
            lambda e: e.dense_features(np.zeros((8, 8, 3), np.uint8), size=40, crop=True),
            ValueError,
            "multiple of the patch size 16, got 40",
        ),
        (
            lambda e: e.dense_features(np.zeros((8, 8000, 3), np.uint8), size=64),
            ValueError,
            f"more than {MAX_DENSE_TOKENS} tokens",
        ),
    ],
)
def test_bad_input(encoder: ClipEncoder, call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(encoder)


def test_constructor_checks() -> None:
    with pytest.raises(TypeError, match=r"expected an open_clip\.model\.CLIP, got Linear"):
        OpenClipEncoder(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="expected a transformers CLIPModel, got Linear"):
        HfClipEncoder(torch.nn.Linear(2, 2))
    model = load_clip("clip-vit-tiny-test").model
    with pytest.raises(ValueError, match="looks like a 0-1 scale"):
        OpenClipEncoder(model, pixel_mean=(0.48, 0.45, 0.40))


def test_bfloat16(data_dir: Path) -> None:
    torch.manual_seed(0)
    fp32 = load_clip("clip-vit-tiny-test")
    bf16 = OpenClipEncoder(fp32.model.float(), dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    images = _images(data_dir)[:2]
    out = bf16.encode_images(images)
    assert out.dtype == torch.float32
    fp32 = OpenClipEncoder(bf16.model.float())
    cos = (out * fp32.encode_images(images)).sum(-1)
    assert cos.min() > 0.98


# ----------------------------------------------------------------------------- dense features


def _reference_dense(encoder: ClipEncoder, image: np.ndarray, attention: str) -> torch.Tensor:
    """MaskCLIP written out by hand from the weights, fed the hidden state that enters the
    last block during the library's own, unmodified image forward."""
    pixels = encoder.preprocess([image])
    captured: dict[str, torch.Tensor] = {}
    if isinstance(encoder, OpenClipEncoder):
        visual = encoder.model.visual
        last = visual.transformer.resblocks[-1]
        width = last.attn.embed_dim
        w_v = last.attn.in_proj_weight[2 * width :]
        b_v = last.attn.in_proj_bias[2 * width :]
        w_o, b_o = last.attn.out_proj.weight, last.attn.out_proj.bias
        heads = last.attn.num_heads
        ln_1, ln_2 = last.ln_1, last.ln_2
        fc1, fc2 = last.mlp.c_fc, last.mlp.c_proj
        post, proj = visual.ln_post, visual.proj

        def run() -> None:
            encoder.model.encode_image(pixels)

    else:
        model = encoder.model
        last = model.vision_model.encoder.layers[-1]
        w_v, b_v = last.self_attn.v_proj.weight, last.self_attn.v_proj.bias
        w_o, b_o = last.self_attn.out_proj.weight, last.self_attn.out_proj.bias
        heads = last.self_attn.num_heads
        ln_1, ln_2 = last.layer_norm1, last.layer_norm2
        fc1, fc2 = last.mlp.fc1, last.mlp.fc2
        post, proj = model.vision_model.post_layernorm, model.visual_projection.weight.T

        def run() -> None:
            model.get_image_features(pixel_values=pixels)

    def hook(_module: torch.nn.Module, args: tuple) -> None:
        captured["x"] = args[0].clone()

    handle = last.register_forward_pre_hook(hook)
    with torch.inference_mode():
        run()
    handle.remove()
    with torch.inference_mode():
        return _maskclip(
            captured["x"], attention, heads, w_v, b_v, w_o, b_o, ln_1, ln_2, fc1, fc2, post, proj
        )


def _maskclip(x, attention, heads, w_v, b_v, w_o, b_o, ln_1, ln_2, fc1, fc2, post, proj):
    y = F.layer_norm(x, ln_1.normalized_shape, ln_1.weight, ln_1.bias, ln_1.eps)
    v = y @ w_v.T + b_v
    if attention == "value-value":
        n, length, c = v.shape
        vh = v.reshape(n, length, heads, c // heads).permute(0, 2, 1, 3)
        attn = torch.softmax(vh @ vh.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
        v = (attn @ vh).permute(0, 2, 1, 3).reshape(n, length, c)
    x = x + v @ w_o.T + b_o
    h = F.layer_norm(x, ln_2.normalized_shape, ln_2.weight, ln_2.bias, ln_2.eps) @ fc1.weight.T
    h = h + fc1.bias
    x = x + (h * torch.sigmoid(1.702 * h)) @ fc2.weight.T + fc2.bias  # QuickGELU
    tokens = F.layer_norm(x[0, 1:], post.normalized_shape, post.weight, post.bias, post.eps)
    return F.normalize(tokens @ proj, dim=-1)


@pytest.mark.parametrize("attention", ["value", "value-value"])
def test_dense_features_match_hand_written_maskclip(
    encoder: ClipEncoder, attention: str, data_dir: Path
) -> None:
    image = _images(data_dir)[-1]
    dense = encoder.dense_features(image, crop=True, attention=attention)
    grid = encoder.input_size // dense.patch_size
    assert dense.features.shape == (grid, grid, encoder.embed_dim)
    assert dense.features.dtype == torch.float32
    torch.testing.assert_close(
        dense.features.norm(dim=-1), torch.ones(grid, grid), rtol=0, atol=1e-5
    )
    expected = _reference_dense(encoder, image, attention).reshape(grid, grid, -1)
    torch.testing.assert_close(dense.features, expected, rtol=0, atol=1e-5)


def test_dense_features_differ_from_plain_patch_tokens(
    encoder: ClipEncoder, data_dir: Path
) -> None:
    """The reference above would also pass if nothing were changed; make sure it is not."""
    image = _images(data_dir)[-1]
    dense = encoder.dense_features(image, crop=True).features.flatten(0, 1)
    pixels = encoder.preprocess([image])
    with torch.inference_mode():
        if isinstance(encoder, OpenClipEncoder):
            visual = encoder.model.visual
            tokens = visual.transformer(visual._embeds(pixels))
            plain = visual.ln_post(tokens[0, 1:]) @ visual.proj
        else:
            vision = encoder.model.vision_model
            tokens = vision(pixel_values=pixels).last_hidden_state
            plain = encoder.model.visual_projection(vision.post_layernorm(tokens[0, 1:]))
    assert not torch.allclose(dense, F.normalize(plain, dim=-1), atol=1e-2)


@pytest.mark.parametrize(
    ("shape", "size", "crop", "grid", "resized", "box"),
    [
        ((64, 64), None, False, (4, 4), (64, 64), (0, 0, 64, 64)),
        ((64, 64), None, True, (4, 4), (64, 64), (0, 0, 64, 64)),
        ((480, 640), None, False, (4, 5), (64, 80), (0, 0, 64, 80)),
        ((480, 640), 128, False, (8, 11), (128, 176), (0, 0, 128, 176)),
        ((480, 640), 128, True, (8, 8), (128, 170), None),
        ((100, 20), None, False, (20, 4), (320, 64), (0, 0, 320, 64)),
    ],
)
def test_dense_geometry(
    encoder: ClipEncoder,
    shape: tuple[int, int],
    size: int | None,
    crop: bool,
    grid: tuple[int, int],
    resized: tuple[int, int],
    box: tuple[int, int, int, int] | None,
) -> None:
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    dense = encoder.dense_features(image, size=size, crop=crop)
    assert dense.grid_size == grid
    assert dense.features.shape == (*grid, encoder.embed_dim)
    assert dense.image_size == shape
    assert dense.resized_size == resized
    if box is None:  # centre crop: offset depends on the library's rounding (21 either way)
        box = (0, encoder._crop_offset(170, 128), 128, 128)
    assert dense.crop_box == box
    torch.testing.assert_close(dense.features.norm(dim=-1), torch.ones(grid), rtol=0, atol=1e-5)


def test_dense_full_image_equals_crop_for_square_input(encoder: ClipEncoder) -> None:
    image = np.random.default_rng(2).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    full = encoder.dense_features(image)
    crop = encoder.dense_features(image, crop=True)
    torch.testing.assert_close(full.features, crop.features)


def test_cell_centers_and_to_image(encoder: ClipEncoder) -> None:
    image = np.zeros((87, 64, 3), np.uint8)
    dense = encoder.dense_features(image, crop=True)  # no resize, crop rows top..top+64
    top = dense.crop_box[0]
    centers = dense.cell_centers()
    assert centers.shape == (4, 4, 2)
    np.testing.assert_allclose(centers[0, 0], (8.0, top + 8.0))
    np.testing.assert_allclose(centers[3, 2], (40.0, top + 56.0))
    # One cell lit: the resampled map peaks at that cell's centre; the cropped-away rows are NaN.
    grid_map = np.zeros((4, 4), np.float32)
    grid_map[3, 2] = 1.0
    pixels = dense.to_image(grid_map)
    assert pixels.shape == (87, 64)
    assert np.isnan(pixels[:top]).all() and np.isnan(pixels[top + 64 :]).all()
    inside = np.nan_to_num(pixels, nan=-1.0)
    row, col = np.unravel_index(np.argmax(inside), inside.shape)
    assert abs(col + 0.5 - 40.0) <= 1 and abs(row + 0.5 - (top + 56.0)) <= 1
    # Full-image features cover every pixel.
    full = encoder.dense_features(image)
    sims = full.similarity(encoder.encode_text(["a cat", "a dog"]))
    assert sims.shape == (2, *full.grid_size)
    assert not np.isnan(full.to_image(sims)).any()
    with pytest.raises(
        ValueError, match=r"grid_map: expected shape \(5, 4\) or \(K, 5, 4\), got \(3, 3\)"
    ):
        full.to_image(np.zeros((3, 3)))


def test_dense_refuses_resnet_clip() -> None:
    from open_clip.model import CLIP

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=64, layers=(1, 1, 1, 1), width=8, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    encoder = OpenClipEncoder(model, name="tiny-rn")
    image = np.zeros((64, 64, 3), np.uint8)
    assert encoder.encode_images([image]).shape == (1, 16)  # global embeddings still work
    with pytest.raises(
        ValueError,
        match="dense_features needs a ViT CLIP; 'tiny-rn' has a ModifiedResNet image tower",
    ):
        encoder.dense_features(image)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["clip-vit-tiny-test", "hf-clip-vit-tiny-test"])
def test_cuda_matches_cpu(name: str, data_dir: Path) -> None:
    torch.manual_seed(0)
    cpu = load_clip(name)
    state = {k: v.clone() for k, v in cpu.model.state_dict().items()}
    gpu = type(cpu)(load_clip(name).model, device="cuda", dtype="float16")
    gpu.model.load_state_dict(state)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float16
    images = _images(data_dir)
    for ours, ref in (
        (gpu.encode_images(images), cpu.encode_images(images)),
        (gpu.encode_text(TEXTS), cpu.encode_text(TEXTS)),
        (gpu.dense_features(images[-1]).features, cpu.dense_features(images[-1]).features),
    ):
        assert ours.device.type == "cuda" and ours.dtype == torch.float32
        cos = (ours.cpu() * ref).sum(-1)
        assert cos.min() > 0.99
