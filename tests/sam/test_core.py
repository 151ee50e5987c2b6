"""The cached SAM core: parity with segment_anything's SamPredictor, cache, prompts, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor, sam_model_registry

from textseg._device import Precision, resolve_precision
from textseg._hub import create_model
from textseg.sam import Prompts, SamCore


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _random_image(seed: int = 0, h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth random image: blocks of colour, so masks have structure.
    small = rng.integers(0, 256, (h // 40 + 1, w // 40 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((40, 40, 1), np.uint8))[:h, :w])


def _boxes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, 400, n)
    y0 = rng.uniform(0, 300, n)
    return np.stack([x0, y0, x0 + rng.uniform(20, 200, n), y0 + rng.uniform(20, 150, n)], 1)


# --------------------------------------------------------------------------- parity, real size
@pytest.fixture(scope="module")
def vit_b() -> tuple[SamCore, SamPredictor, np.ndarray]:
    """textseg's vit_b and the official one (segment_anything's own builder) with the same
    seeded random weights; relative-position tables randomised (they start at zero)."""
    torch.manual_seed(0)
    ours = create_model("sam-vit-b", pretrained=False)
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if "rel_pos" in name:
                param.normal_(0.0, 0.5)
    official = sam_model_registry["vit_b"]()
    official.load_state_dict(ours.state_dict())
    image = _random_image()
    predictor = SamPredictor(official)
    predictor.set_image(image)
    core = SamCore(ours)
    emb = core.encode(image)
    # Same preprocessing; the fused-attention encoder equals the official one to rounding.
    torch.testing.assert_close(emb.embedding, predictor.features, rtol=1e-4, atol=1e-4)
    return core, predictor, image


class TestParityVitB:  # the representative real-size parity test: not marked slow
    def test_one_point_multimask(self, vit_b):
        core, predictor, image = vit_b
        pt, lab = np.array([[300.0, 200.0]]), np.array([1])
        masks, scores, _ = predictor.predict(
            point_coords=pt, point_labels=lab, multimask_output=True
        )
        dets = core.predict(
            image, points=pt, point_labels=lab, multimask_output=True, return_all=True
        )
        assert len(dets) == 3
        for i in range(3):
            assert _mask_iou(masks[i], dets.mask[i]) >= 0.99
        np.testing.assert_allclose(dets.data["sam_iou"], scores, atol=1e-4)
        # Selection by predicted IoU picks the official best.
        best = core.predict(image, points=pt, point_labels=lab, multimask_output=True)
        assert _mask_iou(best.mask[0], masks[int(np.argmax(scores))]) >= 0.99

    def test_point_and_box(self, vit_b):
        core, predictor, image = vit_b
        pt, lab, box = np.array([[300.0, 200.0]]), np.array([1]), np.array([100, 100, 400, 350.0])
        masks, scores, _ = predictor.predict(
            point_coords=pt, point_labels=lab, box=box, multimask_output=False
        )
        dets = core.predict(image, points=pt, point_labels=lab, boxes=box, multimask_output=False)
        assert _mask_iou(masks[0], dets.mask[0]) >= 0.99
        np.testing.assert_allclose(dets.data["sam_iou"], scores, atol=1e-4)

    def test_sixteen_boxes_at_once(self, vit_b):
        core, predictor, image = vit_b
        boxes = _boxes(16)
        dets = core.predict(image, Prompts.from_boxes(boxes))
        assert len(dets) == 16
        for i, box in enumerate(boxes):
            masks, scores, _ = predictor.predict(box=box, multimask_output=False)
            assert _mask_iou(masks[0], dets.mask[i]) >= 0.99, i
            assert abs(float(scores[0]) - float(dets.data["sam_iou"][i])) <= 1e-4

    def test_mask_input_refinement(self, vit_b):
        core, predictor, image = vit_b
        pt, lab = np.array([[250.0, 260.0], [420.0, 120.0]]), np.array([1, 0])
        _, scores, logits = predictor.predict(
            point_coords=pt, point_labels=lab, multimask_output=True
        )
        prev = logits[int(np.argmax(scores))][None]
        masks, scores2, _ = predictor.predict(
            point_coords=pt, point_labels=lab, mask_input=prev, multimask_output=False
        )
        first = core.predict(
            image, points=pt, point_labels=lab, multimask_output=True, return_logits=True
        )
        np.testing.assert_allclose(first.data["low_res_logits"][0], prev[0], atol=1e-3)
        dets = core.predict(
            image,
            points=pt,
            point_labels=lab,
            mask_inputs=first.data["low_res_logits"],
            multimask_output=False,
        )
        assert _mask_iou(masks[0], dets.mask[0]) >= 0.99
        np.testing.assert_allclose(dets.data["sam_iou"], scores2, atol=1e-4)


# --------------------------------------------------------------------------- tiny model behaviour
@pytest.fixture(scope="module")
def tiny() -> SamCore:
    torch.manual_seed(0)
    return SamCore("sam-vit-tiny-test")


def test_cache_hits_and_misses(tiny: SamCore):
    image = _random_image(3, 120, 160)
    tiny.cache.clear()
    before = tiny.cache.stats()
    first = tiny.encode(image)
    second = tiny.encode(image.copy())  # same content, new array: a hit
    stats = tiny.cache.stats()
    assert second is first
    assert (stats.misses - before.misses, stats.hits - before.hits) == (1, 1)
    tiny.predict(image, boxes=[10, 10, 60, 60])
    assert tiny.cache.stats().misses - before.misses == 1  # predicting did not re-encode


def test_cache_byte_budget_evicts_lru():
    torch.manual_seed(0)
    sam = create_model("sam-vit-tiny-test", pretrained=False)
    one = SamCore(sam).encode(_random_image(0, 64, 64))
    core = SamCore(sam, cache_bytes=int(one.nbytes * 2.5))
    images = [_random_image(s, 64, 64) for s in range(3)]
    for im in images:
        core.encode(im)
    assert len(core.cache) == 2 and core.cache.nbytes <= core.cache.max_bytes
    core.encode(images[2])  # most recent: still cached
    core.encode(images[0])  # evicted: encoded again
    stats = core.cache.stats()
    assert (stats.hits, stats.misses) == (1, 4)


def test_cache_key_depends_on_content(tiny: SamCore):
    a = _random_image(5, 64, 64)
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert tiny.encode(a).key != tiny.encode(b).key


def test_embedding_stays_on_model_device(tiny: SamCore):
    emb = tiny.encode(_random_image(6, 64, 64))
    assert emb.embedding.device == next(tiny.backend.model.parameters()).device


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunking_does_not_change_results(chunk: int):
    torch.manual_seed(0)
    sam = create_model("sam-vit-tiny-test", pretrained=False)
    image = _random_image(1)
    ref = SamCore(sam, chunk_size=5).predict(image, Prompts.from_boxes(_boxes(11)))
    out = SamCore(sam, chunk_size=chunk).predict(image, Prompts.from_boxes(_boxes(11)))
    # BLAS blocks differently per batch size: equal up to float rounding (a pixel at most).
    assert all(_mask_iou(a, b) >= 0.999 for a, b in zip(ref.mask, out.mask))
    np.testing.assert_allclose(ref.confidence, out.confidence, atol=1e-5)


def test_mixed_prompts_and_counts_per_image(tiny: SamCore):
    images = [_random_image(0), _random_image(1, 300, 200), _random_image(2, 100, 500)]
    prompts = [
        Prompts.from_boxes(_boxes(3)),
        Prompts.from_point_lists([[[50, 50]], [[60, 60], [100, 120], [10, 10]]], [[1], [1, 0, 1]]),
        Prompts(
            points=np.array([[[200.0, 50.0]]]),
            point_labels=np.array([[1]]),
            boxes=np.array([[150.0, 20.0, 300.0, 90.0]]),
        ),
    ]
    results = tiny.predict_batch(images, prompts)
    assert [len(r) for r in results] == [3, 2, 1]
    for image, dets in zip(images, results):
        assert dets.mask.shape[1:] == image.shape[:2]
        assert dets.mask.dtype == bool and dets.xyxy.dtype == np.float32
        assert set(dets.data) >= {"sam_iou", "stability_score", "prompt_index", "mask_index"}


def test_multimask_auto_and_return_all(tiny: SamCore):
    image = _random_image(0)
    prompts = Prompts.from_point_lists(
        [[[100, 100]], [[200, 200], [250, 260]]], [[1], [1, 1]], boxes=None
    )
    auto = tiny.predict(image, prompts)
    assert list(auto.data["prompt_index"]) == [0, 1]
    assert auto.data["mask_index"][0] in (1, 2, 3) and auto.data["mask_index"][1] == 0
    everything = tiny.predict(
        image, Prompts.from_points([[100, 100]]), multimask_output=True, return_all=True
    )
    assert list(everything.data["mask_index"]) == [1, 2, 3]
    best = int(np.argmax(everything.data["sam_iou"]))
    single = tiny.predict(image, Prompts.from_points([[100, 100]]), multimask_output=True)
    np.testing.assert_array_equal(single.mask[0], everything.mask[best])


def test_empty_prompt_arrays_give_empty_detections(tiny: SamCore):
    image = _random_image(0, 50, 70)
    dets = tiny.predict(image, Prompts(boxes=np.zeros((0, 4), np.float32)))
    assert len(dets) == 0 and dets.mask.shape == (0, 50, 70)


def test_min_region_area_removes_islands(tiny: SamCore):
    import cv2

    image = _random_image(0)
    area = 2_000
    raw = tiny.predict(image, boxes=[0, 0, 639, 479]).mask[0]
    cleaned = tiny.predict(image, boxes=[0, 0, 639, 479], min_region_area=area).mask[0]

    def regions(mask: np.ndarray) -> np.ndarray:
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        return stats[1:, cv2.CC_STAT_AREA]

    assert (regions(raw) < area).sum() > 0, "the random mask needs small islands to remove"
    kept = regions(cleaned)
    # Every island left is big enough, unless all were small (then the largest stays).
    assert (len(kept) >= 1 and (kept >= area).all()) or len(kept) == 1
    assert cleaned.sum() != raw.sum()


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 2), np.uint8), "expected shape"),
        (np.full((8, 8, 3), 4000, np.uint16), "convert 16-bit"),
        (np.full((8, 8, 3), 2.0, np.float32), "expected \\[0, 1\\]"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        ("does/not/exist.jpg", "image not found"),
    ],
)
def test_bad_images(tiny: SamCore, image, error):
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        tiny.predict(image, boxes=[0, 0, 5, 5])


def test_huge_image_refused_before_decoding(tiny: SamCore):
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10_001, 10_001, 3))
    with pytest.raises(ValueError, match="MP limit"):
        tiny.encode(huge)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(boxes=[[10, 10, 5, 50]]), "boxes: .*inverted"),
        (dict(boxes=[[10, 10, 50, 5000]]), "boxes: expected XYXY inside"),
        (dict(boxes=[[-50, 10, 50, 50]]), "boxes: expected XYXY inside"),
        (dict(boxes=[[np.nan, 10, 50, 50]]), "boxes: coordinates contain NaN"),
        (dict(points=[[[np.nan, 1.0]]], point_labels=[[1]]), "points: coordinates contain NaN"),
        (
            dict(points=[[[1.0, 1.0], [2.0, 2.0]]], point_labels=[[1]]),
            "point_labels: expected shape",
        ),
        (dict(points=[[[1.0, 1.0]]]), "point_labels: required"),
        (dict(points=[[[1.0, 1.0]]], point_labels=[[2]]), "point_labels: expected 1"),
        (dict(boxes=np.zeros((0, 4))), "boxes: empty"),
        (dict(), "prompts: empty"),
        (dict(mask_inputs=np.zeros((1, 64, 64))), "mask_inputs: expected"),
    ],
)
def test_bad_prompts(tiny: SamCore, kwargs, error):
    with pytest.raises(ValueError, match=error):
        tiny.predict(_random_image(0, 100, 100), **kwargs)


def test_grayscale_and_rgba_are_converted(tiny: SamCore):
    rgb = _random_image(0, 64, 64)
    gray = rgb[:, :, 0]
    rgba = np.concatenate([rgb, np.full((64, 64, 1), 255, np.uint8)], axis=2)
    assert tiny.predict(gray, boxes=[0, 0, 30, 30]).mask.shape == (1, 64, 64)
    a = tiny.predict(rgba, boxes=[0, 0, 30, 30])
    b = tiny.predict(rgb, boxes=[0, 0, 30, 30])
    np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_runs(dtype: str):
    torch.manual_seed(0)
    core = SamCore("sam-vit-tiny-test", dtype=dtype)
    assert core.dtype == getattr(torch, dtype)
    dets = core.predict(_random_image(0, 64, 64), boxes=[0, 0, 30, 30])
    assert dets.mask.dtype == bool and np.isfinite(dets.confidence).all()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(device="tpu"), "device: expected"),
        (dict(dtype="int4"), "dtype: expected"),
        (dict(dtype="float32", autocast=True), "autocast: needs dtype"),
        (dict(dtype="int8", autocast=True), "autocast: not available"),
        (dict(chunk_size=0), "chunk_size: expected a positive integer"),
    ],
)
def test_bad_core_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        SamCore("sam-vit-tiny-test", **kwargs)


def test_int8_quantizes_the_encoder_only_and_agrees_with_float32():
    """Opt-in dynamic int8: the encoder's linear layers are int8, the decoder stays float32,
    and the masks stay close to float32's on the same weights (never bit-equal)."""
    torch.manual_seed(0)
    sam = create_model("sam-vit-tiny-test", pretrained=False)
    ref = SamCore(sam)
    q = SamCore(copy.deepcopy(sam), dtype="int8")
    assert q.precision.int8 and q.precision.name == "int8" and ref.precision.name == "float32"
    encoder = q.backend.model.image_encoder
    assert isinstance(encoder.blocks[0].attn.qkv, torch.ao.nn.quantized.dynamic.Linear)
    decoder = q.backend.model.mask_decoder
    assert isinstance(decoder.transformer.layers[0].self_attn.q_proj, torch.nn.Linear)
    image = _random_image(0, 120, 160)
    boxes = Prompts.from_boxes(_boxes(4) / 4)
    a, b = ref.predict(image, boxes), q.predict(image, boxes)
    assert min(_mask_iou(x, y) for x, y in zip(a.mask, b.mask)) >= 0.9
    np.testing.assert_allclose(a.confidence, b.confidence, atol=0.05)


