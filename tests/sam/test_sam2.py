"""SAM 2 family: registry entries, official checkpoint conversion, the image backend.

Parity is shown against the official ``sam2`` package on identical seeded random weights: the
official model is built with the tiny entry's sizes, its state dict is saved as an official
``.pt`` (``{"model": state_dict}``) and loaded through the real path (``SamCore(name,
checkpoint=...)``: registry converter, strict load).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textseg._hub import StateDictError, create_model
from textseg._registry import get_model_cfg, list_models
from textseg.sam import SamCore
from textseg.sam.backends.sam2 import Sam2Backend, pack_features, unpack_features
from textseg.sam.modeling.convert_sam2 import is_official_sam2, official_to_hf_state_dict
from textseg.sam.modeling.sam2 import build_official_sam2

sam2_pkg = pytest.importorskip("sam2", reason="the official sam2 package is the reference")

PUBLISHED = [
    f"{prefix}-hiera-{size}"
    for prefix in ("sam2", "sam2.1")
    for size in ("tiny", "small", "base-plus", "large")
]


def _image_predictor(model: torch.nn.Module):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    # The official predictor hard-codes the feature sizes of a 1024 input.
    size = model.image_size
    predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    return predictor


def _official(name: str, seed: int = 0, video: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_official_sam2(get_model_cfg(name), video=video)
    with torch.no_grad():
        # Random weights predict "no object" everywhere; a positive object-score bias makes
        # the masks non-trivial on both sides alike.
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    return model


@pytest.fixture(scope="module")
def official_pt(tmp_path_factory: pytest.TempPathFactory):
    model = _official("sam2.1-tiny-test")
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_tiny_test.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, path


@pytest.fixture(scope="module")
def core(official_pt) -> SamCore:
    _, path = official_pt
    return SamCore("sam2.1-tiny-test", checkpoint=str(path))


# ---------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", PUBLISHED)
def test_published_entries(name: str) -> None:
    cfg = get_model_cfg(name, "sam")
    prefix, size = name.split("-hiera-")
    file = f"{prefix}_hiera_{size.replace('-', '_')}.pt"
    assert cfg.status == "published"
    assert cfg.weights.hf_repo == f"facebook/{prefix}-hiera-{size}"
    assert cfg.weights.hf_files == (file,)
    assert cfg.license == "Apache-2.0"
    assert cfg.input_size == 1024
    assert cfg.test_variant == f"{prefix}-tiny-test"
    assert get_model_cfg(cfg.test_variant).arch["version"] == cfg.arch["version"]


def test_listed() -> None:
    assert set(PUBLISHED) <= set(list_models("sam"))


@pytest.mark.parametrize("size", ["tiny", "small", "base-plus", "large"])
def test_official_config_matches_published_yaml(size: str) -> None:
    """Our sizes rebuild the published configs: the official yaml's trunk equals ours."""
    from pathlib import Path

    import yaml

    root = Path(sam2_pkg.__file__).parent / "configs" / "sam2.1"
    short = {"tiny": "t", "small": "s", "base-plus": "b+", "large": "l"}[size]
    published = yaml.safe_load((root / f"sam2.1_hiera_{short}.yaml").read_text())["model"]
    from textseg.sam.modeling.sam2 import official_sam2_config

    ours = official_sam2_config(get_model_cfg(f"sam2.1-hiera-{size}"))
    trunk = published["image_encoder"]["trunk"]
    for key, value in trunk.items():
        if key != "_target_":
            assert list(np.ravel(ours["image_encoder"]["trunk"][key])) == list(np.ravel(value))
    neck = published["image_encoder"]["neck"]
    assert ours["image_encoder"]["neck"]["backbone_channel_list"] == neck["backbone_channel_list"]
    for key in ("num_maskmem", "image_size", "add_tpos_enc_to_obj_ptrs", "no_obj_embed_spatial"):
        assert ours[key] == published[key], key


