"""The batched SAM 2 step (all live objects at once, grouped by memory layout) against the
official ``sam2`` package's ``SAM2VideoPredictor`` and against transformers' per-object loop.

The official model is built on seeded random weights (``build_official_sam2``), saved as an
official checkpoint and loaded through textseg's registry (converter, strict load), as in
``test_sam2_parity.py``. Objects are added from masks, as the tracker adds them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from textseg.sam import SamCore
from textseg.video.propagator import Sam2Propagator

pytest.importorskip("sam2", reason="the official sam2 package is the reference")


def _masks(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        mh, mw = rng.integers(h // 6, h // 3), rng.integers(w // 6, w // 3)
        y, x = rng.integers(0, h - mh), rng.integers(0, w - mw)
        masks[i, y : y + mh, x : x + mw] = True
    return masks


def _frames(pan, count: int, folder) -> list[np.ndarray]:
    """Frames written as JPEG for the official loader and read back for textseg."""
    folder.mkdir()
    out = []
    for t in range(count):
        path = folder / f"{t:05d}.jpg"
        Image.fromarray(pan.frame(t)).save(path, quality=95)
        out.append(np.asarray(Image.open(path).convert("RGB")))
    return out


def _spy(monkeypatch) -> list[dict[int, torch.Tensor]]:
    """Records each step's mask logits per object id."""
    steps: list[dict[int, torch.Tensor]] = []
    original = Sam2Propagator._outputs

    def outputs(self, frame, rows, *, new):
        result = original(self, frame, rows, new=new)
        ids = [self._session.obj_idx_to_id(idx) for idx in rows]
        steps.append({i: o["pred_masks"][0, 0].clone() for i, o in zip(ids, result)})
        return result

    monkeypatch.setattr(Sam2Propagator, "_outputs", outputs)
    return steps


def _agree(a: torch.Tensor, b: torch.Tensor, what: str) -> bool:
    """Logits within 1e-3 and mask IoU >= 0.999; whether the mask is non-empty."""
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0, msg=what)
    ma, mb = a > 0, b > 0
    union = (ma | mb).sum()
    if union:
        assert (ma & mb).sum() / union >= 0.999, what
    return bool(union)


@pytest.mark.parametrize("objects", [1, 8, 32])
def test_batched_step_matches_the_official_predictor(
    objects, pan, tmp_path, monkeypatch, official_sam2
):
    _check_official("sam2.1-tiny-test", objects, pan, tmp_path, monkeypatch, official_sam2)


@pytest.mark.slow
@pytest.mark.parametrize("objects", [1, 8, 32])
@pytest.mark.parametrize(
    "name",
    ["sam2-hiera-tiny", "sam2.1-hiera-tiny", "sam2-hiera-base-plus", "sam2.1-hiera-base-plus"],
)
def test_batched_step_matches_the_official_predictor_at_real_size(
    name, objects, pan, tmp_path, monkeypatch, official_sam2
):
    """The published architectures (random weights, 1024 input), SAM 2 and 2.1."""
    _check_official(name, objects, pan, tmp_path, monkeypatch, official_sam2)


def _check_official(name: str, objects: int, pan, tmp_path, monkeypatch, official_sam2) -> None:
    frames_n = 3
    official, checkpoint = official_sam2(name)
    core = SamCore(name, checkpoint=str(checkpoint))
    frames = _frames(pan, frames_n, tmp_path / "frames")
    h, w = frames[0].shape[:2]
    masks = _masks(objects, h, w, seed=objects)

    with torch.inference_mode():
        state = official.init_state(str(tmp_path / "frames"))
        for i in range(objects):
            official.add_new_mask(state, 0, i + 1, masks[i])
        theirs = {}
        for t, _, _ in official.propagate_in_video(state):
            theirs[t] = [
                state["output_dict_per_obj"][k][
                    "cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"
                ][t]["pred_masks"][0, 0].clone()
                for k in range(objects)
            ]

    steps = _spy(monkeypatch)
    propagator = Sam2Propagator(core)
    for t in range(frames_n):
        propagator.propagate(t, frames[t])
        if t == 0:
            propagator.add(0, list(range(1, objects + 1)), masks)
    ours = [s for s in steps if s]  # frame 0 (added), then frames 1, 2
    assert len(ours) == frames_n
    visible = 0
    for t in range(frames_n):
        for k in range(objects):
            visible += _agree(ours[t][k + 1], theirs[t][k], f"frame {t} object {k}")
    assert visible >= frames_n * objects // 2


