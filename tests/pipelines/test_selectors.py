"""ClipMaskSelector: SAM's candidates chosen by CLIP on the masked region."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
import torch
import torch.nn.functional as F

from textseg.pipelines import ClipMaskSelector, MaskSelector
from textseg.prompters import ClassPrompts
from textseg.sam.prompts import Prompts


class _ColourClip:
    """A stand-in CLIP that sees colours: the embedding of a crop is its fraction of red,
    blue and other pixels, ignoring the blanked (fill-coloured) ones; the texts "red" and
    "blue" are the red and blue axes."""

    pixel_mean = (128.0, 128.0, 128.0)
    logit_scale = 100.0
    input_size = 224
    context_length = 77

    def encode_text(self, texts, **_) -> torch.Tensor:
        axes = {"red": [1.0, 0.0, 0.0], "blue": [0.0, 1.0, 0.0]}
        return torch.tensor([axes[t.split()[-1].rstrip(".")] for t in texts])

    def encode_images(self, images, *, batch_size: int = 32) -> torch.Tensor:
        rows = []
        for image in images:
            px = image.reshape(-1, 3).astype(int)
            content = px[(px != 128).any(axis=1)]
            red = ((content[:, 0] > 200) & (content[:, 2] < 50)).sum()
            blue = ((content[:, 2] > 200) & (content[:, 0] < 50)).sum()
            rows.append([red, blue, len(content) - red - blue + 1e-3])
        return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def _colour_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    image = np.zeros((60, 80, 3), np.uint8)
    image[...] = (20, 20, 230)  # blue
    image[20:40, 30:50] = (230, 20, 20)  # a red square
    red = np.zeros((60, 80), bool)
    red[20:40, 30:50] = True
    frame = np.zeros((60, 80), bool)  # blue pixels around the square: its box holds red
    frame[10:50, 20:60] = True
    frame &= ~red
    whole = np.ones((60, 80), bool)
    return image, red, frame, whole


def _candidates(masks: list[np.ndarray], prompt_index: list[int], iou: list[float]):
    return sv.Detections(
        xyxy=np.zeros((len(masks), 4), np.float32),
        mask=np.stack(masks),
        confidence=np.asarray(iou, np.float32),
        data={
            "prompt_index": np.asarray(prompt_index),
            "sam_iou": np.asarray(iou, np.float32),
            "mask_index": np.tile([1, 2, 3], len(masks) // 3),
        },
    )


def _prompts(class_id: list[int]) -> ClassPrompts:
    n = len(class_id)
    return ClassPrompts(
        prompts=Prompts.from_points(np.full((n, 2), 5.0, np.float32)),
        class_id=np.asarray(class_id),
        confidence=np.ones(n),
        class_names=("red", "blue"),
    )


def test_is_a_selector() -> None:
    assert isinstance(ClipMaskSelector(_ColourClip()), MaskSelector)


def test_scores_the_masked_region_not_the_box() -> None:
    image, red, frame, whole = _colour_scene()
    empty = np.zeros_like(red)
    dets = _candidates(
        [red, whole, empty, red, frame, whole], [0, 0, 0, 1, 1, 1], [0.2, 0.9, 0.99, 0.9, 0.1, 0.8]
    )
    by_clip = ClipMaskSelector(_ColourClip(), clip_weight=1.0, templates=["{}"])
    rows, score = by_clip.select(image, dets, _prompts([0, 1]), ["red", "blue"])
    # The red square for "red"; for "blue" the frame: its box is half red, but the pixels
    # outside the mask are blanked, so only the blue ones are scored.
    assert rows.tolist() == [0, 4]
    assert (score > 0.5).all()

    by_sam = ClipMaskSelector(_ColourClip(), clip_weight=0.0, templates=["{}"])
    rows, score = by_sam.select(image, dets, _prompts([0, 1]), ["red", "blue"])
    # SAM's IoU alone, but the empty mask (IoU 0.99) is never picked.
    assert rows.tolist() == [1, 3]
    np.testing.assert_allclose(score, [0.9, 0.9], rtol=1e-6)


def test_unnamed_prompts_fall_back_to_sams_iou() -> None:
    image, red, frame, whole = _colour_scene()
    dets = _candidates([red, whole, frame], [0, 0, 0], [0.2, 0.9, 0.5])
    rows, _ = ClipMaskSelector(_ColourClip(), clip_weight=1.0, templates=["{}"]).select(
        image, dets, _prompts([-1]), ["red", "blue"]
    )
    assert rows.tolist() == [1]


def test_bad_input() -> None:
    image, red, _, whole = _colour_scene()
    dets = _candidates([red, whole, red], [0, 0, 0], [0.1, 0.2, 0.3])
    clip = _ColourClip()
    with pytest.raises(ValueError, match=r"^clip_weight: expected a number in \[0, 1\], got 2$"):
        ClipMaskSelector(clip, clip_weight=2)
    selector = ClipMaskSelector(clip, templates=["{}"])
    with pytest.raises(ValueError, match=r"^candidates: expected masks at the image's size"):
        selector.select(image[:10], dets, _prompts([0]), ["red", "blue"])
    no_index = sv.Detections(xyxy=np.zeros((1, 4), np.float32), mask=red[None])
    with pytest.raises(ValueError, match=r"^candidates: expected data\['prompt_index'\]"):
        selector.select(image, no_index, _prompts([0]), ["red", "blue"])
