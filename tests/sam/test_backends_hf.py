"""TransformersSamBackend against segment_anything on the same (converted) weights.

The reference is what ``SamPredictor.predict_torch`` runs: ``sam.prompt_encoder`` then
``sam.mask_decoder`` with ``get_dense_pe()``, on the same input-frame tensors.

Tolerances: the published transformers configs use LayerNorm eps 1e-6 in the decoder's two-way
blocks, segment_anything 1e-5. With the eps aligned the two agree to float rounding (checked at
1e-5 relative); with the published eps logits differ by ~1e-4 of their range (measured 5e-5 tiny,
1.1e-4 ViT-B), checked at 5e-4.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

from textseg._hub import create_model
from textseg.sam.backends import make_backend
from textseg.sam.backends.hf import TransformersSamBackend
from textseg.sam.modeling.convert import sam_to_hf_state_dict

EXACT = 1e-5  # relative, decoder eps aligned with segment_anything
PUBLISHED = 5e-4  # relative, the published decoder eps 1e-6


def _randomize_constants(model: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter that init leaves constant (LayerNorm 1/0, zero rel_pos and
    pos_embed, zero biases), so a swapped or dropped key changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.flatten()
            if (flat == flat[0]).all():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))


def _align_decoder_eps(hf: torch.nn.Module) -> None:
    """segment_anything's two-way blocks use nn.LayerNorm's default eps (1e-5)."""
    for module in hf.mask_decoder.transformer.layers.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5


def _pair(sam_name: str, hf_name: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    sam = create_model(sam_name, task="sam", pretrained=False)
    _randomize_constants(sam, seed)
    hf = create_model(hf_name, task="sam", pretrained=False)
    hf.load_state_dict(sam_to_hf_state_dict(sam.state_dict()), strict=True)
    return sam, hf


def _rel(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float((reference - other).abs().max() / reference.abs().max())


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.nn.Module]:
    return _pair("sam-vit-tiny-test", "hf-sam-tiny-test", seed=0)


@pytest.fixture(scope="module")
def tiny_embedding(tiny) -> torch.Tensor:
    sam, _ = tiny
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        return sam.image_encoder(pixels)


def _reference(sam, embedding, points, labels, boxes, masks, multimask):
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(
            points=None if points is None else (points, labels), boxes=boxes, masks=masks
        )
        return sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )


def _prompts(case: str) -> tuple[torch.Tensor | None, ...]:
    """(points (N,P,2), labels (N,P), boxes (N,4), mask_inputs (N,1,256,256)) in the 1024 frame."""
    g = torch.Generator().manual_seed(7)
    one_point = (torch.tensor([[[412.0, 300.5]]]), torch.tensor([[1]]))
    # Several points per prompt, background points and -1 padding rows (Prompts.from_point_lists).
    mixed = (
        torch.tensor([[[100.0, 200.0], [300.0, 50.0], [0, 0]], [[500.0, 600.0], [0, 0], [0, 0]]]),
        torch.tensor([[1, 0, -1], [1, -1, -1]]),
    )
    two_boxes = torch.tensor([[10.0, 20.0, 400.0, 500.0], [600.0, 100.0, 1000.0, 700.0]])
    four_boxes = torch.tensor(
        [[0, 0, 1023, 1023], [5, 5, 50, 60], [200, 300, 800, 310], [512, 512, 513, 513]],
        dtype=torch.float32,
    )
    masks = torch.randn(2, 1, 256, 256, generator=g) * 4
    table = {
        "one-point": (*one_point, None, None),
        "points-background-padding": (*mixed, None, None),
        "point-and-box": (*mixed, two_boxes, None),
        "several-boxes": (None, None, four_boxes, None),
        "mask-and-points": (*mixed, None, masks),
        "mask-and-box": (None, None, two_boxes, masks),
        "mask-only": (None, None, None, masks),
    }
    return table[case]


CASES = [
    "one-point",
    "points-background-padding",
    "point-and-box",
    "several-boxes",
    "mask-and-points",
    "mask-and-box",
    "mask-only",
]


def test_encode_matches_segment_anything(tiny, tiny_embedding) -> None:
    _, hf = tiny
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(5))
    embedding = TransformersSamBackend(hf).encode(pixels)
    assert embedding.shape == (1, 32, 64, 64) and embedding.dtype == torch.float32
    assert _rel(tiny_embedding, embedding) < EXACT


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("case", CASES)
def test_decode_matches_segment_anything(tiny, tiny_embedding, case: str, multimask: bool) -> None:
    sam, hf = tiny
    hf = copy.deepcopy(hf)
    _align_decoder_eps(hf)
    prompts = _prompts(case)
    ref_masks, ref_iou = _reference(sam, tiny_embedding, *prompts, multimask)
    masks, iou = TransformersSamBackend(hf).decode(tiny_embedding, *prompts, multimask)
    n = next(p.shape[0] for p in prompts if p is not None)
    k = 3 if multimask else 1
    assert masks.shape == (n, k, 256, 256) and iou.shape == (n, k)
    assert masks.dtype == iou.dtype == torch.float32
    assert _rel(ref_masks, masks) < EXACT
    assert torch.allclose(ref_iou, iou, atol=1e-6, rtol=0)


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multi"])
def test_decode_with_published_eps_is_close(tiny, tiny_embedding, multimask: bool) -> None:
    sam, hf = tiny
    backend = TransformersSamBackend(hf)
    for case in CASES:
        prompts = _prompts(case)
        ref_masks, ref_iou = _reference(sam, tiny_embedding, *prompts, multimask)
        masks, iou = backend.decode(tiny_embedding, *prompts, multimask)
        assert _rel(ref_masks, masks) < PUBLISHED, case
        assert torch.allclose(ref_iou, iou, atol=1e-4, rtol=0), case


def test_matches_transformers_own_forward(tiny, tiny_embedding) -> None:
    """The backend's per-prompt batch layout gives what SamModel.forward gives for the image."""
    _, hf = tiny
    points, labels, _, _ = _prompts("points-background-padding")
    with torch.inference_mode():
        out = hf(
            image_embeddings=tiny_embedding,
            input_points=points[None],
            input_labels=labels[None],
            multimask_output=True,
        )
    masks, iou = TransformersSamBackend(hf).decode(tiny_embedding, points, labels, None, None, True)
    assert _rel(out.pred_masks[0], masks) < 1e-6
    assert torch.allclose(out.iou_scores[0], iou, atol=1e-7, rtol=0)