@pytest.mark.parametrize("objects", [1, 8, 32])
def test_batched_groups_and_removal_match_the_per_object_loop(objects, sam2_core, pan, monkeypatch):
    """Objects added on frame 0 and on frame 2 (two memory layouts, two groups), the first
    removed on frame 3: the batched step gives transformers' per-object loop's logits."""
    frames = [pan.frame(t) for t in range(5)]
    h, w = frames[0].shape[:2]
    first = max(1, objects // 2)
    later = objects - first
    masks = _masks(objects, h, w, seed=objects + 100)

    def run(batched: bool) -> list[dict[int, torch.Tensor]]:
        steps = _spy(monkeypatch)
        propagator = Sam2Propagator(sam2_core, batched=batched)
        for t, frame in enumerate(frames):
            propagator.propagate(t, frame)
            if t == 0:
                propagator.add(0, list(range(1, first + 1)), masks[:first])
            if t == 2 and later:
                propagator.add(2, list(range(first + 1, objects + 1)), masks[first:])
            if t == 3 and objects > 1:
                propagator.remove([1])
        monkeypatch.undo()
        return [s for s in steps if s]

    reference, batched = run(False), run(True)
    assert [sorted(s) for s in batched] == [sorted(s) for s in reference]
    if objects > 1:
        assert 1 not in batched[-1] and len(batched[-1]) == objects - 1
    for step, (a, b) in enumerate(zip(batched, reference)):
        for obj in a:
            _agree(a[obj], b[obj], f"step {step} object {obj}")


def test_memory_frames_reads_fewer_memories(sam2_core, pan, monkeypatch):
    """memory_frames=N reads the conditioning frame and the last N; the default is exact."""
    with pytest.raises(ValueError, match="memory_frames: expected at most 6"):
        Sam2Propagator(sam2_core, memory_frames=7)
    with pytest.raises(TypeError, match="memory_frames"):
        Sam2Propagator(sam2_core, memory_frames=1.5)
    assert Sam2Propagator(sam2_core).memory_frames == 6

    from textseg.video import sam2_step

    read: list[tuple[int, ...]] = []
    layout = sam2_step.memory_layout

    def spy(model, outputs, frame, memory_frames, pointers=None):
        mems, ptrs = layout(model, outputs, frame, memory_frames, pointers)
        read.append(tuple(o for o, _ in mems))
        return mems, ptrs

    monkeypatch.setattr(sam2_step, "memory_layout", spy)
    frames = [pan.frame(t) for t in range(5)]
    h, w = frames[0].shape[:2]
    propagator = Sam2Propagator(sam2_core, memory_frames=1)
    for t, frame in enumerate(frames):
        propagator.propagate(t, frame)
        if t == 0:
            propagator.add(0, [1], _masks(1, h, w, seed=3))
    assert read == [(0,), (0, 1), (0, 1), (0, 1)]


def _relative(a: torch.Tensor, b: torch.Tensor, what: str, rtol: float = 1e-5) -> None:
    """``a`` equals ``b`` within ``rtol`` of ``b``'s largest magnitude (random-weight mask
    logits are ~1e-2: an absolute tolerance would compare nothing)."""
    scale = float(b.float().abs().max())
    err = float((a.float() - b.float()).abs().max())
    assert err <= rtol * max(scale, 1e-12), f"{what}: error {err:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize(
    ("name", "attention_batch"),
    [
        ("edgetam-tiny-test", 1),
        ("edgetam-tiny-test", None),
        pytest.param("edgetam", 1, marks=pytest.mark.slow),
    ],
)
def test_edgetam_batched_step_matches_its_per_object_loop(
    name, attention_batch, pan, monkeypatch, randomize_zeros
):
    """EdgeTAM's tracked frames through EdgeTamStep (decoder batched; memory attention one
    object per call, as on a CPU, or a whole layout group per call, as on a GPU)
    against transformers' per-object loop: objects added on frames 0 and 2 (two layouts), one
    removed on frame 3; logits and stored memories. The parameters transformers initialises to
    zero (temporal encodings, no-object pointer...) get random values first, so a wrong
    memory offset or pointer would show. Slow: at the published size (random weights)."""
    torch.manual_seed(0)
    core = SamCore(name, pretrained=False)
    model = core.backend.model
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    randomize_zeros(model)
    frames = [pan.frame(t) for t in range(6)]
    h, w = frames[0].shape[:2]
    masks = _masks(6, h, w, seed=11)

    def run(batched: bool) -> tuple[list[dict[int, torch.Tensor]], dict[int, torch.Tensor]]:
        steps = _spy(monkeypatch)
        propagator = Sam2Propagator(core, batched=batched)
        if batched:  # objects per memory-attention call (None: a whole layout group)
            propagator._edgetam_step.attention_batch = attention_batch
        for t, frame in enumerate(frames):
            propagator.propagate(t, frame)
            if t == 0:
                propagator.add(0, [1, 2, 3, 4], masks[:4])
            if t == 2:
                propagator.add(2, [5, 6], masks[4:])
            if t == 3:
                propagator.remove([1])
        monkeypatch.undo()
        s = propagator._session
        last = len(frames) - 1
        memories = {
            obj: s.output_dict_per_obj[s.obj_id_to_idx(obj)]["non_cond_frame_outputs"][last][
                "maskmem_features"
            ]
            for obj in s.obj_ids
        }
        return [step for step in steps if step], memories

    (reference, ref_memory), (batched, memory) = run(False), run(True)
    assert [sorted(s) for s in batched] == [sorted(s) for s in reference]
    assert sorted(batched[-1]) == [2, 3, 4, 5, 6]
    for step, (a, b) in enumerate(zip(batched, reference)):
        for obj in a:
            _relative(a[obj], b[obj], f"step {step} object {obj}")
            _agree(a[obj], b[obj], f"step {step} object {obj}")  # masks: IoU >= 0.999
    for obj, want in ref_memory.items():
        _relative(memory[obj], want, f"memory of object {obj}")