def test_int8_is_cpu_only():
    with pytest.raises(ValueError, match="runs on the CPU only"):
        resolve_precision("int8", torch.device("cuda"))


def test_autocast_is_scoped_to_the_core_calls():
    """bf16 autocast (the CUDA default, forced here on CPU): weights stay float32, the encoder
    runs in bfloat16 inside the call, and autocast is off again afterwards."""
    torch.manual_seed(0)
    core = SamCore("sam-vit-tiny-test", pretrained=False, dtype="bfloat16", autocast=True)
    assert core.precision.autocast == torch.bfloat16 and core.dtype == torch.bfloat16
    assert core.backend.dtype == torch.float32
    emb = core.encode(_random_image(0, 64, 64))
    assert emb.embedding.dtype in (torch.bfloat16, torch.float32)
    dets = core.predict(emb, boxes=[0, 0, 30, 30])
    assert dets.mask.dtype == bool and np.isfinite(dets.confidence).all()
    assert not torch.is_autocast_enabled("cpu")


def test_precision_defaults_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("bf16", cpu) == Precision(weights=torch.bfloat16)
    assert resolve_precision("fp16", cuda) == Precision(autocast=torch.float16)
    assert resolve_precision(None, cuda) == Precision()


def test_compile_wraps_the_encoder_only(monkeypatch):
    """compile=True hands the image encoder to torch.compile once (the module is kept)."""
    calls = []

    def fake_compile(module, **options):
        calls.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.manual_seed(0)
    core = SamCore("sam-vit-tiny-test", pretrained=False, compile=True)
    assert calls == [core.backend.model.image_encoder]
    assert core.predict(_random_image(0, 64, 64), boxes=[0, 0, 30, 30]).mask.shape == (1, 64, 64)


