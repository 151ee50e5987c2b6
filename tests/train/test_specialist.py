"""Specialist training: the loss falls, a killed run resumes to the same state, provenance
weights, the specialist through the pipeline, exports read by pycocotools, the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from safetensors.torch import load_file, save_file

from textseg._hub import StateDictError, create_model
from textseg._registry import get_model_cfg, list_models
from textseg.cli import main
from textseg.fields import check_fields
from textseg.pipelines import TextSegmenter
from textseg.train import load_specialist, train_specialist
from textseg.train.data import IGNORE, TrainingSet, parse_source_weights, split_indices


def subset(data_dir: Path, root: Path, n: int, *, sources: dict[int, str] | None = None) -> Path:
    """The first ``n`` coco-dev images as their own COCO file (images stay in coco-dev)."""
    full = json.loads((data_dir / "coco-dev" / "annotations.json").read_text())
    images = full["images"][:n]
    ids = {im["id"] for im in images}
    anns = [dict(a) for a in full["annotations"] if a["image_id"] in ids]
    for a in anns:
        if sources and a["id"] in sources:
            a["source"] = sources[a["id"]]
    root.mkdir(parents=True, exist_ok=True)
    path = root / "annotations.json"
    path.write_text(json.dumps({**full, "images": images, "annotations": anns}))
    return path


@pytest.fixture(scope="module")
def small(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return subset(data_dir, tmp_path_factory.mktemp("small"), 8)


@pytest.fixture(scope="module")
def specialist_dir(small: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SegFormer trained one epoch, then biased to paint class 'person' everywhere it
    is not background, so that its predictions are never empty."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("spec") / "M"
    try:
        report = train_specialist(
            small, out, tiny=True, epochs=1, images=data_dir / "coco-dev" / "images",
            progress=False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert report.arch == "segformer-tiny-test" and (out / "model.safetensors").is_file()
    state = load_file(out / "model.safetensors")
    key = "net.decode_head.classifier.bias"
    person = 1 + report.classes.index("person")
    state[key] = torch.full_like(state[key], -10.0)
    state[key][person] = 10.0
    save_file(state, out / "model.safetensors")
    return out


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("arch", "images", "epochs"),
    [("segformer-b0", 8, 3), ("maskrcnn-r50-fpn", 4, 3), ("yolo11n-seg", 8, 3)],
)
def test_loss_falls_on_coco_dev(arch, images, epochs, data_dir, tmp_path):
    ann = subset(data_dir, tmp_path / "data", images)
    report = train_specialist(
        ann,
        tmp_path / "out",
        arch=arch,
        tiny=True,
        epochs=epochs,
        val_fraction=0.25,
        images=data_dir / "coco-dev" / "images",
        progress=False,
    )
    assert report.epochs == epochs and len(report.train_loss) == epochs
    assert report.train_loss[-1] < report.train_loss[0], report.train_loss
    n_val = round(images * 0.25)
    assert report.val_images == n_val and report.train_images == images - n_val
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["status"] == "done" and config["history"]["train_loss"] == report.train_loss
    assert config["settings"]["val_files"] and config["settings"]["train_files"]
    # The weights load back strictly and predict on an image of any size.
    spec = load_specialist(tmp_path / "out")
    torch.set_num_threads(3)  # ultralytics resets torch's threads: textseg puts them back
    dets = spec.predict(np.zeros((37, 53, 3), np.uint8))
    assert torch.get_num_threads() == 3
    torch.set_num_threads(1)
    assert dets.mask is not None and dets.mask.shape[1:] == (37, 53)


# ----------------------------------------------------------------------------- data
def test_split_is_seeded_and_never_empty():
    train, val = split_indices(10, 0.2, seed=3)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(10))
    assert np.array_equal(val, split_indices(10, 0.2, seed=3)[1])
    assert len(split_indices(2, 0.01, 0)[1]) == 1  # at least one held out
    assert len(split_indices(1, 0.5, 0)[0]) == 1  # never all of them
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        split_indices(10, 1.0, 0)


def test_provenance_weights_and_filters(data_dir, tmp_path):
    full = json.loads((data_dir / "coco-dev" / "annotations.json").read_text())
    first = [a for a in full["annotations"] if a["image_id"] == full["images"][0]["id"]]
    ann = subset(
        data_dir, tmp_path, 1, sources={first[0]["id"]: "corrected", first[1]["id"]: "proposal"}
    )
    images = data_dir / "coco-dev" / "images"
    plain = TrainingSet(ann, images).load(0)
    assert len(plain.masks) == len(first) and not plain.ignore.any()
    weighted = TrainingSet(ann, images, source_weights={"proposal": 0.0, "corrected": 2.0}).load(0)
    assert len(weighted.masks) == len(first) - 1 and weighted.excluded == 1
    labels, weights = weighted.semantic()
    assert (labels == IGNORE).any()  # the dropped proposal is ignored, not background
    assert weights.max() == 2.0
    counts = TrainingSet(ann, images).provenance()
    assert counts == {"corrected": 1, "proposal": 1, "unreviewed": len(first) - 2}
    with pytest.raises(ValueError, match="unknown provenance 'reviewed'"):
        parse_source_weights(["reviewed=1"])
    with pytest.raises(ValueError, match=">= 0"):
        parse_source_weights({"manual": -1})


def test_images_not_found_says_to_give_the_folder(small, tmp_path):
    with pytest.raises(FileNotFoundError, match="--images DIR"):
        train_specialist(small, tmp_path / "out", tiny=True)


# ----------------------------------------------------------------------------- inference
def test_specialist_through_the_pipeline_and_pycocotools(specialist_dir, data_dir, tmp_path):
    image = data_dir / "coco-dev" / "images" / "000000000009.jpg"
    out = tmp_path / "seg"
    assert main(["segment", str(image), "--specialist", str(specialist_dir), "-c", "person",
                 "--out", str(out), "--format", "yolo"]) == 0  # fmt: skip
    gt = COCO(str(out / "annotations.json"))
    anns = gt.loadAnns(gt.getAnnIds())
    assert anns and {gt.loadCats(a["category_id"])[0]["name"] for a in anns} == {"person"}
    assert all(gt.annToMask(a).sum() == a["area"] > 0 for a in anns)
    results = gt.loadRes(str(out / "results.json"))
    assert len(results.getAnnIds()) == len(anns)
    counts = json.loads((out / "counts.json").read_text())
    assert json.dumps(counts).count('"person": ' + str(len(anns))) >= 1
    assert any((out / "yolo").rglob("*.txt"))


def test_specialist_as_masker_maps_the_vocabulary(specialist_dir, data_dir):
    seg = TextSegmenter.from_preset("grounded-sam", specialist=str(specialist_dir))
    assert seg.sam is None and seg.masker is not None
    image = data_dir / "coco-dev" / "images" / "000000000009.jpg"
    result = seg.segment(str(image), ["human"], synonyms={"human": ["person"]})
    assert result.counts["human"] == len(result) > 0
    assert set(result.detections.data["class_name"]) == {"human"}
    assert result.timings["encode"] == 0.0
    dets = result.detections
    check_fields({"confidence": dets.confidence, "class_id": dets.class_id, **dets.data})
    with pytest.raises(ValueError, match="was not trained on it"):
        seg.segment(str(image), ["giraffe-robot"])
    with pytest.raises(ValueError, match="drop --negative"):
        seg.segment(str(image), ["person"], negatives=["mannequin"])
    with pytest.raises(ValueError, match="drop sam"):
        TextSegmenter.from_preset("grounded-sam", specialist=str(specialist_dir), sam="sam-vit-b")


def test_count_without_classes_uses_the_specialist_classes(specialist_dir, data_dir, capsys):
    image = data_dir / "coco-dev" / "images" / "000000000009.jpg"
    assert main(["count", str(image), "--specialist", str(specialist_dir), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table["classes"]) == len(load_specialist(specialist_dir).classes)
    assert table["totals"]["person"] > 0


def test_not_a_specialist_folder(tmp_path, capsys):
    assert main(["count", "x.jpg", "--specialist", str(tmp_path), "-c", "a"]) == 1
    assert "textseg: error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- registry
def test_every_specialist_has_a_tiny_variant_and_a_licence():
    names = list_models("specialist")
    assert {"segformer-b0", "segformer-b5", "maskrcnn-r50-fpn", "yolo11n-seg"} <= set(names)
    for name in names:
        cfg = get_model_cfg(name)
        assert get_model_cfg(cfg.test_variant).task == "specialist"
        if cfg.weights is not None:
            assert cfg.license not in ("unknown", "-")
    assert get_model_cfg("segformer-b0").weights.hf_repo == "nvidia/mit-b0"


def _transformers4_names(state: dict) -> dict:
    """transformers 5 SegformerModel keys -> the names of the hub's nvidia/mit-b* files."""
    import re

    back = [
        (r"^stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
        (r"^stages\.(\d+)\.blocks\.", r"encoder.block.\1."),
        (r"^stages\.(\d+)\.layer_norm", r"encoder.layer_norm.\1"),
        ("attention.q_proj", "attention.self.query"),
        ("attention.k_proj", "attention.self.key"),
        ("attention.v_proj", "attention.self.value"),
        ("attention.sequence_reduction.sequence_reduction", "attention.self.sr"),
        ("attention.sequence_reduction.layer_norm", "attention.self.layer_norm"),
        ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "mlp.dense1"),
        ("mlp.fc2", "mlp.dense2"),
        ("layernorm_before", "layer_norm_1"),
        ("layernorm_after", "layer_norm_2"),
    ]
    out = {}
    for key, value in state.items():
        for pattern, repl in back:
            key = (
                re.sub(pattern, repl, key)
                if pattern.startswith("^")
                else key.replace(pattern, repl)
            )
        out[f"segformer.{key}"] = value.contiguous()
    return out


