"""ClipTokenPrompter: CLIP text -> adapter -> sparse prompt tokens for SAM's decoder."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import open_clip
import pytest
import torch

from textseg._hub import create_model
from textseg._registry import get_model_cfg, list_models
from textseg.clip import ClipEncoder, TextEmbedder
from textseg.pipelines import TextSegmenter, decode_prompts
from textseg.prompters import (
    ClipPointPrompter,
    ClipTokenPrompter,
    ExperimentalWarning,
    Prompter,
    TextPromptAdapter,
    text_adapter_for,
)
from textseg.sam import SamCore
from textseg.sam.modeling.sam import build_sam_vit
from textseg.train.text_prompt import decode_tokens

TINY = "sam-vit-tiny+clip-vit-tiny-text-adapter-tiny-test"


@pytest.fixture
def prompter(oc_clip: ClipEncoder) -> ClipTokenPrompter:
    torch.manual_seed(1)
    return ClipTokenPrompter(TINY, clip=oc_clip)


@pytest.fixture
def decoder_calls(core: SamCore, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What reaches the SAM backend's decoder, call by call."""
    calls: list[dict] = []
    original = core.backend.decode

    def spy(embedding, points, point_labels, boxes, mask_inputs, multimask_output, **kwargs):
        calls.append(dict(points=points, boxes=boxes, multimask=multimask_output, **kwargs))
        return original(
            embedding, points, point_labels, boxes, mask_inputs, multimask_output, **kwargs
        )

    monkeypatch.setattr(core.backend, "decode", spy)
    return calls


def _segment(prompter, core, image, classes):
    """The pipeline's decode path for one prompter's prompts."""
    return decode_prompts(core, image, prompter.prompts(image, classes))


def _quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return func(*args, **kwargs)


def test_is_a_prompter(prompter: ClipTokenPrompter) -> None:
    assert isinstance(prompter, Prompter)


def test_tokens_reach_the_decoder(
    prompter: ClipTokenPrompter, core: SamCore, coco_image: np.ndarray, decoder_calls: list[dict]
) -> None:
    classes = ["dog", "cat", "traffic light"]
    cp = _quiet(prompter.prompts, coco_image, classes)
    k, dim = prompter.adapter.num_tokens, prompter.adapter.prompt_dim
    assert cp.prompts.embeddings.shape == (3, k, dim)
    np.testing.assert_array_equal(cp.prompts.embeddings, prompter.tokens(classes))
    assert dim == core.backend.model.prompt_encoder.embed_dim  # SAM's token size
    assert cp.prompts.points is None and cp.prompts.boxes is None
    np.testing.assert_array_equal(cp.class_id, [0, 1, 2])
    assert np.isnan(cp.confidence).all()
    assert cp.multimask is False

    dets = decode_prompts(core, coco_image, cp)
    sent = torch.cat([c["embeddings"] for c in decoder_calls])
    assert sent.shape == (3, k, dim)
    np.testing.assert_array_equal(sent.numpy(), cp.prompts.embeddings)
    assert all(c["points"] is None and c["boxes"] is None for c in decoder_calls)
    assert not any(c["multimask"] for c in decoder_calls)
    assert dets.mask.shape == (3, *coco_image.shape[:2])


