"""TextSegmenter: composition, counts, de-duplication, exports, with tiny and oracle models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import supervision as sv
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from textseg import TextSegmenter, Vocabulary
from textseg.io import CocoWriter
from textseg.pipelines import count_classes, dedup_masks, list_presets
from textseg.prompters.box import BoxPrompter

from .conftest import OracleDetector, OracleSam

FILES = ["000000000009.jpg", "000000000030.jpg", "000000000036.jpg", "000000000034.jpg"]


@pytest.fixture(scope="module")
def tiny() -> TextSegmenter:
    return TextSegmenter.from_preset("tiny-test", box_threshold=0.0)


def test_tiny_preset_end_to_end(tiny: TextSegmenter, data_dir):
    paths = [str(data_dir / "coco-dev" / "images" / f) for f in FILES[:2]]
    results = tiny.segment(paths, ["bowl", "broccoli", "person"])
    assert len(results) == 2
    for path, r in zip(paths, results):
        dets = r.detections
        h, w = r.image_size
        assert r.source == path
        assert dets.mask.shape == (len(r), h, w) and dets.mask.dtype == bool
        assert set(r.timings) == {"encode", "prompt", "decode", "label", "total"}
        assert all(v >= 0 for v in r.timings.values())
        assert set(r.counts) >= {"bowl", "broccoli", "person"}
        assert sum(r.counts.values()) == len(r)
        assert {"class_name", "sam_iou", "clip_score"} <= set(dets.data)
        assert (dets.mask.reshape(len(r), -1).sum(1) > 0).all()
        # Masks are held as RLEs (compactness itself is checked on real masks in
        # tests/io/test_rle.py: a random tiny SAM's masks are speckle, the worst case for RLE).
        assert r.masks.shape == dets.mask.shape
        assert np.array_equal(r.masks.to_dense(), dets.mask)


def test_single_image_returns_one_result(tiny: TextSegmenter, data_dir):
    r = tiny.segment(str(data_dir / "demo" / "dog.jpg"), ["dog"])
    assert not isinstance(r, list) and r.image_size == (r.detections.mask.shape[1:])


def test_encoder_runs_once_per_image(tiny: TextSegmenter, data_dir):
    path = str(data_dir / "coco-dev" / "images" / FILES[0])
    tiny.segment(path, ["bowl"])
    before = tiny.sam.cache.stats()
    tiny.segment(path, ["orange"])
    after = tiny.sam.cache.stats()
    assert after.misses == before.misses and after.hits > before.hits


@pytest.mark.parametrize("min_area", [0, 5000])
def test_min_area(tiny: TextSegmenter, data_dir, min_area):
    r = tiny.segment(str(data_dir / "coco-dev" / "images" / FILES[0]), ["bowl"], min_area=min_area)
    assert (r.detections.mask.reshape(len(r), -1).sum(1) >= min_area).all()


def test_vocabulary_options_pass_through(tiny: TextSegmenter, data_dir):
    path = str(data_dir / "coco-dev" / "images" / FILES[0])
    r = tiny.segment(
        path, ["bowl"], negatives=["plate"], synonyms={"bowl": ["dish"]}, thresholds={"bowl": 1.0}
    )
    assert r.counts["bowl"] == 0  # threshold 1.0: nothing passes
    with pytest.raises(ValueError, match="Vocabulary already carries"):
        tiny.segment(path, Vocabulary(["bowl"]), negatives=["plate"])


@pytest.mark.parametrize(
    ("classes", "error"),
    [
        ([], "empty list"),
        (["dog", "  "], "classes\\[1\\]"),
        (["dog", "Dog"], "duplicate|twice|same"),
        (["dog", 3], "classes\\[1\\]"),
    ],
)
def test_bad_classes(tiny: TextSegmenter, data_dir, classes, error):
    with pytest.raises((ValueError, TypeError), match=error):
        tiny.segment(str(data_dir / "demo" / "dog.jpg"), classes)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match=r"Did you mean 'tiny-test'.*grounded-sam"):
        TextSegmenter.from_preset("tiny")
    assert {"grounded-sam", "clip-points", "clip-tokens", "everything-clip", "tiny-test"} <= set(
        list_presets()
    )


def test_oracle_counts_and_coco_ap(ground_truth, data_dir, tmp_path):
    """GT boxes in, GT masks through: counts equal the GT counts, the COCO export scores AP 1."""
    detector = OracleDetector(ground_truth)
    segmenter = TextSegmenter(
        BoxPrompter(detector),
        OracleSam(ground_truth, detector),
        dedup_iou=1.01,
        dedup_containment=None,
    )
    files = list(ground_truth.by_file)[:12]
    classes = ground_truth.classes
    out = tmp_path / "annotations.json"
    with CocoWriter(out, classes, flush_every=1) as writer:
        for f in files:
            r = segmenter.segment(str(data_dir / "coco-dev" / "images" / f), classes)
            assert r.counts == ground_truth.counts(f), f
            h, w = r.image_size
            writer.add(f, w, h, r.detections)
    # Evaluate the export against the dataset's own annotations.
    gt = COCO(str(data_dir / "coco-dev" / "annotations.json"))
    written = json.loads(out.read_text())
    name_to_gt_cat = {c["name"]: c["id"] for c in gt.dataset["categories"]}
    file_to_gt_id = {im["file_name"]: im["id"] for im in gt.dataset["images"]}
    ours_cat = {c["id"]: c["name"] for c in written["categories"]}
    ours_img = {im["id"]: im["file_name"] for im in written["images"]}
    results = [
        {
            "image_id": file_to_gt_id[ours_img[a["image_id"]]],
            "category_id": name_to_gt_cat[ours_cat[a["category_id"]]],
            "segmentation": a["segmentation"],
            "score": a.get("score", 1.0),
        }
        for a in written["annotations"]
    ]
    dt = gt.loadRes(results)
    ev = COCOeval(gt, dt, "segm")
    ev.params.imgIds = [file_to_gt_id[f] for f in files]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]


def test_dedup_across_classes():
    masks = np.zeros((4, 20, 20), bool)
    masks[0, 2:12, 2:12] = True  # car, 0.9
    masks[1, 2:12, 2:13] = True  # truck on the same object, 0.6: IoU > 0.7 -> dropped
    masks[2, 4:8, 4:8] = True  # car door inside the car: other class -> kept
    masks[3, 3:11, 3:11] = True  # second car inside the first (same class) -> dropped
    dets = sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        confidence=np.array([0.9, 0.6, 0.8, 0.5], np.float32),
        class_id=np.array([0, 1, 2, 0]),
    )
    assert sorted(dedup_masks(dets).tolist()) == [0, 2]
    assert sorted(dedup_masks(dets, containment_threshold=None).tolist()) == [0, 2, 3]


def test_count_classes_includes_zero_and_unknown():
    assert count_classes(["a", "a", "unknown"], ["a", "b"]) == {"a": 2, "b": 0, "unknown": 1}


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("grounded-sam", {"detector": "grounding-dino-tiny-test"}),
        ("grounded-sam-verified", {"detector": "grounding-dino-tiny-test"}),
        ("owlv2-sam", {"detector": "owlv2-tiny-test"}),
        ("fast", {"sam": "mobile-sam-tiny-test", "detector": "grounding-dino-tiny-test"}),
        ("clip-points", {}),
        ("clip-tokens", {}),
        ("everything-clip", {"points_per_side": 4}),
    ],
)
def test_every_preset_builds_and_runs_with_tiny_parts(preset, overrides, data_dir):
    """Each preset's composition, with its heavy parts swapped for tiny random ones."""
    parts = {"sam": "sam-vit-tiny-test", "clip": "clip-vit-tiny-test", **overrides}
    seg = TextSegmenter.from_preset(preset, pretrained=False, box_threshold=0.0, **parts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip-tokens: "experimental" (tested in tests/prompters)
        r = seg.segment(str(data_dir / "demo" / "dog.jpg"), ["dog", "frisbee"])
    assert r.detections.mask.shape[1:] == r.image_size
    assert set(r.counts) >= {"dog", "frisbee"}


def test_clip_tokens_with_an_unpaired_clip_lists_the_pairs():
    with pytest.raises(ValueError, match=r"no text-prompt adapter is registered for .*pairs: "):
        TextSegmenter.from_preset(
            "clip-tokens", sam="sam-vit-tiny-test", clip="clip-vit-b-32", pretrained=False
        )
