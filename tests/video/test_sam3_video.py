"""SAM 3's own video path (:class:`textseg.video.sam3_video.Sam3VideoTracker`) against
transformers' documented streaming loop on identical random weights, its memory bound, and
``textseg track --preset sam3`` end to end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from textseg._hub import create_model
from textseg.cli import main
from textseg.video.sam3_video import Sam3VideoTracker, session_bytes

CLASSES = ["truck", "person"]


def _biased(scale: float, name: str = "sam3-video-tiny-test") -> Any:
    """A SAM 3 video model (seeded) with weights nudged so that random weights detect and keep
    objects: spread query scores, presence 1, objects visible."""
    torch.manual_seed(0)
    net = create_model(name, pretrained=False)
    with torch.no_grad():
        det = net.model.detector_model
        det.dot_product_scoring.query_proj.weight.mul_(scale)
        det.detr_decoder.presence_head.layer3.bias.fill_(10.0)
        net.model.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    return net


@pytest.fixture(scope="module")
def net() -> Any:
    return _biased(8.0)


def _pan(data_dir, frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    """A camera pan over a coco-dev photo of trucks and people."""
    from textseg.video.synthetic import from_coco

    annotations = data_dir / "coco-dev" / "annotations.json"
    clip = from_coco(annotations, "000000000257.jpg", num_frames=frames, min_area=400, size=size)
    return list(clip)


@pytest.fixture(scope="module")
def clip_frames(data_dir) -> list[np.ndarray]:
    return _pan(data_dir, 6, (96, 128))


@pytest.fixture(scope="module")
def long_clip(data_dir) -> list[np.ndarray]:
    """20 small frames: past SAM 3's memory window (7 frames) and pointer window (16)."""
    return _pan(data_dir, 20, (48, 64))


def _reference(
    net: Any, frames: list[np.ndarray], prompts: list[str], sessions: list | None = None
) -> list[dict[str, Any]]:
    """transformers' streaming loop as its documentation shows it, with ``net``'s model (the
    state is all in the session; the model holds none)."""
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3VideoProcessor

    model = net.model
    size = {"height": net.image_size, "width": net.image_size}
    processor = Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
        tokenizer=net.tokenizer,
    )
    session = processor.init_video_session(inference_device="cpu")
    processor.add_text_prompt(session, prompts)
    if sessions is not None:
        sessions.append(session)
    results = []
    for frame in frames:
        inputs = processor(images=frame, return_tensors="pt")
        out = model(inference_session=session, frame=inputs.pixel_values[0])
        post = processor.postprocess_outputs(session, out, original_sizes=inputs.original_sizes)
        # Masks emptied by the non-overlap constraint keep their id there; textseg reports
        # instances, never empty masks.
        shown = post["masks"].flatten(1).any(1).numpy()
        ids = post["object_ids"].numpy()[shown].tolist()
        results.append(
            {
                "ids": ids,
                "masks": post["masks"].numpy()[shown],
                "scores": post["scores"].numpy()[shown],
                "tracker": [out.obj_id_to_tracker_score[i] for i in ids],
            }
        )
    return results


@pytest.fixture()
def capped(net) -> Any:
    """``net`` with SAM 3's object cap at 3 (fewer objects: longer clips in the same time)."""
    net.model.max_num_objects = 3
    yield net
    net.model.max_num_objects = net.model.config.max_num_objects