def test_256_d_tokens_reach_a_published_size_decoder(
    oc_clip: ClipEncoder, coco_image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SAM's real prompt size (256-d tokens, the ViT-B/L/H decoder), on a tiny encoder."""
    tiny = get_model_cfg("sam-vit-tiny-test", "sam")
    decoder = dict(
        prompt_embed_dim=256, decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256
    )
    torch.manual_seed(0)
    sam = build_sam_vit(dataclasses.replace(tiny, arch={**tiny.arch, **decoder}))
    core = SamCore(sam)
    prompter = ClipTokenPrompter(TextPromptAdapter(oc_clip.embed_dim, 256), clip=oc_clip)
    sent: list[torch.Tensor] = []
    original = core.backend.decode

    def spy(*args, embeddings=None, **kwargs):
        sent.append(embeddings)
        return original(*args, embeddings=embeddings, **kwargs)

    monkeypatch.setattr(core.backend, "decode", spy)
    dets = _quiet(_segment, prompter, core, coco_image, ["dog", "cat", "person"])
    tokens = torch.cat(sent)
    assert tokens.shape == (3, 2, 256)
    np.testing.assert_array_equal(tokens.numpy(), prompter.tokens(["dog", "cat", "person"]))
    assert dets.mask.shape == (3, 480, 640)
    np.testing.assert_array_equal(dets.class_id, [0, 1, 2])


def test_tokens_are_the_adapter_of_the_class_text_embedding(
    prompter: ClipTokenPrompter, oc_clip: ClipEncoder
) -> None:
    tokens = prompter.tokens(["dog", "cat"])
    text = TextEmbedder(oc_clip, prompter.templates, background=())(["dog", "cat"]).classes
    with torch.no_grad():
        expected = prompter.adapter(text).numpy()
    np.testing.assert_allclose(tokens, expected, rtol=0, atol=1e-6)
    assert not np.allclose(tokens[0], tokens[1])  # each class its own tokens


def test_core_decodes_tokens_as_the_training_loop_does(
    prompter: ClipTokenPrompter, core: SamCore, coco_image: np.ndarray
) -> None:
    """Inference (SamCore's fast decoder) and training (decode_tokens, the official decoder)
    must see the same function of the tokens, or a trained adapter would not transfer."""
    cp = _quiet(prompter.prompts, coco_image, ["dog", "cat"])
    low, _, emb = core.decode(coco_image, cp.prompts, multimask_output=False)
    with torch.no_grad():
        reference = decode_tokens(
            core.backend.model, emb.embedding.clone(), torch.from_numpy(cp.prompts.embeddings)
        )
    torch.testing.assert_close(low[:, 0], reference, rtol=0, atol=1e-4)


def test_warns_experimental_at_run_time(oc_clip: ClipEncoder, coco_image: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building it does not warn
        prompter = ClipTokenPrompter(TINY, clip=oc_clip)
    with pytest.warns(
        ExperimentalWarning,
        match=r"is experimental: SAM's text prompt needs a "
        r"trained text adapter and no trained weights are published",
    ):
        prompter.prompts(coco_image, ["dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per prompter
        prompter.prompts(coco_image, ["dog"])


def test_end_to_end_into_sam(
    prompter: ClipTokenPrompter, core: SamCore, coco_image: np.ndarray, assert_detections
) -> None:
    with pytest.warns(ExperimentalWarning):
        result = TextSegmenter(prompter, core, dedup_iou=1.01, dedup_containment=None).segment(
            coco_image, ["dog", "cat"]
        )
    dets = result.detections
    dets = dets[np.argsort(dets.data["prompt_index"])]
    assert_detections(dets, coco_image, n=2)
    np.testing.assert_array_equal(dets.class_id, [0, 1])
    assert dets.data["class_name"].tolist() == ["dog", "cat"]
    np.testing.assert_array_equal(dets.data["prompt_index"], [0, 1])
    # Unscored text prompts: SAM's predicted IoU is the confidence.
    np.testing.assert_array_equal(dets.confidence, dets.data["sam_iou"])


def test_text_with_given_points(
    prompter: ClipTokenPrompter, core: SamCore, coco_image: np.ndarray, decoder_calls: list[dict]
) -> None:
    points = np.array([[[100.0, 200.0], [400.0, 50.0]], [[320.0, 240.0], [0.0, 0.0]]])
    labels = np.array([[1, 0], [1, -1]])
    cp = _quiet(prompter.prompts, coco_image, ["dog", "cat"], points=points, point_labels=labels)
    np.testing.assert_array_equal(cp.prompts.points, points.astype(np.float32))
    assert cp.prompts.embeddings.shape[:2] == (2, prompter.adapter.num_tokens)
    assert cp.multimask == "auto"
    dets = decode_prompts(core, coco_image, cp)
    assert dets.mask.shape == (2, 480, 640)
    np.testing.assert_array_equal(dets.class_id, [0, 1])
    assert all(c["points"] is not None and "embeddings" in c for c in decoder_calls)
    # The text tokens change the masks cut from the same points.
    plain = core.predict(coco_image, points=points, point_labels=labels, multimask_output=False)
    with_text = decode_prompts(core, coco_image, cp, multimask_output=False)
    assert not np.array_equal(plain.data["sam_iou"], with_text.data["sam_iou"])


def test_text_with_a_point_prompter(
    oc_clip: ClipEncoder, core: SamCore, coco_image: np.ndarray, assert_detections
) -> None:
    points = ClipPointPrompter(oc_clip, min_score=-math.inf, max_instances=2)
    prompter = ClipTokenPrompter(TINY, clip=oc_clip, point_prompter=points)
    found = points.prompts(coco_image, ["dog", "cat"])
    assert len(found) > 0
    cp = _quiet(prompter.prompts, coco_image, ["dog", "cat"])
    assert len(cp) == len(found)
    np.testing.assert_array_equal(cp.prompts.points, found.prompts.points)
    np.testing.assert_array_equal(cp.class_id, found.class_id)
    tokens = prompter.tokens(["dog", "cat"])
    np.testing.assert_array_equal(cp.prompts.embeddings, tokens[found.class_id])
    dets = _quiet(_segment, prompter, core, coco_image, ["dog", "cat"])
    assert_detections(dets, coco_image, n=len(found))
    np.testing.assert_array_equal(dets.class_id, found.class_id)


@pytest.mark.parametrize(
    "name", [n for n in list_models("text-prompt") if not n.endswith("-tiny-test")]
)
def test_published_pairs_map_clip_embeddings_to_256_d_sam_tokens(name: str) -> None:
    cfg = get_model_cfg(name, "text-prompt")
    sam_cfg = get_model_cfg(cfg.pairing["sam"], "sam")
    clip_cfg = get_model_cfg(cfg.pairing["clip"], "clip")
    assert sam_cfg.arch.get("prompt_embed_dim", 256) == cfg.arch["prompt_dim"] == 256
    clip_dim = open_clip.get_model_config(clip_cfg.arch["open_clip_config"])["embed_dim"]
    assert cfg.arch["clip_dim"] == clip_dim
    assert text_adapter_for(cfg.pairing["sam"], cfg.pairing["clip"]) in list_models("text-prompt")
    adapter = create_model(cfg, pretrained=False)
    assert isinstance(adapter, TextPromptAdapter)
    with torch.no_grad():
        tokens = adapter(torch.nn.functional.normalize(torch.randn(5, clip_dim), dim=-1))
    assert tokens.shape == (5, cfg.arch["num_tokens"], 256)


def test_bad_classes(prompter, coco_image, bad_classes, bad_error, bad_match) -> None:
    with pytest.raises(bad_error, match=bad_match):
        prompter.prompts(coco_image, bad_classes)


def test_name_too_long(prompter: ClipTokenPrompter, coco_image: np.ndarray, long_name) -> None:
    with pytest.raises(
        ValueError,
        match=r"^text 'cat cat .* is too long for the CLIP text "
        r"encoder: .* more than the model's 77 tokens",
    ):
        _quiet(prompter.prompts, coco_image, ["dog", long_name])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(adapter="sam-vit-b+clip-vit-b-32-text-adapter"),
            ValueError,
            r"^adapter 'sam-vit-b\+clip-vit-b-32-text-adapter' has no published trained weights; "
            r"train one with `textseg train-text-prompt --sam sam-vit-b --clip clip-vit-b-32 "
            r"\.\.\.` and pass checkpoint=PATH$",
        ),
        (
            dict(adapter="sam-vit-b-text-adapter"),
            ValueError,
            r"^unknown text-prompt model 'sam-vit-b-text-adapter'\. Did you mean",
        ),
        (
            dict(adapter=3),
            TypeError,
            r"^adapter: expected a registry name or a "
            r"TextPromptAdapter, got int$",
        ),
        (
            dict(adapter=TextPromptAdapter(16, 32), checkpoint="x.safetensors"),
            ValueError,
            r"^checkpoint: only with a registry name, not with a built adapter$",
        ),
        (
            dict(adapter=TextPromptAdapter(16, 32), clip=None),
            ValueError,
            r"^clip: required with a built adapter \(a ClipEncoder or a name\)$",
        ),
        (
            dict(adapter=TextPromptAdapter(512, 32)),
            ValueError,
            r"^clip: 'clip-vit-tiny-test' makes 16-d embeddings but the adapter takes 512-d; use "
            r"the CLIP model the adapter was trained with$",
        ),
        (
            dict(point_prompter="points"),
            TypeError,
            r"^point_prompter: expected a ClipPointPrompter, got str$",
        ),
        (
            dict(templates=["photo"]),
            ValueError,
            r"^templates\[0\] = 'photo': expected a str with exactly one",
        ),
        (
            dict(checkpoint="/nonexistent/adapter"),
            Exception,
            r"^checkpoint for 'sam-vit-tiny\+clip-vit-tiny-text-adapter-tiny-test' not found: "
            r"/nonexistent/adapter$",
        ),
    ],
)
def test_bad_settings(
    oc_clip: ClipEncoder, kwargs: dict, error: type[Exception], match: str
) -> None:
    kwargs = {"adapter": TINY, "clip": oc_clip, **kwargs}
    with pytest.raises(error, match=match):
        ClipTokenPrompter(kwargs.pop("adapter"), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(points=np.zeros((1, 1, 2))),
            r"^point_labels: required with points \(1 fg, 0 bg, -1 padding\)$",
        ),
        (dict(point_labels=np.ones((2, 1))), r"^point_labels: given without points$"),
        (
            dict(points=np.zeros((1, 1, 2)), point_labels=np.ones((1, 1))),
            r"^points: expected \(2, P, 2\), one row of points per class, got \(1, 1, 2\)$",
        ),
        (
            dict(points=np.full((2, 1, 2), 900.0), point_labels=np.ones((2, 1))),
            r"^points: expected XY inside the 640x480 image, got \[900.0, 900.0\]$",
        ),
    ],
)
def test_bad_points(
    prompter: ClipTokenPrompter, coco_image: np.ndarray, kwargs: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _quiet(prompter.prompts, coco_image, ["dog", "cat"], **kwargs)


def test_points_and_a_point_prompter_together_are_refused(
    oc_clip: ClipEncoder, coco_image: np.ndarray
) -> None:
    prompter = ClipTokenPrompter(TINY, clip=oc_clip, point_prompter=ClipPointPrompter(oc_clip))
    with pytest.raises(ValueError, match=r"^points: give either points or a point_prompter"):
        _quiet(
            prompter.prompts,
            coco_image,
            ["dog"],
            points=np.zeros((1, 1, 2)),
            point_labels=np.ones((1, 1)),
        )


def test_a_sam_that_takes_no_tokens_is_refused(
    prompter: ClipTokenPrompter, coco_image: np.ndarray
) -> None:
    hf_core = SamCore("hf-sam-tiny-test")
    with pytest.raises(ValueError, match=r"^core: token prompts need a segment_anything SAM"):
        TextSegmenter(prompter, hf_core)


def test_adapter_input_check() -> None:
    adapter = TextPromptAdapter(16, 32, num_tokens=3, hidden_dim=8)
    assert adapter(torch.zeros(4, 16)).shape == (4, 3, 32)
    with pytest.raises(
        ValueError,
        match=r"^embeddings: expected \(B, 16\) CLIP embeddings, "
        r"got \(4, 8\)$",
    ):
        adapter(torch.zeros(4, 8))
    with pytest.raises(ValueError, match=r"^num_tokens: expected a positive int, got 0$"):
        TextPromptAdapter(16, 32, num_tokens=0)