def test_image_pe_is_computed_once_and_follows_dtype(tiny, tiny_embedding, monkeypatch) -> None:
    _, hf = tiny
    hf = copy.deepcopy(hf)
    calls = []
    original = hf.get_image_wide_positional_embeddings

    def counting():
        calls.append(1)
        return original()

    monkeypatch.setattr(hf, "get_image_wide_positional_embeddings", counting)
    backend = TransformersSamBackend(hf)
    prompts = _prompts("one-point")
    first = backend.decode(tiny_embedding, *prompts, False)
    for multimask in (True, False):
        backend.decode(tiny_embedding, *prompts, multimask)
    assert len(calls) == 1
    assert torch.equal(first[0], backend.decode(tiny_embedding, *prompts, False)[0])

    hf.to(torch.bfloat16)
    assert backend.dtype == torch.bfloat16 and backend.device == torch.device("cpu")
    masks, iou = backend.decode(tiny_embedding, *prompts, True)
    assert len(calls) == 2  # recomputed once for the new dtype
    assert masks.dtype == iou.dtype == torch.float32 and masks.shape == (1, 3, 256, 256)


def test_backend_attributes_and_make_backend(tiny) -> None:
    _, hf = tiny
    backend = make_backend(hf)
    assert isinstance(backend, TransformersSamBackend)
    assert (backend.image_size, backend.low_res_size, backend.mask_threshold) == (1024, 256, 0.0)
    assert backend.pixel_mean == (123.675, 116.28, 103.53)
    assert backend.pixel_std == (58.395, 57.12, 57.375)
    assert not backend.model.training


