"""The model registry: names, tasks, lookup errors."""

from __future__ import annotations

import pytest

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
