"""SAM's decoder as ONNX (onnxruntime) against the torch decoder on the same random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textseg._hub import create_model
from textseg.sam import Prompts, SamCore
from textseg.sam.onnx import OnnxSamDecoder, export_decoder, onnx_prompts

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _image(seed: int = 0, h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 40 + 1, w // 40 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((40, 40, 1), np.uint8))[:h, :w])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _masks(core: SamCore, emb, low: torch.Tensor) -> np.ndarray:
    return (core.upsample(emb, low) > core.backend.mask_threshold).numpy()


CASES = {
    "one click (3 masks)": dict(points=[[[150.0, 100.0]]], labels=[[1]], box=None, multi=True),
    "two clicks": dict(points=[[[150.0, 100.0], [40.0, 30.0]]], labels=[[1, 0]], box=None),
    "box": dict(points=None, labels=None, box=[[30.0, 40.0, 250.0, 200.0]]),
    "click + box": dict(points=[[[150.0, 100.0]]], labels=[[1]], box=[[30.0, 40.0, 250.0, 200]]),
}


def _check_parity(core: SamCore, decoder: OnnxSamDecoder, image: np.ndarray) -> None:
    emb = core.encode(image)
    for name, case in CASES.items():
        points = None if case["points"] is None else np.array(case["points"], np.float32)
        labels = None if case["labels"] is None else np.array(case["labels"])
        boxes = None if case["box"] is None else np.array(case["box"], np.float32)
        multi = case.get("multi", False)
        prompts = Prompts(points=points, point_labels=labels, boxes=boxes)
        low_t, iou_t, _ = core.decode(emb, prompts, multimask_output=multi)
        low_o, iou_o = decoder.decode(emb, points=points, point_labels=labels, boxes=boxes)
        tokens = slice(1, None) if multi else slice(0, 1)
        low_o, iou_o = low_o[:, tokens], iou_o[:, tokens]
        np.testing.assert_allclose(iou_o.numpy(), iou_t.numpy(), atol=1e-4, err_msg=name)
        for a, b in zip(_masks(core, emb, low_t[0]), _masks(core, emb, low_o[0])):
            assert _iou(a, b) >= 0.999, name


@pytest.fixture(scope="module")
def tiny() -> SamCore:
    torch.manual_seed(0)
    return SamCore("sam-vit-tiny-test", pretrained=False)


@pytest.fixture(scope="module")
def decoder(tiny: SamCore) -> OnnxSamDecoder:
    return OnnxSamDecoder(tiny)


def test_onnx_masks_equal_torch_masks(tiny: SamCore, decoder: OnnxSamDecoder) -> None:
    _check_parity(tiny, decoder, _image())


def test_mask_input_round(tiny: SamCore, tmp_path) -> None:
    """A refinement round (mask input + clicks) agrees too, through an exported file."""
    path = export_decoder(tiny, tmp_path / "decoder.onnx")
    decoder = OnnxSamDecoder(tiny, path, threads=1)
    emb = tiny.encode(_image(1))
    pts, labs = np.array([[[100.0, 120.0], [200.0, 60.0]]]), np.array([[1, 0]])
    first = tiny.predict(emb, points=pts, point_labels=labs, return_logits=True)
    previous = first.data["low_res_logits"]
    ref = tiny.predict(emb, points=pts, point_labels=labs, mask_inputs=previous)
    low, iou = decoder.decode(emb, points=pts, point_labels=labs, mask_input=previous)
    np.testing.assert_allclose(iou[:, 0].numpy(), ref.data["sam_iou"], atol=1e-4)
    assert _iou(_masks(tiny, emb, low[:, 0])[0], ref.mask[0]) >= 0.999


def test_several_prompts_at_once(tiny: SamCore, decoder: OnnxSamDecoder) -> None:
    emb = tiny.encode(_image(2))
    boxes = np.array([[10, 10, 100, 100], [50, 60, 300, 230], [0, 0, 320, 240]], np.float32)
    low, iou = decoder.decode(emb, boxes=boxes)
    ref = tiny.predict(emb, Prompts.from_boxes(boxes), multimask_output=False)
    assert low.shape == (3, 4, 256, 256) and iou.shape == (3, 4)
    for i in range(3):
        assert _iou(_masks(tiny, emb, low[i : i + 1, 0])[0], ref.mask[i]) >= 0.999


@pytest.mark.slow
def test_onnx_masks_equal_torch_masks_vit_b() -> None:
    """The real ViT-B decoder size (random weights): IoU >= 0.999 on every case."""
    torch.manual_seed(0)
    core = SamCore(create_model("sam-vit-b", pretrained=False))
    _check_parity(core, OnnxSamDecoder(core), _image(3, 480, 640))


def test_onnx_prompts_layout() -> None:
    coords, labels = onnx_prompts(np.array([[[1.0, 2.0]]]), np.array([[1]]), None)
    np.testing.assert_array_equal(coords, [[[1, 2], [0, 0]]])
    np.testing.assert_array_equal(labels, [[1, -1]])  # the padding point SAM adds
    coords, labels = onnx_prompts(None, None, np.array([[1, 2, 3, 4]]))
    np.testing.assert_array_equal(coords, [[[1, 2], [3, 4]]])
    np.testing.assert_array_equal(labels, [[2, 3]])  # box corners


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, None, None), "no prompt"),
        ((np.zeros((1, 1, 2)), None, None), "point_labels are required"),
        ((np.zeros((2, 1, 2)), np.ones((2, 1)), np.zeros((1, 4))), "2 point prompts but 1"),
    ],
)
def test_onnx_prompts_bad_input(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        onnx_prompts(*args)


def test_only_segment_anything_models_export(tmp_path) -> None:
    torch.manual_seed(0)
    hf = SamCore("hf-sam-tiny-test", pretrained=False)
    with pytest.raises(TypeError, match="expected a segment_anything Sam"):
        export_decoder(hf, tmp_path / "x.onnx")


def test_embedding_of_another_core_is_refused(decoder: OnnxSamDecoder) -> None:
    torch.manual_seed(0)
    other = SamCore("sam-vit-tiny-test", pretrained=False)
    with pytest.raises(ValueError, match="not by this decoder's core"):
        decoder.decode(other.encode(_image()), boxes=np.array([[0, 0, 10, 10]]))