def test_edgetam_refuses_fewer_memories(edgetam_core):
    assert Sam2Propagator(edgetam_core)._edgetam_step is not None
    assert Sam2Propagator(edgetam_core, batched=False)._edgetam_step is None
    with pytest.raises(ValueError, match="EdgeTAM reads all"):
        Sam2Propagator(edgetam_core, memory_frames=2)


# ---------------------------------------------------------------------- memory_stride (a trade)
def test_pool_averages_the_cells_a_border_cell_what_it_holds():
    from textseg.video.sam2_step import _pool

    grid = torch.arange(15.0).reshape(3, 5)  # a 3 x 5 grid, one channel
    tokens = torch.stack([grid.flatten(), -grid.flatten()], dim=1)  # (15, 2)
    pooled = _pool(tokens, (3, 5), 2)
    expected = [grid[r : r + 2, c : c + 2].mean() for r in range(0, 3, 2) for c in range(0, 5, 2)]
    torch.testing.assert_close(pooled[:, 0], torch.stack(expected))
    torch.testing.assert_close(pooled[:, 1], -torch.stack(expected))
    assert _pool(tokens, (3, 5), 1) is tokens


def test_a_pooled_key_weighs_as_the_tokens_it_stands_for():
    """The log(s*s) bias on a key is the same attention as that key repeated s*s times."""
    from textseg.video.sam2_step import Sam2Step

    class Attn:
        num_attention_heads, scaling = 2, 0.25

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, n, 8, generator=g) for n in (5, 4, 4))
    bias = torch.tensor([math.log(4.0)] * 2 + [0.0] * 2)  # 2 pooled tokens, 2 pointers
    pooled = Sam2Step._attend(Attn, q, k, v, bias)
    repeat = torch.tensor([0] * 4 + [1] * 4 + [2, 3])
    assert torch.allclose(pooled, Sam2Step._attend(Attn, q, k[:, repeat], v[:, repeat]), atol=1e-6)


