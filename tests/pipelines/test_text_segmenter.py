"""TextSegmenter: composition, counts, de-duplication, exports, with tiny and oracle models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import supervision as sv
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from textseg import TextSegmenter, Vocabulary
from textseg.fields import check_fields
from textseg.io import CocoWriter
from textseg.io.counts import count_classes
from textseg.pipelines import dedup_masks, list_presets
from textseg.prompters.box import BoxPrompter

from .conftest import OracleDetector, OracleSam

FILES = ["000000000009.jpg", "000000000030.jpg", "000000000036.jpg", "000000000034.jpg"]


@pytest.fixture(scope="module")
def tiny() -> TextSegmenter:
    return TextSegmenter.from_preset("tiny-test", box_threshold=0.0)


def _fields(dets: sv.Detections) -> dict:
    return {"confidence": dets.confidence, "class_id": dets.class_id, **dets.data}


def test_tiny_preset_end_to_end(tiny: TextSegmenter, data_dir):
    paths = [str(data_dir / "coco-dev" / "images" / f) for f in FILES[:2]]
    results = tiny.segment(paths, ["bowl", "broccoli", "person"])
    assert len(results) == 2
    for path, r in zip(paths, results):
        dets = r.detections
        h, w = r.image_size
        assert r.source == path
        assert len(r) > 0, "tiny-test with box_threshold 0 finds boxes on coco-dev"
        assert dets.mask.shape == (len(r), h, w) and dets.mask.dtype == bool
        assert set(r.timings) == {"encode", "prompt", "decode", "label", "dedup", "total"}
        assert all(v >= 0 for v in r.timings.values())
        assert set(r.counts) >= {"bowl", "broccoli", "person"}
        assert sum(r.counts.values()) == len(r)
        # grounded-sam-verified: the detector's box fields, SAM's, and the labeler's.
        assert {"class_name", "prompt", "box", "sam_iou", "clip_score", "clip_margin"} <= set(
            dets.data
        )
        check_fields(_fields(dets))  # every field listed, finite and in its range
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


def test_min_area_drops_exactly_the_small_masks(ground_truth, data_dir):
    """Ground-truth masks through the pipeline: min_area keeps exactly those at or above it."""
    detector = OracleDetector(ground_truth)
    segmenter = TextSegmenter(
        BoxPrompter(detector),
        OracleSam(ground_truth, detector),
        dedup_iou=1.01,
        dedup_containment=None,
    )
    name = max(ground_truth.by_file, key=lambda f: len(ground_truth.by_file[f]["anns"]))
    masks, _ = ground_truth.masks(name)
    areas = np.sort(masks.reshape(len(masks), -1).sum(1))
    limit = int(areas[len(areas) // 2])
    path = str(data_dir / "coco-dev" / "images" / name)
    everything = segmenter.segment(path, ground_truth.classes)
    kept = segmenter.segment(path, ground_truth.classes, min_area=limit)
    assert len(everything) == len(masks)
    np.testing.assert_array_equal(np.sort(kept.masks.area), areas[areas >= limit])


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
    dets = sv.Detections(
        xyxy=np.zeros((3, 4), np.float32),
        class_id=np.array([0, 0, -1]),
        data={"class_name": np.array(["a", "a", "unknown"])},
    )
    assert count_classes(dets, ["a", "b"]) == {"a": 2, "b": 0, "unknown": 1}


@pytest.mark.parametrize(
    "preset",
    [
        "grounded-sam",
        "grounded-sam-verified",
        "owlv2-sam",
        "fast",
        "clip-points",
        "clip-tokens",
        "everything-clip",
    ],
)
def test_every_preset_runs_tiny_with_its_own_composition(preset, data_dir):
    """``tiny=True`` builds the preset's own composition with tiny models; the result fields
    are the documented ones, finite and in range (no NaN fillers)."""
    from textseg.pipelines.presets import PRESETS

    spec = PRESETS[preset]
    seg = TextSegmenter.from_preset(preset, tiny=True, box_threshold=0.0, points_per_side=4)
    assert seg.sam.name.endswith("-tiny-test")
    assert (seg.labeler is None) == (spec.labeler is None)
    assert (seg.selector is None) == (spec.selector is None)
    assert (seg.automatic is None) == (spec.prompter != "automatic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip-tokens: "experimental" (tested in tests/prompters)
        r = seg.segment(str(data_dir / "coco-dev" / "images" / FILES[0]), ["bowl", "person"])
    dets = r.detections
    assert dets.mask.shape[1:] == r.image_size
    assert set(r.counts) >= {"bowl", "person"}
    check_fields(_fields(dets))
    if spec.labeler is None:
        assert "clip_score" not in dets.data  # not measured: absent, not NaN


class _ClipByLookup:
    """A CLIP stand-in for the selector: each masked crop's cosine with every text is looked
    up in ``scores`` (crop bytes -> cosine), so the test decides what CLIP prefers."""

    def __init__(self, clip, scores: dict[bytes, float]) -> None:
        self.pixel_mean = clip.pixel_mean
        self.input_size = clip.input_size
        self.context_length = clip.context_length
        self.logit_scale = 100.0
        self.name = "lookup"
        self.scores = scores

    def encode_text(self, texts, **_):
        out = torch.zeros(len(texts), 2)
        out[:, 0] = 1.0
        return out

    def encode_images(self, crops, **_):
        cos = torch.tensor([self.scores[c.tobytes()] for c in crops], dtype=torch.float32)
        return torch.stack([cos, (1 - cos * cos).sqrt()], dim=1)


def test_clip_points_preset_chooses_sams_candidates_by_clip(data_dir):
    """Through the preset: the mask kept for each point prompt is CLIP's pick among SAM's three
    candidates (judged on the masked region), not SAM's best predicted IoU."""
    from textseg._image import load_image
    from textseg.clip import masked_crop
    from textseg.pipelines import ClipMaskSelector

    torch.manual_seed(0)
    # Random masks overlap: no de-duplication, so every prompt's mask can be checked.
    seg = TextSegmenter.from_preset(
        "clip-points", tiny=True, dedup_iou=1.01, dedup_containment=None
    )
    clip = seg.selector.clip
    classes = ["dog", "person", "bowl"]
    checked = 0
    for name in FILES[:3]:
        image = load_image(data_dir / "coco-dev" / "images" / name)
        prompts = seg.prompter.prompts(image, classes)
        candidates = seg.sam.predict(image, prompts.prompts, multimask_output=True, return_all=True)
        # CLIP likes each candidate as much as SAM dislikes it: CLIP picks SAM's worst.
        scores = {}
        for mask, iou in zip(candidates.mask, candidates.data["sam_iou"]):
            crop = masked_crop(image, mask, fill=clip.pixel_mean, max_size=int(clip.input_size))
            if crop is not None:
                scores[crop.tobytes()] = float(np.clip(-iou, -1, 1))
        seg.selector = ClipMaskSelector(_ClipByLookup(clip, scores), clip_weight=1.0)
        kept = seg.segment(image, classes, min_area=0).detections
        for p in range(len(prompts)):
            rows = np.flatnonzero(candidates.data["prompt_index"] == p)
            iou = candidates.data["sam_iou"][rows]
            mine = np.flatnonzero(kept.data["prompt_index"] == p)
            assert len(mine) == 1, (name, p)
            assert np.array_equal(kept.mask[mine[0]], candidates.mask[rows[np.argmin(iou)]])
            assert np.argmin(iou) != np.argmax(iou)
            checked += 1
    assert checked >= 3