# ---------------------------------------------------------------------------------- convert
def test_conversion_is_strict_and_complete(official_pt) -> None:
    model, path = official_pt
    converted = official_to_hf_state_dict(model.state_dict())
    hf = create_model("sam2.1-tiny-test", pretrained=False)
    assert set(converted) == set(hf.state_dict())
    assert is_official_sam2(model.state_dict()) and not is_official_sam2(converted)
    loaded = create_model("sam2.1-tiny-test", checkpoint=path)
    for key, value in converted.items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_transformers_layout_loads_too(tmp_path) -> None:
    from safetensors.torch import save_file

    hf = create_model("sam2-tiny-test", pretrained=False)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    again = create_model("sam2-tiny-test", checkpoint=tmp_path / "model.safetensors")
    for key, value in hf.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_version_mismatch_is_reported(official_pt) -> None:
    """A SAM 2.1 checkpoint into the SAM 2 architecture names the extra keys."""
    _, path = official_pt
    with pytest.raises(StateDictError, match=r"unexpected keys: .*occlusion_spatial_embedding"):
        create_model("sam2-tiny-test", checkpoint=path)


# ---------------------------------------------------------------------------------- backend
def test_pack_roundtrip() -> None:
    levels = [torch.randn(2, 16, 32, 32), torch.randn(2, 32, 16, 16), torch.randn(2, 128, 8, 8)]
    packed = pack_features(levels)
    assert packed.shape == (2, 512, 8, 8)
    for a, b in zip(unpack_features(packed), levels):
        assert torch.equal(a, b)
    one = pack_features([x[:1] for x in levels])
    assert unpack_features(one)[2].data_ptr() == one.data_ptr()  # a view, no copy
    with pytest.raises(ValueError, match="expected levels"):
        pack_features([levels[1], levels[0], levels[2]])


