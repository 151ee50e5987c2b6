"""``train-text-prompt``: --tiny, the output-folder contract, and a run killed after any of its
writes resuming to the state of a run never interrupted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from textseg.cli import main
from textseg.train.text_prompt import train_text_prompt

from .test_resume import killed_at
from .test_text_prompt import _synthetic_coco

SAM, CLIP = "sam-vit-tiny-test", "clip-vit-tiny-test"
OPTIONS = dict(steps=2, batch_size=4, min_mask_area=16, max_images=1, seed=0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synthetic_coco(tmp_path_factory.mktemp("synthetic"))


def test_tiny_cli_claims_its_folder_and_resumes(synthetic, tmp_path, capsys):
    out = tmp_path / "adapter"
    argv = ["train-text-prompt", "--tiny", "--data", str(synthetic), "--out", str(out),
            "--steps", "2", "--batch-size", "4", "--min-mask-area", "16",
            "--max-images", "1"]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("sam-vit-tiny+clip-vit-tiny-text-adapter-tiny-test: ")
    manifest = json.loads((out / ".textseg.json").read_text())
    assert manifest["command"] == "train-text-prompt" and manifest["complete"] is True
    # Without --resume an existing run is refused in one line; with it a finished run is read
    # back as it is.
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--resume" in err, err
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out == first
    with pytest.raises(ValueError, match="settings differ"):
        train_text_prompt(SAM, CLIP, synthetic, out, **{**OPTIONS, "steps": 3}, resume=True)
    # Another command's folder is refused.
    assert main(["train", str(synthetic), "--out", str(out), "--tiny"]) != 0
    assert "textseg train-text-prompt" in capsys.readouterr().err


@pytest.fixture(scope="module")
def whole(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "adapter"
    torch.manual_seed(0)  # the random-init tiny SAM and CLIP, as in the killed process
    train_text_prompt(SAM, CLIP, synthetic, out, **OPTIONS)
    return out


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("manifest", marks=pytest.mark.slow),
        pytest.param("settings", marks=pytest.mark.slow),
        "weights",
        pytest.param("final", marks=pytest.mark.slow),
        pytest.param("complete", marks=pytest.mark.slow),
    ],
)
def test_killed_after_each_write_resumes_to_the_same_state(point, synthetic, whole, tmp_path):
    out = tmp_path / "adapter"
    assert killed_at(point, train_text_prompt, SAM, CLIP, synthetic, out, **OPTIONS) == 137
    torch.manual_seed(0)
    result = train_text_prompt(SAM, CLIP, synthetic, out, **OPTIONS, resume=True)
    a, b = load_file(whole / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (whole, out))
    assert cb["status"] == "done" and ca["losses"] == cb["losses"] == result.losses
    assert json.loads((out / ".textseg.json").read_text())["complete"] is True