def test_one_session_equals_transformers_loop_with_all_prompts(capped, long_clip) -> None:
    """20 frames: past SAM 3's memory window (7 frames) and object-pointer window (16), so
    every memory pruning has happened and been read past. To the bit, so with transformers'
    per-object tracker step (``batched=False``); the batched step is checked against it step
    by step below."""
    frames = long_clip
    sessions: list = []
    ref = _reference(capped, frames, CLASSES, sessions)
    tracker = Sam3VideoTracker(capped, batched=False)
    ours = list(tracker.track(frames, CLASSES))
    # The last frame's memories and object pointers, to the bit: what every earlier frame's
    # pruned state fed into (binary masks and saturated scores could hide a difference).
    last = len(frames) - 1
    for obj_idx, outputs in sessions[0].output_dict_per_obj.items():
        want = outputs["non_cond_frame_outputs"][last]
        got = tracker.session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"][last]
        for key in ("object_pointer", "maskmem_features"):
            assert torch.equal(got[key], want[key]), key
    for r, got in zip(ref, ours, strict=True):
        dets = got.detections
        assert len(r["ids"]) > 0
        assert dets.tracker_id.tolist() == [i + 1 for i in r["ids"]]
        np.testing.assert_array_equal(dets.mask, r["masks"])
        np.testing.assert_allclose(dets.confidence, r["scores"], rtol=1e-6)
        np.testing.assert_allclose(dets.data["object_score"], r["tracker"], rtol=1e-6)
        assert got.keyframe


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float, what: str) -> None:
    """``got`` equals ``want`` within ``rtol`` of ``want``'s largest magnitude (random weights
    give mask logits of ~1e-3, so an absolute tolerance would compare nothing)."""
    assert got.shape == want.shape, what
    scale = float(want.float().abs().max()) if want.numel() else 0.0
    err = float((got.float() - want.float()).abs().max()) if want.numel() else 0.0
    assert err <= rtol * max(scale, 1e-12), f"{what}: max error {err:.3g} at scale {scale:.3g}"


def _checked_steps(tracker: Sam3VideoTracker, rtol: float) -> list[int]:
    """Make ``tracker``'s batched step check itself: on every frame, transformers' own
    ``run_tracker_propagation`` runs on a copy of the session first, and the masks, scores and
    stored outputs (masks, pointer, score) of both must agree within ``rtol``; the object
    pointers read (which, how many, their temporal encoding) must be transformers'. Returns
    the number of objects of each batched step (:meth:`Sam2Step.track`) taken."""
    import copy

    from textseg.video.sam2_step import memory_layout

    model = tracker.model
    tm = model.tracker_model
    batched = tracker._propagate
    step = tracker._tracker_step
    sizes: list[int] = []

    def check(inference_session, frame_idx, reverse):
        twin = copy.deepcopy(inference_session)
        want = type(model).run_tracker_propagation(model, twin, frame_idx, reverse)
        got = batched(inference_session, frame_idx, reverse)
        for name, a, b in zip(("masks", "scores"), got, want, strict=True):
            _close(a, b, rtol, name)
        for i in range(inference_session.get_obj_num()):
            mine = inference_session.output_dict_per_obj[i]["non_cond_frame_outputs"][frame_idx]
            theirs = twin.output_dict_per_obj[i]["non_cond_frame_outputs"][frame_idx]
            assert set(mine) == set(theirs)
            for key, value in theirs.items():
                _close(mine[key], value, rtol, key)
            assert inference_session.frames_tracked_per_obj[i] == twin.frames_tracked_per_obj[i]
            # The pointers, as transformers reads them outside streaming (the frame is given
            # to the session, not to the tracker): at most min(frames seen, 16), encoded by
            # their offset over that many.
            offsets, tokens, most = tm._get_object_pointers(
                twin, i, frame_idx, twin.num_frames, "cpu", False, False
            )
            _, read = memory_layout(
                tm, twin.output_dict_per_obj[i], frame_idx, tm.num_maskmem - 1, step._max_pointers
            )
            assert [o for o, _ in read] == offsets and step._max_pointers == most
            ptr, pos = tm._process_object_pointers(offsets, tokens, most, 1, tm.hidden_dim, "cpu")
            ours, our_pos = step._pointers([(None, read)], offsets, ptr)
            torch.testing.assert_close(ours[0], ptr[:, 0])
            torch.testing.assert_close(our_pos, pos[:, 0])
        return got

    track = step.track

    def counted(session, frame, rows, **kwargs):
        sizes.append(len(rows))
        return track(session, frame, rows, **kwargs)

    tracker._propagate = check
    step.track = counted
    return sizes