def test_rejects_a_model_that_is_not_sammodel(tiny) -> None:
    sam, _ = tiny
    message = (
        "expected a transformers SamModel, got Sam; segment_anything models go to "
        "SegmentAnythingBackend (textseg.sam.backends.make_backend picks)"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        TransformersSamBackend(sam)


def test_encode_rejects_wrong_size(tiny) -> None:
    _, hf = tiny
    message = "pixels: expected (B, 3, 1024, 1024) normalised, padded images, got (1, 3, 512, 512)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TransformersSamBackend(hf).encode(torch.zeros(1, 3, 512, 512))


_P = torch.zeros(2, 1, 2)
_L = torch.ones(2, 1, dtype=torch.int64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "decode: no prompt; give points, boxes or mask_inputs"),
        (
            {"points": _P, "point_labels": _L, "boxes": torch.zeros(3, 4)},
            "decode: every prompt field needs the same number of prompts N, got "
            "{'points': 2, 'point_labels': 2, 'boxes': 3}",
        ),
        ({"points": _P}, "points and point_labels must be given together (or both None)"),
        (
            {"points": torch.zeros(2, 2), "point_labels": _L},
            "points: expected shape (N, *, 2), got (2, 2)",
        ),
        (
            {"points": _P, "point_labels": torch.ones(2, 3)},
            "point_labels: expected shape (N, 1), got (2, 3)",
        ),
        ({"boxes": torch.zeros(2, 2, 2)}, "boxes: expected shape (N, 4), got (2, 2, 2)"),
        (
            {"mask_inputs": torch.zeros(2, 256, 256)},
            "mask_inputs: expected shape (N, 1, 256, 256), got (2, 256, 256)",
        ),
        (
            {"boxes": torch.zeros(2, 4), "embedding": torch.zeros(2, 32, 64, 64)},
            "embedding: expected shape (1, *, 64, 64), got (2, 32, 64, 64)",
        ),
    ],
    ids=[
        "no-prompt",
        "different-n",
        "points-without-labels",
        "points-2d",
        "labels-shape",
        "boxes-shape",
        "mask-without-channel",
        "embedding-batch",
    ],
)
def test_decode_rejects_bad_input(tiny, tiny_embedding, kwargs: dict, message: str) -> None:
    _, hf = tiny
    args = {
        "embedding": tiny_embedding,
        "points": None,
        "point_labels": None,
        "boxes": None,
        "mask_inputs": None,
        "multimask_output": False,
    } | kwargs
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TransformersSamBackend(hf).decode(**args)


@pytest.mark.slow
def test_vit_b_size_parity() -> None:
    """Real ViT-B sizes (random weights): one image through both encoders, then the decoder."""
    sam, hf = _pair("sam-vit-b", "hf-sam-vit-base", seed=11)
    backend = TransformersSamBackend(hf)
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(12))
    with torch.inference_mode():
        reference = sam.image_encoder(pixels)
    embedding = backend.encode(pixels)
    assert embedding.shape == (1, 256, 64, 64)
    assert _rel(reference, embedding) < 1e-4
    for case in ("point-and-box", "mask-and-points", "several-boxes"):
        for multimask in (False, True):
            prompts = _prompts(case)
            ref_masks, ref_iou = _reference(sam, reference, *prompts, multimask)
            masks, iou = backend.decode(reference, *prompts, multimask)
            assert _rel(ref_masks, masks) < PUBLISHED, (case, multimask)
            assert torch.allclose(ref_iou, iou, atol=1e-4, rtol=0), (case, multimask)