def test_clip_tokens_confidence_is_sams_iou_not_nan(data_dir):
    seg = TextSegmenter.from_preset("clip-tokens", tiny=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = seg.segment(str(data_dir / "coco-dev" / "images" / FILES[0]), ["bowl", "person"])
    dets = r.detections
    assert len(dets) > 0
    np.testing.assert_array_equal(dets.confidence, dets.data["sam_iou"])


def test_refine_feeds_the_first_mask_back(data_dir):
    from textseg._image import load_image

    image = load_image(data_dir / "coco-dev" / "images" / FILES[0])
    plain = TextSegmenter.from_preset("grounded-sam", tiny=True, box_threshold=0.0)
    refined = TextSegmenter.from_preset("grounded-sam", tiny=True, box_threshold=0.0, refine=1)
    refined.prompter, refined.sam = plain.prompter, plain.sam  # same random weights
    a = plain.segment(image, ["bowl"], min_area=0)
    b = refined.segment(image, ["bowl"], min_area=0)
    # Same prompts; the second pass sees the first pass's logits as its mask input.
    prompts = plain.prompter.prompts(image, ["bowl"])
    first = plain.sam.predict(image, prompts.prompts, multimask_output=False, return_logits=True)
    from dataclasses import replace

    again = plain.sam.predict(
        image,
        replace(prompts.prompts, mask_inputs=first.data["low_res_logits"]),
        multimask_output=False,
    )
    assert len(a) and len(b)
    assert {m.tobytes() for m in b.detections.mask} <= {m.tobytes() for m in again.mask}
    assert {m.tobytes() for m in a.detections.mask} <= {m.tobytes() for m in first.mask}


def test_clip_tokens_with_an_unpaired_clip_lists_the_pairs():
    with pytest.raises(ValueError, match=r"no text-prompt adapter is registered for .*pairs: "):
        TextSegmenter.from_preset(
            "clip-tokens", sam="sam-vit-tiny-test", clip="clip-vit-b-32", pretrained=False
        )


def test_batched_images_give_the_same_results(tiny: TextSegmenter, data_dir):
    # Images of one size: a detector batch pads images of different sizes to a common one,
    # which changes what its backbone sees (as in the reference implementations).
    same_size = ["000000000009.jpg", "000000000133.jpg", "000000000194.jpg"]
    paths = [str(data_dir / "coco-dev" / "images" / f) for f in same_size]
    one = tiny.segment(paths, ["bowl", "person"])
    calls: list[int] = []
    encode_many = tiny.sam.encode_many

    def spy(images, batch_size=1):
        if any(isinstance(image, np.ndarray) for image in images):  # not a cached embedding
            calls.append(len(images))
        return encode_many(images, batch_size=batch_size)

    tiny.sam.cache.clear()
    tiny.sam.encode_many = spy
    try:
        batched = tiny.segment(paths, ["bowl", "person"], batch_size=2)
    finally:
        del tiny.sam.encode_many
    assert calls == [2, 1]  # two images encoded together, then the last one
    for a, b in zip(one, batched):
        assert a.counts == b.counts and a.source == b.source
        assert a.masks == b.masks
        np.testing.assert_allclose(a.detections.confidence, b.detections.confidence, rtol=1e-5)