def test_mit_checkpoint_loads_as_transformers_loads_it(tmp_path):
    """A checkpoint with the hub's (transformers 4) names: textseg's loader and transformers'
    own from_pretrained (with its conversion mapping) give the same encoder."""
    from transformers import SegformerModel

    torch.manual_seed(0)
    model = create_model("segformer-tiny-test", pretrained=False)
    state = _transformers4_names(model.state_dict())
    state["classifier.weight"] = torch.zeros(1000, 32)
    save_file(state, tmp_path / "model.safetensors")
    model.config.save_pretrained(tmp_path)
    torch.manual_seed(1)
    ours = create_model("segformer-tiny-test", checkpoint=tmp_path / "model.safetensors")
    reference, info = SegformerModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_resnet_backbone_loads_strictly(tmp_path):
    torch.manual_seed(0)
    model = create_model("maskrcnn-tiny-test", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "resnet.safetensors")
    loaded = create_model("maskrcnn-tiny-test", checkpoint=tmp_path / "resnet.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    del state["conv1.weight"]
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(StateDictError, match=r"missing keys: conv1\.weight"):
        create_model("maskrcnn-tiny-test", checkpoint=tmp_path / "bad.safetensors")


def test_pretrained_backbone_is_used_for_training(small, data_dir, tmp_path):
    torch.manual_seed(0)
    encoder = create_model("segformer-tiny-test", pretrained=False)
    path = tmp_path / "mit.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, path)
    images = data_dir / "coco-dev" / "images"
    report = train_specialist(
        small, tmp_path / "out", tiny=True, epochs=1, images=images, lr=1e-12,
        backbone_checkpoint=path, progress=False,
    )  # fmt: skip
    config = json.loads((report.out / "config.json").read_text())
    assert config["settings"]["pretrained"] is True
    trained = load_file(report.out / "model.safetensors")
    key = "stages.0.patch_embeddings.proj.weight"
    torch.testing.assert_close(
        trained[f"net.segformer.{key}"], encoder.state_dict()[key], atol=1e-6, rtol=0
    )


def test_label_a_folder_with_the_specialist_resumes(specialist_dir, data_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("000000000009.jpg", "000000000030.jpg"):
        (folder / name).write_bytes((data_dir / "coco-dev" / "images" / name).read_bytes())
    out = tmp_path / "L"
    argv = ["label", str(folder), "--specialist", str(specialist_dir), "-c", "person",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    first = json.loads((out / "annotations.json").read_text())
    assert len(first["images"]) == 2 and first["annotations"]
    assert main(argv) == 0  # a second run resumes: nothing labelled twice
    assert json.loads((out / "annotations.json").read_text()) == first


def test_missing_backbone_weights_say_how_to_go_on(small, data_dir, tmp_path, capsys):
    images = data_dir / "coco-dev" / "images"
    argv = ["train", str(small), "--images", str(images), "--out", str(tmp_path / "M")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("textseg: error: weights for 'segformer-b0' are missing")
    assert "nvidia/mit-b0" in err and "--no-pretrained" in err and err.count("\n") == 1


def test_early_stopping_keeps_the_best_epoch(small, data_dir, tmp_path):
    # A learning rate of ~0 never improves the validation mIoU: patience 1 stops after epoch 2.
    report = train_specialist(
        small, tmp_path / "M", tiny=True, epochs=5, patience=1, lr=1e-12, progress=False,
        images=data_dir / "coco-dev" / "images",
    )  # fmt: skip
    assert report.stopped_early and report.epochs == 2 and report.best_epoch == 1
    config = json.loads((tmp_path / "M" / "config.json").read_text())
    assert config["stopped_early"] is True and config["epochs_done"] == 2


def test_yolo_can_only_keep_or_leave_out_by_provenance(small, data_dir, tmp_path):
    with pytest.raises(ValueError, match="YOLO training can only keep"):
        train_specialist(
            small, tmp_path / "M", arch="yolo11n-seg", tiny=True, epochs=1,
            images=data_dir / "coco-dev" / "images", source_weights={"proposal": 0.5},
        )  # fmt: skip


def test_ultralytics_leaves_pillow_alone(tmp_path):
    """ultralytics replaces PIL.Image.open on import (a wrapper that pip-installs pi-heif when
    Pillow cannot identify a file); after textseg imports it, an unreadable image is still
    textseg's one "cannot read image" error, not an install attempt."""
    from PIL import Image

    from textseg._image import load_image
    from textseg.specialists.yolo import import_ultralytics

    before = Image.open
    import_ultralytics()
    assert Image.open is before
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(bad)


def test_app_prefills_the_specialists_masks(specialist_dir, data_dir, tmp_path, monkeypatch):
    """`textseg app DIR --specialist M --prefill`: SAM answers clicks, the specialist proposes,
    and accepted proposals train the next specialist with their provenance."""
    import shutil

    import gradio as gr

    from textseg.train.data import open_dataset

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(data_dir / "coco-dev" / "images" / "000000000009.jpg", folder)
    apps: list = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: apps.append(self))
    argv = ["app", str(folder), "--preset", "tiny-test", "--specialist", str(specialist_dir),
            "--prefill"]  # fmt: skip
    assert main(argv) == 0
    session = apps[0].session
    assert session.proposer.masker is not None and session.sam is not None
    assert "person" in session.classes  # the specialist's classes, no --classes given
    assert session.draft.origin == "text" and session.draft.class_name == "person"
    session.accept_all()
    assert open_dataset(session.path).provenance() == {"proposal": len(session.annotations())}