def test_batched_tracker_step_equals_transformers_step(long_clip, randomize_zeros) -> None:
    """SAM 3's tracker stepping every object at once (the default) against transformers'
    per-object step on the same session, frame by frame: 20 frames (past the memory and
    pointer windows, so cached projections of aging and pruned memories are read), objects of
    two prompts. Masks as binary images could hide a difference: the logits are compared."""
    frames = long_clip
    net = _biased(8.0)
    tracker_model = net.model.tracker_model
    randomize_zeros(tracker_model)
    with torch.no_grad():  # sharper memory attention
        for layer in tracker_model.memory_attention.layers:
            for attn in (layer.self_attn, layer.cross_attn_image):
                attn.q_proj.weight.mul_(4.0)
                attn.k_proj.weight.mul_(4.0)
    net.model.max_num_objects = 6
    tracker = Sam3VideoTracker(net)
    sizes = _checked_steps(tracker, rtol=1e-5)
    results = list(tracker.track(frames, CLASSES))
    assert len(sizes) == len(frames) - 1 and max(sizes) >= 4
    assert sum(len(r.detections) for r in results) > 0
    from textseg.video.sam2_step import cached_bytes

    held = [
        cached_bytes(stored)
        for outputs in tracker.session.output_dict_per_obj.values()
        for kind in outputs.values()
        for stored in kind.values()
    ]
    assert sum(held) > 0  # the projections were cached, and survived pruning


def test_per_class_masks_equal_transformers_loop_called_per_class(net, clip_frames) -> None:
    """All classes in one session find, per class, the objects and masks of one session per
    class (SAM 3 associates, de-duplicates and resolves overlaps within a prompt only)."""
    ours = list(Sam3VideoTracker(net).track(clip_frames, CLASSES))
    for class_name in CLASSES:
        ref = _reference(net, clip_frames, [class_name])
        assert sum(len(r["ids"]) for r in ref) > 0, f"no {class_name} found"
        mine = [got.detections[got.detections.data["class_name"] == class_name] for got in ours]
        # Ids differ (numbered across prompts); births come in the same order.
        order = {}
        for d in mine:
            for i in d.tracker_id.tolist():
                order.setdefault(i, len(order))
        ref_order = {}
        for r in ref:
            for i in r["ids"]:
                ref_order.setdefault(i, len(ref_order))
        for d, r in zip(mine, ref, strict=True):
            assert [order[i] for i in d.tracker_id.tolist()] == [ref_order[i] for i in r["ids"]]
            np.testing.assert_array_equal(d.mask, r["masks"])
            np.testing.assert_allclose(d.confidence, r["scores"], rtol=1e-6)


def test_session_memory_stays_flat(net, clip_frames) -> None:
    """Over 32 frames of one still view, the pruned session stops growing once its memory
    window (16 frames of object pointers) is full; transformers' own session (no pruning)
    grows every frame."""
    frames = [clip_frames[0][:48, :64]] * 32
    net.model.max_num_objects = 2  # SAM 3's cap on objects: two keep the test fast
    try:
        tracker = Sam3VideoTracker(net)
        sizes, objects = [], []
        for _ in tracker.track(frames, ["truck"]):
            sizes.append(session_bytes(tracker.session))
            objects.append(len(tracker.session.obj_ids))
        unpruned = Sam3VideoTracker(net)
        unpruned._prune = lambda session, step: None
        grown = []
        for _ in unpruned.track(frames[:19], ["truck"]):
            grown.append(session_bytes(unpruned.session))
    finally:
        net.model.max_num_objects = net.model.config.max_num_objects
    assert objects[0] == objects[-1] == 2
    assert sizes[-1] == sizes[17]
    assert grown[-1] > grown[17] > sizes[17]


def test_patience_ends_and_removes_unseen_objects(net, clip_frames) -> None:
    black = [np.zeros_like(clip_frames[0])] * 3
    tracker = Sam3VideoTracker(net, patience=1)
    results = list(tracker.track(clip_frames[:2] + black, CLASSES))
    assert any(r.ended_tracks for r in results)
    ended = {i for r in results for i in r.ended_tracks}
    assert not ended & {i + 1 for i in tracker.session.obj_ids}


