"""HQ-SAM through textseg (transformers ``SamHQModel`` + :class:`SamHQBackend`) against the
official ``segment_anything_hq`` package on identical random weights.

The official model is built with the package's own modules (tiny sizes, or ViT-B for the slow
test), its state dict is saved as the official ``.pth`` layout and loaded through textseg's real
path (``create_model(name, checkpoint=...)``, converter, strict load).
"""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_model

from textseg._hub import StateDictError, create_model
from textseg.sam import Prompts, SamCore
from textseg.sam.backends import make_backend
from textseg.sam.backends.hq import SamHQBackend

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the package re-registers timm's TinyViT names
    from segment_anything_hq.modeling import (
        ImageEncoderViT,
        MaskDecoderHQ,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )
    from segment_anything_hq.predictor import SamPredictor

EXACT = 1e-5  # relative, same arithmetic up to float rounding


def _official(
    embed_dim: int,
    depth: int,
    heads: int,
    global_attn: tuple[int, ...],
    dim: int,
    mlp: int,
    dec_heads: int,
    iou_hidden: int,
    seed: int,
) -> Sam:
    """An official HQ-SAM built with segment_anything_hq's modules, every parameter perturbed
    (LayerNorm 1/0 and zero biases would hide swapped keys)."""
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=1024,
            mlp_ratio=4,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn,
            window_size=14,
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=dim, mlp_dim=mlp, num_heads=dec_heads
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_hidden,
            vit_dim=embed_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sam.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return sam


def _tiny_official(seed: int = 0) -> Sam:
    # The sizes of the "sam-hq-official-tiny-test" registry entry (_VIT_TINY).
    return _official(32, 2, 2, (1,), 32, 64, 2, 32, seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Sam, torch.nn.Module, str]:
    """(official model, textseg's SamHQModel loaded from its .pth, the .pth path)."""
    official = _tiny_official()
    path = tmp_path_factory.mktemp("hq") / "sam_hq_vit_tiny_test.pth"
    torch.save(official.state_dict(), path)
    model = create_model("sam-hq-official-tiny-test", checkpoint=path)
    return official, model, str(path)


@pytest.fixture(scope="module")
def encoded(tiny):
    official, model, _ = tiny
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        reference = official.image_encoder(pixels)
    return pixels, reference, SamHQBackend(model).encode(pixels)


def _rel(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float((reference - other).abs().max() / reference.abs().max())


def _prompts(case: str) -> tuple[torch.Tensor | None, ...]:
    """(points (N,P,2), labels (N,P), boxes (N,4), mask_inputs (N,1,256,256)), 1024 frame."""
    mixed = (
        torch.tensor([[[100.0, 200.0], [300.0, 50.0], [0, 0]], [[500.0, 600.0], [0, 0], [0, 0]]]),
        torch.tensor([[1, 0, -1], [1, -1, -1]]),
    )
    boxes = torch.tensor([[10.0, 20.0, 400.0, 500.0], [600.0, 100.0, 1000.0, 700.0]])
    masks = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(7)) * 4
    table = {
        "one-point": (torch.tensor([[[412.0, 300.5]]]), torch.tensor([[1]]), None, None),
        "points-background-padding": (*mixed, None, None),
        "point-and-box": (*mixed, boxes, None),
        "boxes": (None, None, boxes, None),
        "mask-and-box": (None, None, boxes, masks),
    }
    return table[case]


def _official_decode(official, embedding, interm, points, labels, boxes, masks, multimask, hq_only):
    with torch.inference_mode():
        sparse, dense = official.prompt_encoder(
            points=None if points is None else (points, labels), boxes=boxes, masks=masks
        )
        return official.mask_decoder(
            image_embeddings=embedding,
            image_pe=official.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            hq_token_only=hq_only,
            interm_embeddings=interm,
        )


def test_encode_packs_embedding_and_vit_features(tiny, encoded) -> None:
    _, model, _ = tiny
    _, (embedding, interm), packed = encoded
    assert packed.shape == (1, 32 + 32, 64, 64)
    image, vit = SamHQBackend(model).split(packed)
    assert _rel(embedding, image) < EXACT
    assert _rel(interm[0].permute(0, 3, 1, 2), vit) < EXACT


@pytest.mark.parametrize(
    ("case", "multimask", "hq_only"),
    [
        ("one-point", True, False),
        ("points-background-padding", False, False),
        ("points-background-padding", True, False),
        ("point-and-box", False, False),
        ("boxes", False, False),
        ("boxes", True, True),
        ("mask-and-box", False, False),
        ("mask-and-box", False, True),
    ],
)
def test_decode_matches_official(tiny, encoded, case, multimask, hq_only) -> None:
    official, model, _ = tiny
    _, (embedding, interm), packed = encoded
    prompts = _prompts(case)
    ref_masks, ref_iou = _official_decode(official, embedding, interm, *prompts, multimask, hq_only)
    backend = SamHQBackend(model, hq_token_only=hq_only)
    masks, iou = backend.decode(packed, *prompts, multimask, state=backend.prepare(packed))
    n = ref_masks.shape[0]
    assert masks.shape == (n, 3 if multimask else 1, 256, 256)
    if multimask:  # the official decoder keeps the candidate with the best predicted IoU
        best = iou.argmax(dim=1)
        masks, iou = masks[torch.arange(n), best][:, None], iou.max(dim=1, keepdim=True).values
    assert _rel(ref_masks, masks) < EXACT
    assert torch.allclose(ref_iou, iou, atol=1e-6, rtol=0)


