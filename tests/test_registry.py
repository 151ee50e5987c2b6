"""The model registry: names, tasks, lookup errors."""

from __future__ import annotations

import pytest
import torch

from textseg._registry import get_model_cfg, list_models, register_model

SAM_NAMES = [
    "sam-vit-b",
    "sam-vit-l",
    "sam-vit-h",
    "mobile-sam",
    "hf-sam-vit-base",
    "hf-sam-vit-large",
    "hf-sam-vit-huge",
    "sam-vit-tiny-test",
    "mobile-sam-tiny-test",
    "hf-sam-tiny-test",
]


@pytest.mark.parametrize("name", SAM_NAMES)
def test_sam_models_are_registered(name: str):
    cfg = get_model_cfg(name, task="sam")
    assert cfg.input_size == 1024
    if name.endswith("-tiny-test"):
        assert cfg.is_test
    else:
        assert cfg.weights is not None and cfg.weights.license != "unknown"


@pytest.mark.parametrize(
    ("name", "sha"),
    [
        ("sam-vit-b", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        ("sam-vit-l", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        ("sam-vit-h", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    ],
)
def test_published_checksums(name: str, sha: str):
    assert get_model_cfg(name).weights.sha256 == sha


def test_every_architecture_has_a_test_variant():
    names = list_models()
    for family in ("sam-vit", "mobile-sam", "hf-sam"):
        assert any(n.startswith(family) and n.endswith("-tiny-test") for n in names), family


def test_unknown_name_lists_valid_names_and_closest_match():
    with pytest.raises(ValueError) as info:
        get_model_cfg("sam-vit-bb", task="sam")
    message = str(info.value)
    assert "Did you mean 'sam-vit-b'?" in message and "mobile-sam" in message


def test_task_filter():
    assert set(list_models("sam")) >= set(SAM_NAMES)
    with pytest.raises(ValueError, match="unknown sam model"):
        get_model_cfg("clip-vit-tiny-test", task="sam")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("sam-vit-b", task="sam")(lambda cfg: None)


def test_every_model_has_a_tiny_variant_of_its_task():
    from textseg._registry import test_variant

    for name in list_models():
        cfg = get_model_cfg(name)
        tiny = get_model_cfg(test_variant(name))
        assert tiny.is_test and tiny.task == cfg.task, name


def test_public_surface():
    import textseg

    model = textseg.create_model("sam-vit-tiny-test")
    assert not model.training
    assert issubclass(textseg.WeightsNotFoundError, FileNotFoundError)
    assert issubclass(textseg.ChecksumError, ValueError)
    assert issubclass(textseg.StateDictError, ValueError)
    assert textseg.get_model_cfg("sam-vit-b").status == "published"
    with pytest.raises(textseg.WeightsNotFoundError, match="no published weights"):
        textseg.create_model("sam-vit-b+clip-vit-b-32-text-adapter")


# ------------------------------------------------------------------ tiny=True, one mapping
@pytest.mark.parametrize(
    ("build", "name", "tiny"),
    [
        ("sam", "sam-vit-b", "sam-vit-tiny-test"),
        ("sam", "sam2.1-hiera-large", "sam2.1-tiny-test"),
        ("clip", "clip-vit-b-32", "clip-vit-tiny-test"),
        ("clip", "hf-clip-vit-l-14", "hf-clip-vit-tiny-test"),
        ("detector", "grounding-dino-base", "grounding-dino-tiny-test"),
        ("detector", "owlv2-large", "owlv2-tiny-test"),
    ],
)
def test_tiny_reaches_every_model(build, name, tiny):
    """SamCore, load_clip and build_detector take tiny=True as from_preset does: the
    registry's test variant of the same architecture, no weights needed."""
    from textseg._registry import test_variant

    assert test_variant(name) == tiny
    if build == "sam":
        from textseg.sam import SamCore

        assert SamCore(name, tiny=True).name == tiny
    elif build == "clip":
        from textseg.clip import load_clip

        assert load_clip(name, tiny=True).name == tiny
    else:
        from textseg.detectors import build_detector

        assert build_detector(name, tiny=True).net.name == tiny


def test_tiny_keeps_the_architecture_of_a_given_checkpoint(tmp_path):
    from textseg._hub import create_model
    from textseg._registry import resolve_cfg

    assert resolve_cfg("sam-vit-b", tiny=True).name == "sam-vit-tiny-test"
    assert resolve_cfg("sam-vit-b", tiny=True, checkpoint="x.pt").name == "sam-vit-b"
    assert resolve_cfg("sam-vit-tiny-test", tiny=True).name == "sam-vit-tiny-test"
    torch.manual_seed(0)
    saved = create_model("mobile-sam", pretrained=False).state_dict()
    path = tmp_path / "finetuned.pt"
    torch.save(saved, path)
    loaded = create_model("mobile-sam", tiny=True, checkpoint=path)
    assert set(loaded.state_dict()) == set(saved)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())


def test_from_preset_tiny_with_a_real_size_sam_checkpoint(tmp_path, data_dir):
    """--tiny --sam mobile-sam --sam-checkpoint FILE: the fine-tuned real-size SAM with the
    detector and CLIP tiny."""
    from textseg._hub import create_model
    from textseg.pipelines import TextSegmenter

    torch.manual_seed(0)
    saved = create_model("mobile-sam", pretrained=False).state_dict()
    path = tmp_path / "finetuned.pt"
    torch.save(saved, path)
    seg = TextSegmenter.from_preset(
        "grounded-sam-verified", tiny=True, sam="mobile-sam", sam_checkpoint=str(path)
    )
    assert seg.sam.name == f"mobile-sam+{path}"
    assert seg.sam.image_size == 1024
    loaded = seg.sam.backend.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert seg.prompter.detector.net.name == "grounding-dino-tiny-test"
    assert seg.labeler.encoder.name == "clip-vit-tiny-test"
    result = seg.segment(data_dir / "demo" / "dog.jpg", ["dog"])
    assert "dog" in result.counts
