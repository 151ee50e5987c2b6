"""SAM 2 video end to end against the official ``SAM2VideoPredictor``: JPEG frames in, masks
out, on identical seeded random weights. textseg's propagator pre-processes each frame as the
official video loader does (``SamCore.preprocess(image, video=True)``: PIL's bicubic resize of
the uint8 frame) and upsamples the logits in one bilinear step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from textseg._registry import get_model_cfg
from textseg.sam import SamCore
from textseg.sam.modeling.sam2 import build_official_sam2
from textseg.video.propagator import Sam2Propagator

pytest.importorskip("sam2", reason="the official sam2 package is the reference")

FRAMES = 6


def _frames(data_dir, folder, size=(240, 180)) -> list[np.ndarray]:
    """A pan over a photo, saved as JPEG frames; returns them decoded as the official loader
    decodes them (PIL, RGB)."""
    photo = Image.open(data_dir / "demo" / "dog.jpg").convert("RGB")
    photo = photo.resize((size[0] + 8 * FRAMES, size[1]))
    folder.mkdir()
    out = []
    for t in range(FRAMES):
        path = folder / f"{t:05d}.jpg"
        photo.crop((8 * t, 0, 8 * t + size[0], size[1])).save(path, quality=95)
        out.append(np.array(Image.open(path).convert("RGB")))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


@pytest.mark.parametrize(
    "name", ["sam2.1-tiny-test", pytest.param("sam2.1-hiera-tiny", marks=pytest.mark.slow)]
)
def test_video_masks_match_the_official_video_predictor(name, data_dir, tmp_path) -> None:
    torch.manual_seed(0)
    official = build_official_sam2(get_model_cfg(name), video=True)
    with torch.no_grad():
        official.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    checkpoint = tmp_path / "official.pt"
    torch.save({"model": official.state_dict()}, checkpoint)
    frames = _frames(data_dir, tmp_path / "frames")
    h, w = frames[0].shape[:2]
    start = np.zeros((h, w), bool)
    start[40:150, 60:190] = True

    with torch.inference_mode():
        state = official.init_state(str(tmp_path / "frames"))
        official.add_new_mask(state, frame_idx=0, obj_id=1, mask=start)
        theirs = {t: (m[0, 0] > 0).numpy() for t, _, m in official.propagate_in_video(state)}

    core = SamCore(name, checkpoint=str(checkpoint))
    pixels, _ = core.preprocess(frames[0], video=True)
    torch.testing.assert_close(pixels[0], state["images"][0], atol=1e-6, rtol=0)
    propagator = Sam2Propagator(core)
    ours = {}
    for t, frame in enumerate(frames):
        out = propagator.propagate(t, frame)
        if t == 0:
            out = propagator.add(0, [1], start[None])
        ours[t] = out.masks[0]

    assert sorted(theirs) == sorted(ours) == list(range(FRAMES))
    ious = [_iou(ours[t], theirs[t]) for t in range(FRAMES)]
    print(f"{name} video parity: min mask IoU {min(ious):.6f} over {FRAMES} frames")
    assert all(theirs[t].any() for t in range(FRAMES))
    assert min(ious) >= 0.999
