"""The SAM 3 tracker behind SamCore against transformers' ``Sam3TrackerModel`` forward and its
processor, on the same random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from textseg.sam import SamCore
from textseg.sam.backends import make_backend
from textseg.sam.backends.sam3 import Sam3TrackerBackend


@pytest.fixture(scope="module")
def core() -> SamCore:
    torch.manual_seed(4)
    return SamCore("sam3-tracker-tiny-test")


@pytest.fixture(scope="module")
def image(data_dir) -> np.ndarray:
    return np.array(Image.open(data_dir / "demo" / "dog.jpg").convert("RGB"))


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multi"])
def test_decode_equals_the_model_forward(core, multimask) -> None:
    """The same pixels through transformers' forward (image batch 1, N prompts) and through
    the backend (packed features, one row per prompt)."""
    backend = core.backend
    model = backend.model
    pixels = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(3))
    boxes = torch.tensor([[10.0, 12.0, 60.0, 90.0], [50.0, 5.0, 111.0, 40.0]])
    points = torch.tensor([[[30.0, 40.0]], [[80.0, 20.0]]])
    labels = torch.ones(2, 1, dtype=torch.long)
    with torch.inference_mode():
        ref = model(
            pixel_values=pixels,
            input_points=points[None],
            input_labels=labels[None],
            input_boxes=boxes[None],
            multimask_output=multimask,
        )
    packed = backend.encode(pixels)
    masks, iou = backend.decode(packed, points, labels, boxes, None, multimask)
    assert masks.shape == (2, 3 if multimask else 1, 32, 32)
    assert torch.allclose(masks, ref.pred_masks[0], atol=1e-5, rtol=0)
    assert torch.allclose(iou, ref.iou_scores[0], atol=1e-6, rtol=0)


def test_core_masks_match_the_processor_path(core, image) -> None:
    """SamCore (PIL resize, packed cache, logits resized straight to the image) against
    Sam3TrackerProcessor + the model + post_process_masks (torchvision resize)."""
    from transformers import Sam3ImageProcessor, Sam3TrackerProcessor

    h, w = image.shape[:2]
    box = [40, 30, w // 2, h - 20]
    processor = Sam3TrackerProcessor(
        image_processor=Sam3ImageProcessor(size={"height": 112, "width": 112})
    )
    inputs = processor(images=image, input_boxes=[[box]], return_tensors="pt")
    with torch.inference_mode():
        out = core.backend.model(**inputs, multimask_output=False)
    expected = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0, 0]
    dets = core.predict(image, boxes=[box], multimask_output=False)
    mask = dets.mask[0]
    iou = (mask & expected.numpy()).sum() / (mask | expected.numpy()).sum()
    assert iou > 0.99  # the two resizes of the 534x800 photo differ slightly
    assert abs(float(dets.data["sam_iou"][0]) - float(out.iou_scores.flatten()[0])) < 1e-2


def test_click_gives_three_candidates_and_attributes(core, image) -> None:
    backend = make_backend(core.backend.model)
    assert isinstance(backend, Sam3TrackerBackend)
    assert (backend.image_size, backend.low_res_size, backend.resize_mode) == (112, 32, "stretch")
    assert backend.pixel_mean == backend.pixel_std == (127.5, 127.5, 127.5)
    h, w = image.shape[:2]
    dets = core.predict(image, points=[[[w / 2, h / 2]]], point_labels=[[1]], return_all=True)
    assert len(dets) == 3 and dets.mask.shape == (3, h, w)
    assert sorted(dets.data["mask_index"].tolist()) == [1, 2, 3]
    with pytest.raises(TypeError, match="expected a transformers Sam3TrackerModel, got Linear"):
        Sam3TrackerBackend(torch.nn.Linear(2, 2))