def test_sam_core_matches_official_predictor(tiny, data_dir) -> None:
    """The whole path (preprocess, encode, decode, upsample, threshold) on a coco-dev photo."""
    official, _, path = tiny
    image = np.array(Image.open(data_dir / "demo" / "dog.jpg").convert("RGB"))
    core = SamCore("sam-hq-official-tiny-test", checkpoint=path)
    predictor = SamPredictor(official)
    predictor.set_image(image)
    h, w = image.shape[:2]
    boxes = np.array([[10, 20, w // 2, h // 2], [w // 3, h // 4, w - 5, h - 5]], np.float32)
    for i, box in enumerate(boxes):
        ref_masks, ref_iou, _ = predictor.predict(box=box, multimask_output=False)
        dets = core.predict(image, Prompts.from_boxes(box[None]), multimask_output=False)
        assert dets.mask.shape == (1, h, w)
        mismatch = int((dets.mask[0] != ref_masks[0]).sum())
        assert mismatch <= 0.0005 * h * w, (i, mismatch)  # logits at 0 +- float rounding
        assert abs(float(dets.data["sam_iou"][0]) - float(ref_iou[0])) < 1e-5
    point = np.array([[w / 2, h / 2]], np.float32)
    ref_masks, ref_iou, _ = predictor.predict(
        point_coords=point, point_labels=np.array([1]), multimask_output=True
    )
    dets = core.predict(image, points=point[None], point_labels=[[1]], multimask_output=True)
    assert abs(float(dets.data["sam_iou"][0]) - float(ref_iou[0])) < 1e-5
    assert int((dets.mask[0] != ref_masks[0]).sum()) <= 0.0005 * h * w


def test_hub_layout_round_trip(tmp_path) -> None:
    """A transformers-layout file (tied positional encoding saved once) loads strictly into the
    hub entries' architecture, and the SAM core runs it."""
    torch.manual_seed(3)
    model = create_model("hf-sam-hq-tiny-test", pretrained=False)
    save_model(model, str(tmp_path / "model.safetensors"))
    loaded = create_model("hf-sam-hq-tiny-test", checkpoint=tmp_path / "model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    core = SamCore(loaded)
    dets = core.predict(np.zeros((40, 60, 3), np.uint8), boxes=[[5, 5, 30, 30]])
    assert dets.mask.shape == (1, 40, 60) and isinstance(core.backend, SamHQBackend)


def test_official_layout_needs_the_converter(tiny) -> None:
    """The official keys do not fit the transformers layout without the converter (strict)."""
    _, _, path = tiny
    with pytest.raises(StateDictError, match="unexpected keys: image_encoder"):
        create_model("hf-sam-hq-tiny-test", checkpoint=path)


def test_make_backend_and_bad_input(tiny, encoded) -> None:
    official, model, _ = tiny
    backend = make_backend(model)
    assert isinstance(backend, SamHQBackend)
    assert (backend.image_size, backend.low_res_size) == (1024, 256)
    with pytest.raises(TypeError, match=r"^expected a transformers SamHQModel, got Sam$"):
        SamHQBackend(official)
    message = (
        "embedding: expected (B, 64, 64, 64) (image embedding and ViT features of "
        "SamHQBackend.encode), got (1, 32, 64, 64)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        backend.prepare(torch.zeros(1, 32, 64, 64))


@pytest.mark.slow
def test_vit_b_size_parity(tmp_path) -> None:
    """Real ViT-B sizes (random weights, official layout through the sam-hq-vit-b entry)."""
    official = _official(768, 12, 12, (2, 5, 8, 11), 256, 2048, 8, 256, seed=11)
    path = tmp_path / "sam_hq_vit_b.pth"
    torch.save(official.state_dict(), path)
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(12))
    with torch.inference_mode():
        embedding, interm = official.image_encoder(pixels)
    del official.image_encoder  # one ViT-B encoder in memory at a time
    backend = SamHQBackend(create_model("sam-hq-vit-b", checkpoint=path))
    packed = backend.encode(pixels)
    image, vit = backend.split(packed)
    assert _rel(embedding, image) < 1e-4
    assert _rel(interm[0].permute(0, 3, 1, 2), vit) < 1e-4
    for case in ("point-and-box", "mask-and-box", "one-point"):
        for multimask in (False, True):
            prompts = _prompts(case)
            ref_masks, ref_iou = _official_decode(
                official, embedding, interm, *prompts, multimask, False
            )
            masks, iou = backend.decode(packed, *prompts, multimask)
            if multimask:
                best = iou.argmax(dim=1)
                masks = masks[torch.arange(len(best)), best][:, None]
                iou = iou.max(dim=1, keepdim=True).values
            assert _rel(ref_masks, masks) < 1e-4, (case, multimask)
            assert torch.allclose(ref_iou, iou, atol=1e-4, rtol=0), (case, multimask)