def test_backend_matches_official_image_predictor(official_pt, core: SamCore) -> None:
    model, _ = official_pt
    predictor = _image_predictor(model)
    image = np.random.default_rng(1).integers(0, 255, (180, 240, 3), dtype=np.uint8)
    with torch.inference_mode():
        predictor.set_image(image)
        pixels = predictor._transforms(image)[None]
        backend = core.backend
        assert isinstance(backend, Sam2Backend)
        s0, s1, top = unpack_features(backend.encode(pixels))
        features = predictor._features
        top = top + backend.model.no_memory_embedding.view(1, -1, 1, 1)
        torch.testing.assert_close(top, features["image_embed"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s0, features["high_res_feats"][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s1, features["high_res_feats"][1], atol=1e-5, rtol=1e-5)
        packed = pack_features([s0, s1, top - backend.model.no_memory_embedding.view(1, -1, 1, 1)])
        cases = [
            dict(points=[[60.0, 70.0]], labels=[1], box=None, multi=True),
            dict(points=[[60.0, 70.0], [120.0, 30.0]], labels=[1, 0], box=None, multi=False),
            dict(points=None, labels=None, box=[20.0, 30.0, 160.0, 150.0], multi=False),
            dict(points=[[90.0, 90.0]], labels=[1], box=[20.0, 30.0, 160.0, 150.0], multi=False),
        ]
        for case in cases:
            pts, labs, box = case["points"], case["labels"], case["box"]
            _, coords, labels, boxes = predictor._prep_prompts(pts, labs, box, None, True)
            _, ref_iou, ref_low = predictor._predict(
                coords, labels, boxes, None, multimask_output=case["multi"], return_logits=True
            )
            low, iou = backend.decode(
                packed,
                None if pts is None else coords,
                None if pts is None else labels,
                None if box is None else boxes.reshape(-1, 4),
                None,
                case["multi"],
            )
            torch.testing.assert_close(low, ref_low, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=1e-5)
        # A mask-only prompt: no sparse token, as the official predictor.
        mask = ref_low[:, :1]
        _, ref_iou, ref_low = predictor._predict(None, None, None, mask, False, True)
        low, iou = backend.decode(packed, None, None, None, mask, False)
        torch.testing.assert_close(low, ref_low, atol=1e-4, rtol=1e-4)


def test_core_masks_agree_with_official(official_pt, core: SamCore) -> None:
    """Through SamCore (its own resizing and upsampling): the same masks up to resampling."""
    model, _ = official_pt
    predictor = _image_predictor(model)
    image = np.random.default_rng(2).integers(0, 255, (150, 260, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 120, 140], [100, 10, 250, 100]], np.float32)
    with torch.inference_mode():
        predictor.set_image(image)
        ref, _, _ = predictor.predict(box=boxes, multimask_output=False)
    dets = core.predict(image, boxes=boxes)
    assert dets.mask.shape == (2, 150, 260)
    for ours, theirs in zip(dets.mask, ref[:, 0] > 0):
        iou = (ours & theirs).sum() / max(1, (ours | theirs).sum())
        assert iou > 0.9


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def test_core_is_the_official_image_predictor_end_to_end(
    official_pt, core: SamCore, data_dir, tmp_path
) -> None:
    """Image bytes in, masks out: SamCore's SAM 2 pre-processing (SAM2Transforms: float
    tensor, antialiased bilinear resize) and upsampling (one bilinear step to the image) are
    the official predictor's."""
    model, _ = official_pt
    _image_parity(model, core, data_dir, tmp_path)


@pytest.mark.slow
def test_published_size_is_the_official_image_predictor(data_dir, tmp_path) -> None:
    model = _official("sam2.1-hiera-tiny")
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    _image_parity(model, SamCore("sam2.1-hiera-tiny", checkpoint=str(path)), data_dir, tmp_path)


def _image_parity(model, core: SamCore, data_dir, tmp_path) -> None:
    from PIL import Image

    predictor = _image_predictor(model)
    path = tmp_path / "photo.jpg"
    Image.open(data_dir / "demo" / "dog.jpg").convert("RGB").resize((333, 250)).save(path)
    image = np.array(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    boxes = np.array([[20, 30, 200, 220], [150, 10, 320, 120], [5, 5, 330, 245]], np.float32)
    points = np.array([[[100.0, 120.0]], [[250.0, 60.0]], [[30.0, 200.0]]], np.float32)
    with torch.inference_mode():
        predictor.set_image(image)
        reference = predictor._transforms(image)[None]
        by_box, _, _ = predictor.predict(box=boxes, multimask_output=False)
        by_point = [
            predictor.predict(point_coords=p, point_labels=np.ones(1), multimask_output=True)[0]
            for p in points
        ]
    pixels, size = core.preprocess(image)
    assert size == (core.image_size, core.image_size)
    torch.testing.assert_close(pixels, reference, atol=1e-6, rtol=0)

    dets = core.predict(str(path), boxes=boxes, multimask_output=False)
    ious = [_mask_iou(ours, theirs > 0) for ours, theirs in zip(dets.mask, by_box[:, 0])]
    clicks = core.predict(
        str(path),
        points=points,
        point_labels=np.ones((3, 1)),
        multimask_output=True,
        return_all=True,
    )
    theirs = np.concatenate(by_point) > 0
    assert clicks.mask.shape == (9, h, w) and theirs.shape == (9, h, w)
    ious += [_mask_iou(a, b) for a, b in zip(clicks.mask, theirs)]
    print(f"{core.name} image parity: min mask IoU {min(ious):.6f} over {len(ious)} masks")
    assert sum(m.sum() for m in dets.mask) > 0
    assert min(ious) >= 0.999


# ------------------------------------------------------------------------------------ video
FRAMES = 6


def _frames(data_dir, folder, size=(240, 180)) -> list[np.ndarray]:
    """A pan over a photo, saved as JPEG frames; returns them decoded as the official loader
    decodes them (PIL, RGB)."""
    from PIL import Image

    photo = Image.open(data_dir / "demo" / "dog.jpg").convert("RGB")
    photo = photo.resize((size[0] + 8 * FRAMES, size[1]))
    folder.mkdir()
    out = []
    for t in range(FRAMES):
        path = folder / f"{t:05d}.jpg"
        photo.crop((8 * t, 0, 8 * t + size[0], size[1])).save(path, quality=95)
        out.append(np.array(Image.open(path).convert("RGB")))
    return out


@pytest.mark.parametrize(
    "name", ["sam2.1-tiny-test", pytest.param("sam2.1-hiera-tiny", marks=pytest.mark.slow)]
)
def test_video_masks_match_the_official_video_predictor(name, data_dir, tmp_path) -> None:
    """JPEG frames in, masks out: the propagator pre-processes frames as the official video
    loader (``SamCore.preprocess(image, video=True)``: PIL's bicubic resize of the uint8
    frame) and upsamples the logits in one bilinear step."""
    from textseg.video.propagator import Sam2Propagator

    official = _official(name, video=True)
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
    ious = [_mask_iou(ours[t], theirs[t]) for t in range(FRAMES)]
    print(f"{name} video parity: min mask IoU {min(ious):.6f} over {FRAMES} frames")
    assert all(theirs[t].any() for t in range(FRAMES))
    assert min(ious) >= 0.999


def test_core_stretches_the_image(core: SamCore) -> None:
    assert core.backend.resize_mode == "stretch"
    assert core.input_size(100, 400) == (256, 256)
    x, size = core.preprocess(np.zeros((100, 400, 3), np.uint8))
    assert size == (256, 256) and tuple(x.shape) == (1, 3, 256, 256)


def test_backend_rejects_other_models() -> None:
    with pytest.raises(TypeError, match="expected a transformers SAM 2 model"):
        Sam2Backend(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------- EdgeTAM
def test_edgetam_entry_and_backend():
    cfg = get_model_cfg("edgetam", "sam")
    assert cfg.weights.hf_repo == "yonigozlan/EdgeTAM-hf"
    assert cfg.weights.hf_files == ("model.safetensors",) and cfg.license == "Apache-2.0"
    assert get_model_cfg(cfg.test_variant).arch["family"] == "edgetam"
    torch.manual_seed(0)
    core = SamCore("edgetam-tiny-test")
    assert type(core.backend.model).__name__ == "EdgeTamVideoModel"
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    dets = core.predict(image, boxes=[[10, 10, 80, 70]])
    assert dets.mask.shape == (1, 90, 120)


#: transformers -> official EdgeTAM names (the inverse of textseg's converter, written out).
_TO_OFFICIAL = (
    (r"^vision_encoder\.backbone\.timm_model\.", "image_encoder.trunk.body."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"\.o_proj\.", ".out_proj."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.", "memory_encoder.fuser."),
    (r"\.depthwise_conv\.", ".dwconv."),
    (r"\.pointwise_conv(\d)\.", r".pwconv\1."),
    (r"\.scale$", ".gamma"),
    (r"\.mlp\.up_proj\.", ".linear1."),
    (r"\.mlp\.down_proj\.", ".linear2."),
    (r"\.layer_norm(\d?)\.", r".norm\1."),
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
)
_PERCEIVER_TO_OFFICIAL = (
    (r"\.latents_1d$", ".latents"),
    (r"\.layer_norm_input\.", ".attn.norm_x."),
    (r"\.layer_norm_latents\.", ".attn.norm_latents."),
    (r"\.layer_norm_self\.", ".self_attn.norm."),
    (r"\.cross_attention\.", ".attn."),
    (r"\.self_attention\.", ".self_attn."),
    (r"\.q_proj\.", ".to_q."),
    (r"\.o_proj\.", ".to_out."),
    (r"\.self_mlp\.layer_norm\.", ".self_ff.0."),
    (r"\.self_mlp\.up_proj\.", ".self_ff.1."),
    (r"\.self_mlp\.down_proj\.", ".self_ff.3."),
    (r"\.mlp\.layer_norm\.", ".ff.0."),
    (r"\.mlp\.up_proj\.", ".ff.1."),
    (r"\.mlp\.down_proj\.", ".ff.3."),
    (r"^spatial_perceiver\.layer_norm\.", "spatial_perceiver.norm."),
)


def _official_edgetam(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official-layout EdgeTAM state dict (``edgetam.pt``'s ``"model"``) from a
    transformers one."""
    import re

    out: dict[str, torch.Tensor] = {}
    mlp = re.compile(r"^(.*)\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")
    depths: dict[str, int] = {}
    for key in hf:
        if (m := mlp.match(key)) and m.group(3) is not None:
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(3)) + 1)
    down = re.compile(
        r"^memory_encoder\.mask_downsampler\.(?:layers\.(\d+)\.(conv|layer_norm)|final_conv)\."
    )
    n_down = 1 + max(int(m.group(1)) for k in hf if (m := down.match(k)) and m.group(1))
    for key, value in hf.items():
        if key == "shared_image_embedding.positional_embedding":
            continue
        if key == "prompt_encoder.point_embed.weight":
            for i, row in enumerate(value):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = row[None].clone()
            continue
        if key == "prompt_encoder.shared_embedding.positional_embedding":
            out["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = value
            continue
        if key.startswith("spatial_perceiver."):
            new = key
            for pattern, repl in _PERCEIVER_TO_OFFICIAL:
                new = re.sub(pattern, repl, new)
            if ".k_proj." in new:
                v = hf[key.replace(".k_proj.", ".v_proj.")]
                out[new.replace(".k_proj.", ".to_kv.")] = torch.cat([value, v])
            elif ".v_proj." not in new:
                out[new] = value
            continue
        new = key
        if (m := mlp.match(key)) and not key.startswith("spatial_perceiver."):
            prefix, part, index, kind = m.groups()
            depth = depths.get(prefix, 0) + 2
            official = {"proj_in": 0, "proj_out": depth - 1}.get(part)
            official = int(index) + 1 if official is None else official
            if prefix.endswith(("mlp", "_head", "proj")) or ".output_hypernetworks_mlps." in key:
                new = f"{prefix}.layers.{official}.{kind}"
        if m := down.match(new):
            layer = m.group(1)
            index = 3 * n_down if layer is None else 3 * int(layer) + (m.group(2) != "conv")
            new = down.sub(f"memory_encoder.mask_downsampler.encoder.{index}.", new)
        for pattern, repl in _TO_OFFICIAL:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def _assert_same(model, reference):
    state = model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(state[key], value), key


def test_edgetam_loads_the_transformers_layout(tmp_path):
    """transformers' own EdgeTAM file (save_pretrained: model.safetensors) through the
    registry; its spatial_perceiver.* keys are transformers' too."""
    torch.manual_seed(0)
    hf = create_model("edgetam-tiny-test", pretrained=False)
    hf.save_pretrained(tmp_path / "EdgeTAM-hf")
    _assert_same(create_model("edgetam-tiny-test", checkpoint=tmp_path / "EdgeTAM-hf"), hf)
    path = tmp_path / "EdgeTAM-hf" / "model.safetensors"
    _assert_same(create_model("edgetam-tiny-test", checkpoint=path), hf)


def test_edgetam_loads_the_official_layout(tmp_path):
    torch.manual_seed(0)
    hf = create_model("edgetam-tiny-test", pretrained=False)
    state = hf.state_dict()
    # One matrix under two names in every real checkpoint (random init draws two).
    state["shared_image_embedding.positional_embedding"].copy_(
        state["prompt_encoder.shared_embedding.positional_embedding"]
    )
    official = _official_edgetam(state)
    assert any(k.startswith("image_encoder.trunk.body.") for k in official)
    assert any(".attn.to_kv." in k for k in official)
    assert not any(k.startswith(("vision_encoder.", "mask_decoder.")) for k in official)
    torch.save({"model": official}, tmp_path / "edgetam.pt")
    _assert_same(create_model("edgetam-tiny-test", checkpoint=tmp_path / "edgetam.pt"), hf)
