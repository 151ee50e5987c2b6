"""SamCore on inputs found by an adversarial pass: padded point prompts, embeddings of another
model, NaN mask inputs, extreme aspect ratios."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from textseg._hub import create_model
from textseg.sam import Prompts, SamCore


def _image(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 20 + 1, w // 20 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((20, 20, 1), np.uint8))[:h, :w])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("sam-vit-tiny-test", pretrained=False)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def test_point_prompts_of_different_lengths_decode_as_their_own(model):
    """A 1-point prompt stored padded to 5 points gives segment_anything's own 1-point mask;
    decoding the padding tokens (pad_points=True) gives another one."""
    image = _image()
    core = SamCore(model)
    one = [[100.0, 80.0]]
    five = [[30.0, 40.0], [200.0, 150.0], [250.0, 60.0], [120.0, 200.0], [60.0, 100.0]]
    prompts = Prompts.from_point_lists([one, five], [[1], [1, 0, 1, 0, 1]])
    assert prompts.points.shape == (2, 5, 2)  # stored padded
    grouped = core.predict(image, prompts, multimask_output=False)
    official = SamPredictor(model)
    official.set_image(image)
    for i, (pts, labels) in enumerate(((one, [1]), (five, [1, 0, 1, 0, 1]))):
        masks, _, _ = official.predict(
            point_coords=np.asarray(pts), point_labels=np.asarray(labels), multimask_output=False
        )
        assert _iou(grouped.mask[i], masks[0]) == 1.0
    padded = core.predict(image, prompts, multimask_output=False, pad_points=True)
    assert _iou(padded.mask[0], grouped.mask[0]) < 0.999  # padding tokens change the mask
    np.testing.assert_array_equal(padded.mask[1], grouped.mask[1])


def test_an_embedding_of_another_model_is_refused(model):
    image = _image()
    torch.manual_seed(1)
    other = SamCore(create_model("sam-vit-tiny-test", pretrained=False))
    core = SamCore(model)
    emb = other.encode(image)
    with pytest.raises(ValueError, match=r"^image: this embedding was made by .*not by this"):
        core.predict(emb, boxes=[10, 10, 100, 100])
    # The same image through this core gets its own embedding (no cache mix-up).
    assert core.encode(image).model_id == core.model_id != emb.model_id


def test_nan_mask_inputs_are_refused(model):
    core = SamCore(model)
    logits = np.zeros((1, 256, 256), np.float32)
    logits[0, 5, 5] = np.nan
    with pytest.raises(ValueError, match=r"^mask_inputs: contain NaN or infinity"):
        core.predict(_image(), boxes=[10, 10, 100, 100], mask_inputs=logits)


@pytest.mark.parametrize("shape", [(2, 5000), (5000, 2), (1, 1)])
def test_extreme_aspect_ratios_are_segmented(model, shape):
    image = np.full((*shape, 3), 128, np.uint8)
    core = SamCore(model)
    h, w = shape
    dets = core.predict(image, boxes=[0, 0, w - 1, h - 1])
    assert dets.mask.shape == (1, h, w)
