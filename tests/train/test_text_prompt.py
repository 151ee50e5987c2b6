"""Training the text-prompt adapter: the loss falls, checkpoints reload exactly, the CLI runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from textseg._hub import StateDictError, create_model
from textseg.cli import main
from textseg.clip import ClipEncoder
from textseg.prompters import ClipTokenPrompter, TextPromptAdapter
from textseg.sam.automatic import AutomaticMaskGenerator
from textseg.sam.backends.segment_anything import SegmentAnythingBackend
from textseg.sam.cache import ImageEmbedding
from textseg.train.text_prompt import (
    TrainResult,
    iter_coco_masks,
    mask_loss,
    train_text_prompt,
)
from textseg.train.text_prompt_data import low_res_target

SAM, CLIP = "sam-vit-tiny-test", "clip-vit-tiny-test"
ADAPTER = "sam-vit-tiny+clip-vit-tiny-text-adapter-tiny-test"


def _synthetic_coco(root: Path) -> Path:
    """Three 96x128 images, each a red square and a blue bar on grey noise, as COCO polygons."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(3):
        image = rng.integers(90, 140, (96, 128, 3), dtype=np.uint8)
        shapes = [
            (1, (10 + 5 * i, 10, 50 + 5 * i, 50), (220, 30, 30)),
            (2, (70, 20 + 5 * i, 120, 40 + 5 * i), (30, 30, 220)),
        ]
        for category, (x0, y0, x1, y1), colour in shapes:
            image[y0:y1, x0:x1] = colour
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category,
                    "iscrowd": 0,
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                    "area": (x1 - x0) * (y1 - y0),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 128, "height": 96})
    categories = [{"id": 1, "name": "red square"}, {"id": 2, "name": "blue bar"}]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synthetic_coco(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def trained(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    torch.manual_seed(0)  # the random-init tiny SAM and CLIP
    return train_text_prompt(
        SAM,
        CLIP,
        synthetic,
        tmp_path_factory.mktemp("adapter"),
        steps=20,
        lr=3e-2,
        batch_size=4,
        min_mask_area=16,
        max_images=2,
        seed=0,
    )


@pytest.fixture(scope="module")
def coco_subset(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first three annotated coco-dev images and their annotations."""
    coco = json.loads((data_dir / "coco-dev" / "annotations.json").read_text())
    annotated = {a["image_id"] for a in coco["annotations"] if not a.get("iscrowd", 0)}
    images = [im for im in coco["images"] if im["id"] in annotated][:3]
    ids = {im["id"] for im in images}
    root = tmp_path_factory.mktemp("coco3")
    (root / "images").mkdir()
    for im in images:
        shutil.copy(data_dir / "coco-dev" / "images" / im["file_name"], root / "images")
    subset = dict(
        coco, images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids]
    )
    (root / "annotations.json").write_text(json.dumps(subset))
    return root


# -------------------------------------------------------------------------------- training


def test_training_lowers_the_loss(trained: TrainResult) -> None:
    assert (trained.num_images, trained.num_masks) == (2, 4)
    assert len(trained.losses) == 20
    assert all(np.isfinite(trained.losses))
    # SAM is frozen and random here, so the adapter can only do so much; with these seeds
    # the evaluation loss falls by ~6% (an adapter that does not learn stays at 1.0).
    assert trained.final_loss < 0.97 * trained.initial_loss
    assert np.mean(trained.losses[-5:]) < np.mean(trained.losses[:5]) - 0.05


def test_same_seeds_same_run(synthetic: Path, tmp_path: Path) -> None:
    runs = []
    for out in ("a", "b"):
        torch.manual_seed(0)
        result = train_text_prompt(
            SAM,
            CLIP,
            synthetic,
            tmp_path / out,
            steps=3,
            batch_size=2,
            min_mask_area=16,
            max_images=1,
            seed=7,
        )
        runs.append(result)
    assert runs[0].losses == runs[1].losses
    first, second = load_file(runs[0].checkpoint), load_file(runs[1].checkpoint)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_checkpoint_reloads_bit_identically(trained: TrainResult, oc_clip: ClipEncoder) -> None:
    assert trained.adapter == ADAPTER
    assert isinstance(trained.model, TextPromptAdapter)
    folder = trained.checkpoint.parent
    expected = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}

    reloaded = [
        create_model(ADAPTER, task="text-prompt", checkpoint=folder),
        create_model(ADAPTER, task="text-prompt", checkpoint=trained.checkpoint),
        ClipTokenPrompter(ADAPTER, clip=oc_clip, checkpoint=folder).adapter,
    ]
    for model in reloaded:
        state = model.state_dict()
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            assert state[key].dtype == value.dtype
            assert torch.equal(state[key], value), key
    x = torch.nn.functional.normalize(
        torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    )
    with torch.no_grad():
        want = trained.model.eval()(x)
        for model in reloaded:
            assert torch.equal(model(x), want)
        # Loading mattered: a random init answers differently.
        fresh = create_model(ADAPTER, task="text-prompt", pretrained=False)
        assert not torch.equal(fresh(x), want)
    with safe_open(str(trained.checkpoint), "pt") as f:
        assert f.metadata() == {"format": "textseg-text-prompt-adapter", "adapter": ADAPTER}


def test_config_describes_the_run(trained: TrainResult, synthetic: Path) -> None:
    config = json.loads(trained.config.read_text())
    assert config["format"] == "textseg-text-prompt-adapter"
    assert config["adapter"] == ADAPTER
    assert (config["sam"], config["clip"]) == (SAM, CLIP)
    assert config["arch"] == {"clip_dim": 16, "prompt_dim": 32, "num_tokens": 2, "hidden_dim": 64}
    assert config["data_source"] == "coco"
    assert config["class_names"] == ["red square", "blue bar"]
    assert (config["num_images"], config["num_masks"], config["steps"]) == (2, 4, 20)
    assert config["initial_loss"] == pytest.approx(trained.initial_loss)
    assert config["final_loss"] == pytest.approx(trained.final_loss)


def test_a_checkpoint_that_does_not_fit_is_refused(
    trained: TrainResult, oc_clip: ClipEncoder, tmp_path: Path
) -> None:
    state = load_file(trained.checkpoint)
    state.pop("fc2.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        StateDictError,
        match=r"^state dict does not fit 'sam-vit-tiny\+clip-vit-tiny-text-adapter-tiny-test': "
        r"missing keys: fc2.bias; unexpected keys: extra.weight$",
    ):
        ClipTokenPrompter(ADAPTER, clip=oc_clip, checkpoint=tmp_path)


# ------------------------------------------------------------------------------------ data


def test_coco_masks_polygons_and_rle_agree(synthetic: Path, tmp_path: Path) -> None:
    coco = json.loads((synthetic / "annotations.json").read_text())
    reference = {path.name: (masks, names) for path, _, masks, names in iter_coco_masks(synthetic)}
    assert set(reference) == {"0.png", "1.png", "2.png"}
    masks, names = reference["0.png"]
    assert names == ["red square", "blue bar"]
    assert masks[0].shape == (96, 128) and masks[0].dtype == bool
    assert masks[0].sum() == 40 * 40
    # The same masks as compressed and uncompressed RLE; a crowd annotation is skipped.
    for i, ann in enumerate(coco["annotations"]):
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 96, 128))
        if i % 2:
            rle["counts"] = rle["counts"].decode()
            ann["segmentation"] = rle
        else:
            flat = mask_utils.decode(rle).ravel(order="F")
            changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
            ann["segmentation"] = {"size": [96, 128], "counts": np.diff([0, *changes]).tolist()}
    crowd = dict(coco["annotations"][0], id=99, iscrowd=1)
    coco["annotations"].append(crowd)
    shutil.copytree(synthetic / "images", tmp_path / "images")
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    for path, image, masks, names in iter_coco_masks(tmp_path):
        assert image.shape == (96, 128, 3)
        want_masks, want_names = reference[path.name]
        assert names == want_names
        for got, want in zip(masks, want_masks, strict=True):
            np.testing.assert_array_equal(got, want)


def test_low_res_targets_line_up_with_sam_masks(core) -> None:
    """The training target, in the decoder's 256x256 frame, cut back out the way the SAM core
    cuts masks, is the original mask: the loss compares like with like."""
    mask = np.zeros((96, 128), bool)
    mask[10:50, 20:60] = True
    mask[60:90, 100:120] = True
    low = core.backend.low_res_size
    factor = core.image_size / low
    in_h, in_w = core.input_size(96, 128)  # 768 x 1024
    valid = (math.ceil(in_h / factor), math.ceil(in_w / factor))
    target = low_res_target(mask, valid, low)
    assert target.shape == (256, 256) and not target[valid[0] :].any()
    emb = ImageEmbedding("k", "test", torch.zeros(1), (96, 128), (in_h, in_w))
    logits = torch.where(torch.from_numpy(target), 10.0, -10.0)[None]
    back, _ = core.masks_from_low_res(emb, logits)
    iou = (back[0] & mask).sum() / (back[0] | mask).sum()
    assert iou > 0.97


def test_mask_loss() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, 2:5, 2:5] = True
    valid = torch.zeros(1, 8, 8, dtype=torch.bool)
    valid[0, :6, :6] = True
    right = torch.where(target, 20.0, -20.0)
    wrong = -right
    assert float(mask_loss(right, target, valid)[0]) < 1e-3
    assert float(mask_loss(wrong, target, valid)[0]) > 1.0
    # Padding does not count, whatever the logits there.
    padded = right.clone()
    padded[0, 6:, :] = 20.0
    assert float(mask_loss(padded, target, valid)[0]) == pytest.approx(
        float(mask_loss(right, target, valid)[0]), abs=1e-6
    )


# ------------------------------------------------------------------------------------- CLI


def _cli(capsys: pytest.CaptureFixture[str], *args: str, **options: object) -> tuple[int, str, str]:
    """``textseg train-text-prompt --sam SAM --clip CLIP ARGS --option value ...``."""
    flags = [
        x for key, value in options.items() for x in (f"--{key.replace('_', '-')}", str(value))
    ]
    code = main(["train-text-prompt", "--sam", SAM, "--clip", CLIP, *args, *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_on_a_coco_subset(
    coco_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adapter"
    code, stdout, stderr = _cli(
        capsys,
        data=coco_subset,
        out=out,
        steps=2,
        batch_size=4,
        max_masks_per_image=2,
        min_mask_area=64,
        text_mix=0.5,
    )
    assert (code, stderr) == (0, "")
    config = json.loads((out / "config.json").read_text())
    assert config["data_source"] == "coco"
    assert config["num_images"] == 3
    assert config["text_mix"] == 0.5
    assert config["class_names"]  # COCO category names
    assert stdout.startswith(f"{ADAPTER}: {config['num_masks']} masks from 3 images, loss ")
    assert stdout.rstrip().endswith(f"saved {out / 'model.safetensors'}")
    assert isinstance(create_model(ADAPTER, task="text-prompt", checkpoint=out), TextPromptAdapter)


def test_cli_on_an_unlabelled_folder(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The data-engine route: masks from the automatic generator; each image is encoded once
    (the generator's embedding is reused) and no image beyond --max-images is processed."""
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for path in sorted((data_dir / "coco-dev" / "images").glob("*.jpg"))[:2]:
        shutil.copy(path, folder)
    counts = {"encode": 0, "generate": 0}
    encode, generate = SegmentAnythingBackend.encode, AutomaticMaskGenerator.generate

    def counting_encode(self, pixels):
        counts["encode"] += len(pixels)
        return encode(self, pixels)

    def counting_generate(self, image):
        counts["generate"] += 1
        return generate(self, image)

    monkeypatch.setattr(SegmentAnythingBackend, "encode", counting_encode)
    monkeypatch.setattr(AutomaticMaskGenerator, "generate", counting_generate)
    out = tmp_path / "adapter"
    code, stdout, stderr = _cli(
        capsys,
        data=folder,
        out=out,
        steps=2,
        batch_size=4,
        max_images=1,
        points_per_side=4,
        pred_iou_thresh=0,
        stability_score_thresh=0,
        min_mask_area=64,
    )
    assert (code, stderr) == (0, "")
    config = json.loads((out / "config.json").read_text())
    assert config["data_source"] == "automatic"
    assert config["num_images"] == 1 and config["num_masks"] >= 1
    assert config["class_names"] == []
    assert (out / "model.safetensors").is_file()
    assert counts == {"encode": 1, "generate": 1}
    assert "masks from 1 images" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--data", "/nonexistent/data"],
            "textseg: error: data: /nonexistent/data does not exist\n",
        ),
        (
            ["--data", ".", "--steps", "0"],
            "textseg: error: steps: expected a positive int, got 0\n",
        ),
        (
            ["--data", ".", "--text-mix", "2"],
            "textseg: error: text_mix: expected a probability in [0, 1], got 2.0\n",
        ),
    ],
)
def test_cli_errors_are_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, stderr = _cli(capsys, *args, out=tmp_path / "out")
    assert (code, stdout, stderr) == (1, "", message)
    assert not (tmp_path / "out").exists()