def test_exemplar_changes_first_frame_detections(net, clip_frames) -> None:
    from textseg.prompters.sam3 import Exemplar

    plain = next(iter(Sam3VideoTracker(net).track(clip_frames[:1], CLASSES)))
    boxed = Sam3VideoTracker(net, exemplars=[Exemplar((10, 10, 60, 60), "truck")])
    first = next(iter(boxed.track(clip_frames[:1], CLASSES)))
    assert not np.array_equal(first.detections.mask, plain.detections.mask)
    with pytest.raises(ValueError, match="class 'bus' is not one of the classes"):
        list(
            Sam3VideoTracker(net, exemplars=[Exemplar((1, 1, 5, 5), "bus")]).track(
                clip_frames[:1], CLASSES
            )
        )


@pytest.mark.parametrize(
    ("kwargs", "classes", "message"),
    [
        ({"patience": 0}, CLASSES, "patience"),
        ({}, {"names": ["cat"], "negatives": ["dog"]}, "positive prompts only"),
    ],
)
def test_bad_input(net, clip_frames, kwargs, classes, message) -> None:
    from textseg.vocab import Vocabulary

    if isinstance(classes, dict):
        classes = Vocabulary(classes["names"], negatives=classes["negatives"])
    with pytest.raises(ValueError, match=message):
        list(Sam3VideoTracker(net, **kwargs).track(clip_frames[:1], classes))


def test_corrupt_frames_are_skipped_and_listed(net, clip_frames, tmp_path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for i, frame in enumerate(clip_frames[:3]):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    (folder / "00001.png").write_bytes(b"not a png")
    results = list(Sam3VideoTracker(net).track(folder, CLASSES))
    assert [r.error is not None for r in results] == [False, True, False]


def test_cli_track_preset_sam3_writes_every_output(clip_frames, tmp_path, capsys) -> None:
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip_frames[:3]):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    out = tmp_path / "out"
    code = main(
        ["track", str(folder), "-c", "truck", "-c", "person", "--preset", "sam3", "--tiny",
         "--out", str(out), "--format", "mot", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    for name in ("tracks.json", "counts.csv", "mot.txt", "annotated.mp4"):
        assert (out / name).exists(), name
    info = json.loads((out / "tracks.json").read_text())["info"]
    assert info["models"]["sam3_video"] == "sam3-video-tiny-test"
    assert "3 frames tracked" in capsys.readouterr().out


def test_cli_bad_video_is_one_line(tmp_path, capsys) -> None:
    code = main(
        ["track", str(tmp_path / "missing.mp4"), "-c", "cat", "--preset", "sam3", "--tiny",
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.mp4" in err[0]


@pytest.mark.slow
def test_real_size_random_weights_equal_transformers_loop(clip_frames) -> None:
    """facebook/sam3's architecture (random weights, nudged to find objects, at most 4), 2
    frames, 2 classes, against transformers' loop with both prompts; the batched tracker
    step checked against transformers' per-object step on the second frame."""
    net = _biased(8.0, "sam3-video")
    net.model.max_num_objects = 4
    frames = clip_frames[:2]
    ref = _reference(net, frames, CLASSES)
    tracker = Sam3VideoTracker(net)
    sizes = _checked_steps(tracker, rtol=1e-4)  # the batched tracker step, at the real size
    ours = list(tracker.track(frames, CLASSES))
    assert sizes and min(sizes) >= 2
    assert sum(len(r["ids"]) for r in ref) > 0
    for r, got in zip(ref, ours, strict=True):
        assert got.detections.tracker_id.tolist() == [i + 1 for i in r["ids"]]
        np.testing.assert_array_equal(got.detections.mask, r["masks"])
        np.testing.assert_allclose(got.detections.confidence, r["scores"], rtol=1e-6)