@pytest.mark.parametrize(("name", "cpu_chunk"), [("sam-vit-b", 2), ("sam-vit-tiny-test", 16)])
def test_default_chunk_follows_the_decoder_size(name: str, cpu_chunk: int):
    """2 prompts per call at SAM's 64x64x256 on CPU, more for narrower decoders; 64 on CUDA."""
    from textseg.sam.core import _default_chunk

    channels = 256 if name == "sam-vit-b" else 32
    assert _default_chunk(torch.device("cpu"), 4096, channels) == cpu_chunk
    assert _default_chunk(torch.device("cuda"), 4096, 256) == 64
    if name == "sam-vit-tiny-test":
        assert SamCore(name, pretrained=False).chunk_size == cpu_chunk


def test_cuda_requested_without_cuda_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        SamCore("sam-vit-tiny-test", device="cuda")


def test_nothing_global_changed_by_import_and_inference(tiny: SamCore):
    grad = torch.is_grad_enabled()
    threads = torch.get_num_threads()
    tiny.predict(_random_image(0, 64, 64), boxes=[0, 0, 30, 30])
    assert torch.is_grad_enabled() == grad and torch.get_num_threads() == threads
    assert not torch.is_autocast_enabled()


@pytest.mark.parametrize("name", ["sam-vit-tiny-test", "mobile-sam-tiny-test", "hf-sam-tiny-test"])
def test_every_backend_family_runs_and_reloads(name: str, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, pretrained=False)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    reloaded = create_model(name, checkpoint=path)
    image = _random_image(0, 96, 128)
    a = SamCore(model).predict(image, Prompts.from_boxes(_boxes(2) / 5))
    b = SamCore(reloaded).predict(image, Prompts.from_boxes(_boxes(2) / 5))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.confidence, b.confidence)