def test_memory_stride_reads_fewer_memory_tokens(sam2_core, edgetam_core, pan, monkeypatch):
    """memory_stride=2 reads each memory at half resolution (the pointers as they are); the
    default is exact; bad values and EdgeTAM are refused."""
    from textseg.video.sam2_step import Sam2Step

    with pytest.raises(ValueError, match="memory_stride: expected a positive integer"):
        Sam2Propagator(sam2_core, memory_stride=0)
    with pytest.raises(ValueError, match="memory_stride: EdgeTAM"):
        Sam2Propagator(edgetam_core, memory_stride=2)
    assert Sam2Propagator(sam2_core).memory_stride == 1

    read: list[int] = []
    attend = Sam2Step._attend

    def spy(attn, q, k, v, bias=None):
        if k.shape[1] != q.shape[1]:  # the cross-attention (self-attention: tokens == queries)
            read.append(k.shape[1])
        return attend(attn, q, k, v, bias)

    monkeypatch.setattr(Sam2Step, "_attend", staticmethod(spy))
    frames = [pan.frame(t) for t in range(3)]
    h, w = frames[0].shape[:2]
    got = {}
    for stride in (1, 2):
        read.clear()
        propagator = Sam2Propagator(sam2_core, memory_stride=stride)
        for t, frame in enumerate(frames):
            out = propagator.propagate(t, frame)
            if t == 0:
                propagator.add(0, [1, 2], _masks(2, h, w, seed=5))
        got[stride] = list(read)
        assert out.masks.shape == (2, h, w) and out.ids.tolist() == [1, 2]
    gh, gw = sam2_core.backend.model.backbone_feature_sizes[-1]
    layers = len(sam2_core.backend.model.memory_attention.layers)
    pooled = -(-gh // 2) * -(-gw // 2)
    # frame 1: the conditioning memory + 1 pointer; frame 2: + one past memory, 2 pointers
    splits = sam2_core.backend.model.hidden_dim // sam2_core.backend.model.mem_dim
    exact = [gh * gw + splits] * layers + [2 * gh * gw + 2 * splits] * layers
    assert got[1] == exact
    assert got[2] == [pooled + splits] * layers + [2 * pooled + 2 * splits] * layers


def test_key_cache_budget_bounds_the_cached_projections_not_the_masks(sam2_core, pan):
    """Past key_cache_bytes, memories are projected on each read: the same masks, and the
    cached projections never exceed the budget."""
    from textseg.video.sam2_step import cached_bytes

    frames = [pan.frame(t) for t in range(5)]
    h, w = frames[0].shape[:2]
    model = sam2_core.backend.model
    gh, gw = model.backbone_feature_sizes[-1]
    width = model.memory_attention.layers[0].cross_attn_image.internal_dim
    one = 2 * gh * gw * width * 4 * len(model.memory_attention.layers)  # one memory, float32
    runs = {}
    for budget in (None, 0, 3 * one):
        propagator = Sam2Propagator(sam2_core, key_cache_bytes=budget)
        masks = []
        for t, frame in enumerate(frames):
            masks.append(propagator.propagate(t, frame).masks)
            if t == 0:
                masks.append(propagator.add(0, [1, 2], _masks(2, h, w, seed=7)).masks)
        s = propagator._session
        held = [
            cached_bytes(stored)
            for idx in range(len(s.obj_ids))
            for outputs in s.output_dict_per_obj[idx].values()
            for stored in outputs.values()
        ]
        runs[budget] = (masks, held)
    for budget in (0, 3 * one):
        for a, b in zip(runs[budget][0], runs[None][0], strict=True):
            np.testing.assert_array_equal(a, b)
    held = runs[None][1]  # unbounded: every memory read so far (not the last frame's, per object)
    assert len(held) > 4 and sorted(held) == [0, 0] + [one] * (len(held) - 2)
    assert sum(runs[0][1]) == 0
    assert sum(runs[3 * one][1]) == 3 * one
    with pytest.raises(ValueError, match="key_cache_bytes"):
        Sam2Propagator(sam2_core, key_cache_bytes=-1)
