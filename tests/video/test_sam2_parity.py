"""transformers' SAM 2 video path (what textseg's tracker runs) against the official ``sam2``
package's ``SAM2VideoPredictor`` on identical seeded random weights.

The official model is built with the tiny entry's sizes (``build_official_sam2``), saved as an
official checkpoint and loaded through textseg's registry path (converter, strict load); both
sides get the same pre-processed frames, a click and a box on frame 0, and propagate 18 frames
(more than the 16 object pointers SAM 2 reads, so streaming and whole-video modes coincide).
"""

from __future__ import annotations

import pytest
import torch

from textseg._hub import create_model

pytest.importorskip("sam2", reason="the official sam2 package is the reference")

FRAMES = 18


@pytest.mark.parametrize(
    "name", ["sam2.1-tiny-test", pytest.param("sam2-tiny-test", marks=pytest.mark.slow)]
)
def test_video_propagation_matches_official(name, pan, tmp_path, official_sam2):
    official, checkpoint = official_sam2(name)
    model = create_model(name, checkpoint=checkpoint)

    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for t in range(FRAMES):
        Image.fromarray(pan.frame(t % len(pan))).save(frames / f"{t:05d}.jpg", quality=95)
    h, w = pan.size
    point, box = [w * 0.3, h * 0.5], [w * 0.55, h * 0.2, w * 0.9, h * 0.8]

    with torch.inference_mode():
        state = official.init_state(str(frames))
        official.add_new_points_or_box(state, 0, 1, points=[point], labels=[1])
        official.add_new_points_or_box(state, 0, 2, box=box)
        theirs = {}
        for t, _, _ in official.propagate_in_video(state):
            theirs[t] = []
            for idx in range(2):
                out = state["output_dict_per_obj"][idx]
                key = (
                    "cond_frame_outputs"
                    if t in out["cond_frame_outputs"]
                    else "non_cond_frame_outputs"
                )
                theirs[t].append(out[key][t]["pred_masks"][0, 0].clone())

        from transformers import Sam2VideoInferenceSession

        session = Sam2VideoInferenceSession(
            video=state["images"], video_height=h, video_width=w, dtype=torch.float32
        )
        size = model.config.image_size
        scale = torch.tensor([size / w, size / h])
        coords = torch.tensor([[point]]) * scale
        session.add_point_inputs(
            session.obj_id_to_idx(1),
            0,
            {
                "point_coords": coords[None],
                "point_labels": torch.tensor([[[1]]], dtype=torch.int32),
            },
        )
        corners = torch.tensor(box).reshape(1, 1, 2, 2) * scale
        session.add_point_inputs(
            session.obj_id_to_idx(2),
            0,
            {"point_coords": corners, "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)},
        )
        session.obj_with_new_inputs = [1, 2]
        ours = {0: model(session, frame_idx=0).pred_masks[:, 0]}
        for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
            ours[out.frame_idx] = out.pred_masks[:, 0]

    assert sorted(theirs) == sorted(ours) == list(range(FRAMES))
    visible = 0
    for t in range(FRAMES):
        for k in range(2):
            a, b = ours[t][k], theirs[t][k]
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"frame {t} object {k}")
            ma, mb = a > 0, b > 0
            union = (ma | mb).sum()
            if union:
                assert (ma & mb).sum() / union > 0.999
                visible += 1
    assert visible > FRAMES  # non-trivial masks on most frames