def test_token_embeddings_are_extra_sparse_tokens(tiny: SamCore):
    """A token prompt equal to a box's own tokens reproduces the box prompt."""
    image = _random_image(0, 120, 160)
    box = np.array([[20.0, 30.0, 90.0, 100.0]])
    ref = tiny.predict(image, Prompts.from_boxes(box), multimask_output=False)
    emb = tiny.encode(image)
    model = tiny.backend.model
    with torch.inference_mode():
        scaled = torch.from_numpy(box * (1024 / 160)).float()
        sparse, _ = model.prompt_encoder(points=None, boxes=scaled, masks=None)
    tokens = Prompts(embeddings=sparse.numpy())
    out = tiny.predict(emb, tokens, multimask_output=False)
    np.testing.assert_array_equal(out.mask, ref.mask)
    both = tiny.predict(emb, Prompts(boxes=box, embeddings=np.zeros((1, 1, 32), np.float32)))
    assert both.mask.shape == ref.mask.shape
    with pytest.raises(ValueError, match="embeddings: expected"):
        Prompts(embeddings=np.zeros((1, 1, 1, 32)))


def test_automatic_generator_matches_official_vit_b(vit_b):
    """Same settings, small grid: the same masks as SamAutomaticMaskGenerator."""
    from segment_anything import SamAutomaticMaskGenerator

    from textseg.sam import AutomaticMaskGenerator

    core, predictor, image = vit_b
    settings = dict(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95
    )
    official = SamAutomaticMaskGenerator(predictor.model, **settings)
    # Reuse the fixture's encoding (the generator would re-encode the same full-image crop).
    official.predictor = predictor
    predictor.set_image = lambda *a, **k: None
    predictor.reset_image = lambda: None
    ref = official.generate(image)
    ours = AutomaticMaskGenerator(core, **settings).generate(image)
    assert len(ours) == len(ref) > 0
    ref_masks = [r["segmentation"] for r in ref]
    for r in ref_masks:
        assert max(_mask_iou(r, m) for m in ours.mask) >= 0.99
    ref_iou = sorted(r["predicted_iou"] for r in ref)
    np.testing.assert_allclose(sorted(ours.confidence), ref_iou, atol=1e-4)
