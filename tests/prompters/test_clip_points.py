"""ClipPointPrompter: dense CLIP maps -> points, on synthetic maps and on tiny CLIPs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import supervision as sv
import torch
import torch.nn.functional as F

from textseg.clip import (
    DEFAULT_BACKGROUND,
    DEFAULT_TEMPLATES,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ClipEncoder,
    OpenClipEncoder,
)
from textseg.pipelines import ClipMaskSelector, decode_prompts
from textseg.prompters import (
    ClipPointPrompter,
    GridGeometry,
    InstancePoints,
    Prompter,
    similarity_to_points,
)
from textseg.vocab import Vocabulary

H, W = 24, 32
# Blob centres on cell centres (x, y), so each blob has one peak cell.
BLOB_A = (8.5, 6.5)
BLOB_B = (24.5, 16.5)


def _blob(centre: tuple[float, float], sigma: float, amplitude: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W] + 0.5
    cx, cy = centre
    return amplitude * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


@pytest.fixture(scope="module")
def two_blobs() -> np.ndarray:
    return (_blob(BLOB_A, 2.0) + _blob(BLOB_B, 2.5, 0.8)).astype(np.float32)


def _value_at(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    cols, rows = np.floor(xy).astype(int).T
    return m[rows, cols]


# ------------------------------------------------------------------ similarity map -> points


def test_two_blobs_give_two_instances_with_points_inside(two_blobs: np.ndarray) -> None:
    found = similarity_to_points(two_blobs, num_positive=2, num_negative=2)
    assert len(found) == 2
    assert all(isinstance(inst, InstancePoints) for inst in found)
    # Strongest first, score = the region's peak.
    assert found[0].score == pytest.approx(float(two_blobs.max()), abs=1e-6)
    assert found[0].score > found[1].score
    for inst, (centre, sigma) in zip(found, [(BLOB_A, 2.0), (BLOB_B, 2.5)], strict=True):
        positives = inst.points[inst.labels == 1]
        assert len(positives) == 2
        np.testing.assert_array_equal(positives[0], centre)  # the peak cell's centre
        own = _blob(centre, sigma)
        # Inside the blob: where it is above half its height.
        assert (_value_at(own, positives) > 0.5).all()
        assert np.hypot(*(positives[0] - positives[1])) >= 1.0


def test_negative_points_land_in_low_regions(two_blobs: np.ndarray) -> None:
    low_threshold = 0.2
    found = similarity_to_points(
        two_blobs, num_positive=1, num_negative=3, low_threshold=low_threshold
    )
    lo, hi = float(two_blobs.min()), float(two_blobs.max())
    for inst in found:
        assert inst.labels.tolist() == [1, 0, 0, 0]  # positives first
        negatives = inst.points[inst.labels == 0]
        assert (_value_at(two_blobs, negatives) <= lo + low_threshold * (hi - lo)).all()
        # Spread out, not piled on one cell.
        assert len({tuple(p) for p in negatives}) == 3


def test_background_subtraction_removes_a_constant_offset(two_blobs: np.ndarray) -> None:
    reference = similarity_to_points(two_blobs, num_negative=2)
    for offset in (-3.0, 0.25, 5.0):
        shifted = similarity_to_points(
            two_blobs + offset, background=np.full_like(two_blobs, offset), num_negative=2
        )
        scalar = similarity_to_points(two_blobs + offset, background=offset, num_negative=2)
        for got in (shifted, scalar):
            assert len(got) == len(reference)
            for a, b in zip(got, reference, strict=True):
                np.testing.assert_array_equal(a.points, b.points)
                np.testing.assert_array_equal(a.labels, b.labels)
                assert a.score == pytest.approx(b.score, abs=1e-5)
    # Without subtraction the offset decides: everything below min_score 0 -> nothing found.
    assert similarity_to_points(two_blobs - 3.0) == []


def test_background_map_is_subtracted_cell_by_cell(two_blobs: np.ndarray) -> None:
    """A background that varies over the image (e.g. a bright sky) is removed too."""
    rng = np.random.default_rng(0)
    background = (0.5 * _blob((28.5, 2.5), 6.0) + 0.05 * rng.random((H, W))).astype(np.float32)
    reference = similarity_to_points(two_blobs, background=None)
    got = similarity_to_points(two_blobs + background, background=background)
    assert [inst.points.tolist() for inst in got] == [inst.points.tolist() for inst in reference]
    # Without the background the bright corner is one more (false) instance.
    assert len(similarity_to_points(two_blobs + background, threshold=0.3)) > len(reference)


@pytest.mark.parametrize(
    "sim_map",
    [
        pytest.param(np.zeros((H, W), np.float32), id="flat"),
        pytest.param(np.full((H, W), 0.7, np.float32), id="flat-positive"),
        pytest.param(-1.0 - _blob(BLOB_A, 2.0), id="all-below-min-score"),
    ],
)
def test_nothing_above_threshold_gives_no_prompts(sim_map: np.ndarray) -> None:
    assert similarity_to_points(sim_map) == []


def test_min_score_and_torch_input(two_blobs: np.ndarray) -> None:
    # Only the stronger blob beats 0.9.
    found = similarity_to_points(torch.from_numpy(two_blobs), min_score=0.9)
    assert len(found) == 1
    np.testing.assert_array_equal(found[0].points[0], BLOB_A)
    # -inf: the relative threshold alone.
    assert len(similarity_to_points(two_blobs - 3.0, min_score=-math.inf)) == 2


def test_max_instances_and_min_area(two_blobs: np.ndarray) -> None:
    assert len(similarity_to_points(two_blobs, max_instances=1)) == 1
    spiky = two_blobs.copy()
    spiky[20, 2] = 0.95  # a one-cell spike
    assert len(similarity_to_points(spiky)) == 3
    assert len(similarity_to_points(spiky, min_area=2)) == 2


def test_several_positive_points_are_spread(two_blobs: np.ndarray) -> None:
    (inst, _) = similarity_to_points(two_blobs, num_positive=3, num_negative=0, min_distance=2.0)
    positives = inst.points
    assert len(positives) == 3 and (inst.labels == 1).all()
    for i in range(3):
        for j in range(i):
            assert np.hypot(*(positives[i] - positives[j])) >= 2.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(sim_map=np.zeros(5)),
            ValueError,
            r"^sim_map: expected a non-empty \(h, w\) map, "
            r"got shape \(5,\)$",
        ),
        (dict(sim_map=np.zeros((0, 4))), ValueError, r"^sim_map: expected a non-empty"),
        (dict(sim_map=np.full((2, 2), np.nan)), ValueError, r"^sim_map: contains NaN"),
        (dict(sim_map=np.array([["a"]])), TypeError, r"^sim_map: expected numbers, got dtype"),
        (
            dict(background=np.zeros((3, 3))),
            ValueError,
            r"^background: expected the shape of sim_map \(24, 32\), got \(3, 3\)$",
        ),
        (dict(threshold=1.5), ValueError, r"^threshold: expected a number in \[0, 1\], got 1.5$"),
        (dict(low_threshold=-0.1), ValueError, r"^low_threshold: expected a number in \[0, 1\]"),
        (dict(num_positive=0), ValueError, r"^num_positive: expected an int >= 1, got 0$"),
        (dict(num_negative=-1), ValueError, r"^num_negative: expected an int >= 0, got -1$"),
        (dict(num_positive=1.0), TypeError, r"^num_positive: expected an int >= 1, got float$"),
        (dict(max_instances=0), ValueError, r"^max_instances: expected an int >= 1, got 0$"),
        (dict(sigma=-1.0), ValueError, r"^sigma: expected a number >= 0 \(cells\), got -1.0$"),
        (dict(sigma="1"), TypeError, r"^sigma: expected a number >= 0, got str$"),
        (dict(min_score=float("nan")), ValueError, r"^min_score: expected a number"),
        (dict(min_distance=0), ValueError, r"^min_distance: expected a positive number or None"),
    ],
)
def test_similarity_to_points_bad_input(
    two_blobs: np.ndarray, kwargs: dict, error: type[Exception], match: str
) -> None:
    kwargs = {"sim_map": two_blobs, **kwargs}
    with pytest.raises(error, match=match):
        similarity_to_points(**kwargs)


# ------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("crop", [False, True])
def test_grid_geometry_matches_the_dense_cell_centres(oc_clip: ClipEncoder, crop: bool) -> None:
    image = np.random.default_rng(3).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    dense = oc_clip.dense_features(image, size=64, crop=crop)
    geometry = GridGeometry.from_dense(dense)
    h, w = dense.grid_size
    rows, cols = np.mgrid[0:h, 0:w]
    grid_xy = np.stack([cols + 0.5, rows + 0.5], axis=-1)
    np.testing.assert_allclose(geometry.to_pixels(grid_xy), dense.cell_centers(), atol=1e-4)
    corner = geometry.to_pixels(np.array([[0.0, 0.0], [w, h]]))
    if not crop:  # the whole image is covered, edge to edge
        np.testing.assert_allclose(corner, [[0, 0], [150, 90]], atol=1e-4)


# ------------------------------------------------------------------- MaskCLIP, by hand


def _hand_dense(encoder: ClipEncoder, image: np.ndarray, attention: str) -> torch.Tensor:
    """MaskCLIP written out from the weights for an image already at the model-input size
    (so no resize): patch embedding, positional embedding interpolated bicubically to the
    grid, the library's own unchanged blocks up to the last one (its input captured by a
    hook), then the last block with the value path, post-norm and projection by hand."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    pixels = ((torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std)[None]
    gh, gw = image.shape[0] // 16, image.shape[1] // 16
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, args: tuple) -> None:
        captured["x"] = args[0].clone()

    if isinstance(encoder, OpenClipEncoder):
        visual = encoder.model.visual
        conv_w, conv_b = visual.conv1.weight, visual.conv1.bias
        cls, pos = visual.class_embedding, visual.positional_embedding
        pre, blocks = visual.ln_pre, visual.transformer.resblocks
        last = blocks[-1]
        width = last.attn.embed_dim
        w_v, b_v = last.attn.in_proj_weight[2 * width :], last.attn.in_proj_bias[2 * width :]
        w_o, b_o = last.attn.out_proj.weight, last.attn.out_proj.bias
        heads = last.attn.num_heads
        ln_1, ln_2, fc1, fc2 = last.ln_1, last.ln_2, last.mlp.c_fc, last.mlp.c_proj
        post, proj = visual.ln_post, visual.proj
        assert visual.transformer.batch_first

        def run(x: torch.Tensor) -> None:
            visual.transformer(x)

    else:
        vision = encoder.model.vision_model
        emb = vision.embeddings
        conv_w, conv_b = emb.patch_embedding.weight, emb.patch_embedding.bias
        cls, pos = emb.class_embedding, emb.position_embedding.weight
        pre, blocks = vision.pre_layrnorm, vision.encoder.layers
        last = blocks[-1]
        w_v, b_v = last.self_attn.v_proj.weight, last.self_attn.v_proj.bias
        w_o, b_o = last.self_attn.out_proj.weight, last.self_attn.out_proj.bias
        heads = last.self_attn.num_heads
        ln_1, ln_2, fc1, fc2 = last.layer_norm1, last.layer_norm2, last.mlp.fc1, last.mlp.fc2
        post, proj = vision.post_layernorm, encoder.model.visual_projection.weight.T

        def run(x: torch.Tensor) -> None:
            vision.encoder(inputs_embeds=x)

    with torch.inference_mode():
        patches = F.conv2d(pixels, conv_w, conv_b, stride=16).flatten(2).transpose(1, 2)
        native = math.isqrt(pos.shape[0] - 1)
        grid_pos = pos[1:].reshape(1, native, native, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(gh * gw, -1)
        x = torch.cat([cls.reshape(1, 1, -1), patches], dim=1)
        x = pre(x + torch.cat([pos[:1], grid_pos])[None])
        handle = last.register_forward_pre_hook(hook)
        try:
            run(x)
        finally:
            handle.remove()
        x = captured["x"]
        y = F.layer_norm(x, ln_1.normalized_shape, ln_1.weight, ln_1.bias, ln_1.eps)
        v = y @ w_v.T + b_v
        if attention == "value-value":
            n, length, c = v.shape
            vh = v.reshape(n, length, heads, c // heads).permute(0, 2, 1, 3)
            attn = torch.softmax(vh @ vh.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
            v = (attn @ vh).permute(0, 2, 1, 3).reshape(n, length, c)
        x = x + v @ w_o.T + b_o
        hid = F.layer_norm(x, ln_2.normalized_shape, ln_2.weight, ln_2.bias, ln_2.eps)
        hid = hid @ fc1.weight.T + fc1.bias
        x = x + (hid * torch.sigmoid(1.702 * hid)) @ fc2.weight.T + fc2.bias  # QuickGELU
        tokens = F.layer_norm(x[0, 1:], post.normalized_shape, post.weight, post.bias, post.eps)
        return F.normalize(tokens @ proj, dim=-1).reshape(gh, gw, -1)


def _text(encoder: ClipEncoder, groups: list[list[str]]) -> torch.Tensor:
    """One row per group of words: the renormalised mean over every templated word."""
    rows = []
    for words in groups:
        texts = [t.format(word) for word in words for t in DEFAULT_TEMPLATES]
        emb = F.normalize(encoder.encode_text(texts), dim=-1)
        rows.append(F.normalize(emb.mean(dim=0), dim=0))
    return torch.stack(rows)


@pytest.mark.parametrize("attention", ["value", "value-value"])
@pytest.mark.parametrize("backend", ["oc_clip", "hf_clip"])
def test_similarity_maps_match_a_hand_computed_maskclip(
    backend: str, attention: str, request: pytest.FixtureRequest
) -> None:
    encoder: ClipEncoder = request.getfixturevalue(backend)
    # Already at the prompter's input size (shortest side 2 * 64 = 128, both sides whole
    # patches): an 8 x 11 grid, twice the native 4 x 4, so the positional embedding is
    # interpolated as the prompter needs it.
    image = np.random.default_rng(5).integers(0, 256, (128, 176, 3), dtype=np.uint8)
    vocab = Vocabulary(["dog", "Sky"], synonyms={"dog": ["puppy"]}, negatives=["toy dog"])
    prompter = ClipPointPrompter(encoder, attention=attention)
    sims, geometry = prompter.similarity_maps(image, vocab)

    dense = _hand_dense(encoder, image, attention)
    classes = _text(encoder, [["dog", "puppy"], ["Sky"]])
    # "sky" is a class here, so it leaves the background; the negative joins it.
    background = ["toy dog"] + [b for b in DEFAULT_BACKGROUND if b != "sky"]
    bg = _text(encoder, [[b] for b in background])
    expected = torch.einsum("hwd,kd->khw", dense, classes)
    expected = expected - torch.einsum("hwd,kd->khw", dense, bg).amax(dim=0, keepdim=True)

    assert sims.shape == (2, 8, 11) and sims.dtype == torch.float32
    torch.testing.assert_close(sims, expected, rtol=0, atol=2e-5)
    assert geometry == GridGeometry((128, 176), (128, 176), (0, 0, 128, 176), 16)


def test_the_two_attentions_differ(oc_clip: ClipEncoder) -> None:
    """So that the hand computation above checks each path, not one path twice."""
    image = np.random.default_rng(5).integers(0, 256, (128, 176, 3), dtype=np.uint8)
    a, _ = ClipPointPrompter(oc_clip, attention="value").similarity_maps(image, ["dog"])
    b, _ = ClipPointPrompter(oc_clip, attention="value-value").similarity_maps(image, ["dog"])
    assert not torch.allclose(a, b, atol=1e-3)


# --------------------------------------------------------------------------- the prompter


def test_is_a_prompter(oc_clip: ClipEncoder) -> None:
    assert isinstance(ClipPointPrompter(oc_clip), Prompter)


def test_prompts_from_known_maps(oc_clip: ClipEncoder, coco_image: np.ndarray) -> None:
    """A planted map: two blobs for "dog", nothing for "cat" -> two dog prompts at the blobs,
    mapped through upsampling and the grid geometry to image pixels."""
    geometry = GridGeometry((480, 640), (128, 176), (0, 0, 128, 176), 16)  # an 8 x 11 grid
    dog = np.full((8, 11), -0.2, np.float32)
    dog[2, 3] = dog[6, 8] = 0.3
    dog[2, 4], dog[6, 7] = 0.2, 0.15
    cat = np.full((8, 11), -0.1, np.float32)
    maps = torch.from_numpy(np.stack([dog, cat]))
    prompter = ClipPointPrompter(oc_clip, upsample=4, num_negative=1)
    prompter.similarity_maps = lambda image, classes: (maps, geometry)  # type: ignore[method-assign]
    cp = prompter.prompts(coco_image, ["dog", "cat"])

    assert len(cp) == 2
    np.testing.assert_array_equal(cp.class_id, [0, 0])
    assert cp.class_names == ("dog", "cat")
    assert cp.data["class_name"].tolist() == ["dog", "dog"]
    assert cp.multimask is True
    cell_w, cell_h = 640 / 11, 480 / 8  # one patch cell in image pixels
    for row, (r, c) in enumerate([(2, 3), (6, 8)]):
        point = cp.data["point"][row]
        np.testing.assert_array_equal(cp.prompts.points[row, 0], point)
        # Inside the peak cell's footprint (4x upsampling moves it by a fraction of a cell).
        assert c * cell_w <= point[0] <= (c + 1) * cell_w
        assert r * cell_h <= point[1] <= (r + 1) * cell_h
        labels = cp.prompts.point_labels[row]
        assert labels.tolist() == [1, 0]
        negative = cp.prompts.points[row, 1]
        assert 0 <= negative[0] <= 640 and 0 <= negative[1] <= 480
        nr, nc = int(negative[1] // cell_h), int(negative[0] // cell_w)
        assert dog[nr, nc] == pytest.approx(-0.2)  # a low cell
    margin = cp.data["point_margin"]
    assert (margin > 0).all() and margin[0] >= margin[1] - 1e-6
    expected = 1 / (1 + np.exp(-oc_clip.logit_scale * margin))
    np.testing.assert_allclose(cp.confidence, expected, rtol=1e-5)


def test_per_class_thresholds_are_minimum_confidences(
    oc_clip: ClipEncoder, coco_image: np.ndarray
) -> None:
    geometry = GridGeometry((480, 640), (128, 176), (0, 0, 128, 176), 16)
    dog = np.full((8, 11), -0.2, np.float32)
    dog[2, 3], dog[6, 8] = 0.3, 0.1  # a strong and a weak dog
    cat = np.roll(dog, 1, axis=1)  # the same two, one cell to the right
    maps = torch.from_numpy(np.stack([dog, cat]))
    prompter = ClipPointPrompter(oc_clip, upsample=1, sigma=0.0)
    prompter.similarity_maps = lambda image, classes: (maps, geometry)  # type: ignore[method-assign]
    everything = prompter.prompts(coco_image, ["dog", "cat"])
    np.testing.assert_array_equal(everything.class_id, [0, 0, 1, 1])
    weak = float(everything.confidence[1])
    assert weak < 0.95 < float(everything.confidence[0])
    vocab = Vocabulary(["dog", "cat"], thresholds={"dog": 0.95})
    cp = prompter.prompts(coco_image, vocab)
    np.testing.assert_array_equal(cp.class_id, [0, 1, 1])  # the weak dog is gone, cats stay
    np.testing.assert_array_equal(cp.confidence, everything.confidence[[0, 2, 3]])
    np.testing.assert_array_equal(cp.prompts.points, everything.prompts.points[[0, 2, 3]])
    assert cp.data["point_margin"].tolist() == everything.data["point_margin"][[0, 2, 3]].tolist()
    none = prompter.prompts(
        coco_image, Vocabulary(["dog", "cat"], thresholds={"dog": 1.0, "cat": 1.0})
    )
    assert len(none) == 0 and set(none.data) == set(everything.data)


def test_nothing_found_is_an_explicit_empty_result(
    oc_clip: ClipEncoder, core, coco_image: np.ndarray
) -> None:
    # A cosine margin cannot exceed 2: nothing can pass.
    prompter = ClipPointPrompter(oc_clip, min_score=2.0)
    cp = prompter.prompts(coco_image, ["dog", "cat"])
    assert len(cp) == 0
    assert cp.class_names == ("dog", "cat")
    assert set(cp.data) == {"class_name", "prompt", "point", "point_margin"}
    assert cp.data["point"].shape == (0, 2)
    dets = decode_prompts(core, coco_image, cp)
    assert isinstance(dets, sv.Detections) and len(dets) == 0
    assert dets.mask.shape == (0, *coco_image.shape[:2])


@pytest.mark.parametrize("backend", ["oc_clip", "hf_clip"])
def test_end_to_end_into_sam(
    backend: str, core, coco_image: np.ndarray, assert_detections, request: pytest.FixtureRequest
) -> None:
    encoder: ClipEncoder = request.getfixturevalue(backend)
    # Random CLIP weights: rely on the relative threshold so that prompts exist.
    prompter = ClipPointPrompter(encoder, min_score=-math.inf, max_instances=2)
    classes = ["dog", "cat"]
    cp = prompter.prompts(coco_image, classes)
    assert 1 <= len(cp) <= 4
    assert cp.prompts.check_inside(480, 640) is None
    dets = decode_prompts(core, coco_image, cp, selector=ClipMaskSelector(encoder))
    assert_detections(dets, coco_image, n=len(cp))  # one chosen mask per prompt
    np.testing.assert_array_equal(dets.class_id, cp.class_id)
    assert dets.data["class_name"].tolist() == [classes[c] for c in dets.class_id]
    np.testing.assert_array_equal(dets.data["prompt_index"], np.arange(len(cp)))
    assert set(dets.data["mask_index"].tolist()) <= {1, 2, 3}
    for key in ("selection_score", "point_margin", "sam_iou"):
        assert dets.data[key].shape == (len(dets),)
    np.testing.assert_array_equal(dets.confidence, cp.confidence)


# ----------------------------------------------------------------------------- bad input


def test_bad_classes(oc_clip, coco_image, bad_classes, bad_error, bad_match) -> None:
    with pytest.raises(bad_error, match=bad_match):
        ClipPointPrompter(oc_clip).prompts(coco_image, bad_classes)


@pytest.mark.parametrize("backend", ["oc_clip", "hf_clip"])
@pytest.mark.parametrize(
    "vocab",
    [
        pytest.param(lambda name: [name], id="class"),
        pytest.param(lambda name: Vocabulary(["cat"], synonyms={"cat": [name]}), id="synonym"),
        pytest.param(lambda name: Vocabulary(["cat"], negatives=[name]), id="negative"),
    ],
)
def test_names_too_long_for_clip(
    backend: str, vocab, long_name: str, coco_image: np.ndarray, request: pytest.FixtureRequest
) -> None:
    encoder: ClipEncoder = request.getfixturevalue(backend)
    with pytest.raises(
        ValueError,
        match=(
            r"^text 'cat cat .*\.\.\.' \(399 characters\) is too long for the CLIP text encoder: "
            r"in the template 'a photo of a \{\}\.' it has more than the model's 77 tokens "
            r"\(start and end included\); expected a shorter class name, synonym or negative$"
        ),
    ):
        ClipPointPrompter(encoder).prompts(coco_image, vocab(long_name))


def test_a_name_of_77_tokens_with_its_template_is_refused_but_shorter_ones_work(
    oc_clip: ClipEncoder, coco_image: np.ndarray
) -> None:
    # "a photo of a {}." is 5 tokens + start + end: 70 words fit, 71 do not.
    ok = " ".join(["cat"] * 70)
    assert ClipPointPrompter(oc_clip, templates=["a photo of a {}."]).class_embeddings([ok]).shape
    with pytest.raises(ValueError, match=r"more than the model's 77 tokens"):
        ClipPointPrompter(oc_clip, templates=["a photo of a {}."]).prompts(
            coco_image, [ok + " cat"]
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(clip=object()),
            TypeError,
            r"^clip: expected a textseg.clip.ClipEncoder or a "
            r"registry name, got object$",
        ),
        (
            dict(clip="clip-vit-tiny"),
            ValueError,
            r"^unknown clip model 'clip-vit-tiny'\. Did you "
            r"mean 'clip-vit-tiny-test'\?",
        ),
        (
            dict(attention="qk"),
            ValueError,
            r"^attention: expected 'value' or 'value-value', "
            r"got 'qk'$",
        ),
        (
            dict(templates=["a photo"]),
            ValueError,
            r"^templates\[0\] = 'a photo': expected a str with exactly one '\{\}'",
        ),
        (dict(templates=[]), ValueError, r"^templates: expected at least one template"),
        (dict(templates="a {}"), TypeError, r"^templates: expected a list of str, got the str"),
        (dict(background=[1]), ValueError, r"^background\[0\] = 1: expected a non-empty str$"),
        (dict(threshold=-0.5), ValueError, r"^threshold: expected a number in \[0, 1\]"),
        (dict(upsample=0), ValueError, r"^upsample: expected an int >= 1, got 0$"),
        (dict(sigma=-0.5), ValueError, r"^sigma: expected a number >= 0 \(cells\), got -0.5$"),
        (
            dict(min_score="0"),
            TypeError,
            r"^min_score: expected a number \(-inf for none\), "
            r"got str$",
        ),
        (dict(min_area=0), ValueError, r"^min_area: expected a positive number of cells, got 0$"),
        (dict(max_instances=0), ValueError, r"^max_instances: expected an int >= 1, got 0$"),
        (dict(size=0), ValueError, r"^size: expected an int >= 1, got 0$"),
    ],
)
def test_bad_settings(
    oc_clip: ClipEncoder, kwargs: dict, error: type[Exception], match: str
) -> None:
    kwargs = {"clip": oc_clip, **kwargs}
    with pytest.raises(error, match=match):
        ClipPointPrompter(kwargs.pop("clip"), **kwargs)