def test_cli_unregistered_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sam", "hf-sam-tiny-test", "--clip", CLIP, "--data", str(tmp_path), "--out", "o"]
    code = main(["train-text-prompt", *args])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith(
        "textseg: error: no text-prompt adapter is registered for sam='hf-sam-tiny-test' and "
        "clip='clip-vit-tiny-test'; registered pairs: "
    )


def test_cli_folder_without_usable_masks(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(sorted((data_dir / "coco-dev" / "images").glob("*.jpg"))[0], folder)
    # The random tiny SAM predicts IoUs near 0.1: the default 0.88 keeps nothing.
    code, _, stderr = _cli(capsys, data=folder, out=tmp_path / "out", points_per_side=2)
    assert code == 1
    assert stderr == (
        "textseg: error: data: no usable masks: none of at least min_mask_area=256 pixels among "
        "the automatic generator's masks (pred_iou_thresh=0.88, stability_score_thresh=0.95); "
        "lower min_mask_area or those thresholds\n"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(steps=0), ValueError, r"^steps: expected a positive int, got 0$"),
        (dict(steps=2.5), ValueError, r"^steps: expected a positive int, got 2.5$"),
        (dict(batch_size=0), ValueError, r"^batch_size: expected a positive int, got 0$"),
        (dict(max_images=0), ValueError, r"^max_images: expected a positive int, got 0$"),
        (dict(lr=0.0), ValueError, r"^lr: expected a positive number, got 0.0$"),
        (dict(lr=float("nan")), ValueError, r"^lr: expected a positive number, got nan$"),
        (dict(text_mix=-0.1), ValueError, r"^text_mix: expected a probability in \[0, 1\]"),
        (dict(data="/nonexistent"), FileNotFoundError, r"^data: /nonexistent does not exist$"),
        (
            dict(min_mask_area=10**6),
            ValueError,
            r"^data: no usable masks: none of at least min_mask_area=1000000 pixels; check the "
            r"dataset or lower min_mask_area$",
        ),
        (
            dict(clip="hf-clip-vit-tiny-test"),
            ValueError,
            r"^no text-prompt adapter is registered for sam='sam-vit-tiny-test' and "
            r"clip='hf-clip-vit-tiny-test'",
        ),
    ],
)
def test_bad_settings(
    kwargs: dict, error: type[Exception], match: str, synthetic: Path, tmp_path: Path
) -> None:
    kwargs = {"sam": SAM, "clip": CLIP, "data": synthetic, "out": tmp_path / "out", **kwargs}
    with pytest.raises(error, match=match):
        train_text_prompt(
            kwargs.pop("sam"), kwargs.pop("clip"), kwargs.pop("data"), kwargs.pop("out"), **kwargs
        )
    # Bad settings leave nothing; data without masks, found after the folder was claimed,
    # leaves only its manifest and lock (no run: a new one starts there without --resume).
    out = tmp_path / "out"
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == [
        ".textseg.json",
        ".textseg.lock",
    ]
