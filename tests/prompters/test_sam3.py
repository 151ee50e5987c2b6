"""SAM 3 through textseg against transformers' own ``Sam3Processor`` path on the same random
weights: the batched concepts equal one ``Sam3Model`` call per prompt, and masks, boxes and
scores equal ``post_process_instance_segmentation``. The vocabulary rules (negatives, synonyms,
thresholds, classes) are checked on hand-made outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from textseg._hub import create_model
from textseg.fields import check_fields
from textseg.pipelines import TextSegmenter
from textseg.pipelines.decode import decode_prompts
from textseg.prompters.sam3 import Exemplar, Sam3Output, Sam3Prompter
from textseg.vocab import Vocabulary


@pytest.fixture(scope="module")
def prompter() -> Sam3Prompter:
    torch.manual_seed(0)
    return Sam3Prompter("sam3-tiny-test", box_threshold=0.0)


@pytest.fixture(scope="module")
def image(data_dir) -> np.ndarray:
    return np.array(Image.open(data_dir / "demo" / "dog.jpg").convert("RGB"))


def _processor(prompter: Sam3Prompter):
    from transformers import Sam3Processor

    return Sam3Processor(image_processor=prompter.image_processor, tokenizer=prompter.net.tokenizer)


def _reference(prompter, image, text, boxes=None, labels=None):
    """transformers' documented path: the processor, the whole model, once per prompt."""
    processor = _processor(prompter)
    extra = {} if boxes is None else {"input_boxes": [boxes], "input_boxes_labels": [labels]}
    inputs = processor(images=image, text=text, return_tensors="pt", **extra)
    with torch.inference_mode():
        return processor, inputs, prompter.net.model(**inputs)


def test_batched_concepts_equal_one_model_call_per_prompt(prompter, image) -> None:
    texts = ["dog", "red car", "a frisbee in the air", "grass"]
    vision = prompter.encode_image(image)
    text, mask = prompter.encode_text(texts)
    prompter.concept_batch_size = 3  # two batches: 3 + 1
    out = prompter.predict_concepts(vision, text, mask)
    for i, t in enumerate(texts):
        _, _, ref = _reference(prompter, image, t)
        presence = ref.presence_logits.sigmoid()[0]
        scores = ref.pred_logits.sigmoid()[0] * presence
        assert torch.allclose(out.scores[i], scores, atol=1e-6, rtol=0), t
        assert torch.allclose(out.presence[i], presence, atol=1e-6, rtol=0), t
        assert torch.allclose(out.boxes[i], ref.pred_boxes[0], atol=1e-6, rtol=0), t
        rows = out.mask_index[:, 0] == i
        assert torch.equal(out.mask_index[rows, 1], torch.arange(ref.pred_masks.shape[1]))
        assert torch.allclose(out.mask_logits[rows], ref.pred_masks[0], atol=1e-5, rtol=0), t


def test_exemplar_batches_equal_the_reference(prompter, image) -> None:
    """Prompts with different numbers of exemplar boxes run padded in one batch, prompts
    without boxes in another; each equals its own processor call (text + boxes)."""
    h, w = image.shape[:2]
    dog = [[40.0, 60.0, 300.0, 400.0], [w - 200.0, 10.0, w - 5.0, 150.0]]
    car = [[10.0, 10.0, 120.0, 90.0]]
    vocab = Vocabulary(["dog", "car", "grass"])
    prompter.exemplars = (
        Exemplar(tuple(dog[0]), "dog"),
        Exemplar(tuple(dog[1]), "dog", positive=False),
        Exemplar(tuple(car[0]), "Car"),
    )
    try:
        rows = prompter._exemplar_rows(vocab, (h, w))
        vision = prompter.encode_image(image)
        text, mask = prompter.encode_text(vocab.prompts)
        out = prompter.predict_concepts(vision, text, mask, rows)
    finally:
        prompter.exemplars = ()
    cases = [("dog", dog, [1, 0]), ("car", car, [1]), ("grass", None, None)]
    for i, (t, boxes, labels) in enumerate(cases):
        _, _, ref = _reference(prompter, image, t, boxes, labels)
        scores = ref.pred_logits.sigmoid()[0] * ref.presence_logits.sigmoid()[0]
        assert torch.allclose(out.scores[i], scores, atol=1e-6, rtol=0), t
        assert torch.allclose(out.boxes[i], ref.pred_boxes[0], atol=1e-6, rtol=0), t


def test_masks_boxes_scores_equal_post_process_instance_segmentation(prompter, image) -> None:
    """One prompt per class: textseg's instances are exactly the processor's."""
    processor, _, ref = _reference(prompter, image, "dog")
    all_scores = (ref.pred_logits.sigmoid() * ref.presence_logits.sigmoid())[0]
    threshold = float(all_scores.median())  # some instances in, some out
    expected = processor.post_process_instance_segmentation(
        ref, threshold=threshold, mask_threshold=0.5, target_sizes=[image.shape[:2]]
    )[0]
    prompter.box_threshold = threshold
    prompter.cross_class_nms_threshold = None
    try:
        found = prompter.prompts(image, ["dog"])
    finally:
        prompter.box_threshold, prompter.cross_class_nms_threshold = 0.0, 0.9
    dets = decode_prompts(None, image, found)  # SAM is not used: the prompts carry masks
    assert 0 < len(dets) == len(expected["scores"]) < all_scores.numel()
    order = torch.argsort(expected["scores"], descending=True, stable=True)
    h, w = image.shape[:2]
    boxes = expected["boxes"][order].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    np.testing.assert_allclose(dets.confidence, expected["scores"][order].numpy(), atol=1e-6)
    np.testing.assert_allclose(dets.data["box"], boxes.numpy(), atol=1e-3)
    assert np.array_equal(dets.mask, expected["masks"][order].numpy().astype(bool))
    np.testing.assert_allclose(
        dets.data["presence_score"], float(ref.presence_logits.sigmoid()), atol=1e-6
    )
    assert (dets.class_id == 0).all() and set(dets.data["class_name"]) == {"dog"}
    check_fields({"confidence": dets.confidence, "class_id": dets.class_id, **dets.data})


def _output(scores, boxes, presence=None) -> Sam3Output:
    """A hand-made SAM 3 output: P prompts x Q queries, boxes as fractions of a 100x100 image."""
    scores = torch.tensor(scores, dtype=torch.float32)
    p, q = scores.shape
    index = torch.stack(torch.meshgrid(torch.arange(p), torch.arange(q), indexing="ij"), -1)
    return Sam3Output(
        scores=scores,
        presence=torch.tensor(presence or [1.0] * p),
        boxes=torch.tensor(boxes, dtype=torch.float32) / 100,
        mask_index=index.reshape(-1, 2),
        mask_logits=torch.zeros(p * q, 4, 4),
    )


_A = [10, 10, 50, 50]
_A2 = [11, 11, 50, 50]  # IoU with _A 0.95
_B = [60, 60, 90, 90]


@pytest.mark.parametrize(
    ("vocab", "scores", "boxes", "expected"),
    [
        # Below the threshold (0.5): dropped.
        (Vocabulary(["dog"]), [[0.9, 0.4]], [[_A, _B]], [("dog", "dog", 0.9)]),
        # A per-class threshold beats the default.
        (
            Vocabulary(["dog"], thresholds={"dog": 0.95}),
            [[0.9, 0.96]],
            [[_A, _B]],
            [("dog", "dog", 0.96)],
        ),
        # A synonym's duplicate of the same object goes; another object it finds stays.
        (
            Vocabulary(["dog"], synonyms={"dog": ["puppy"]}),
            [[0.9, 0.1], [0.8, 0.7]],
            [[_A, _B], [_A2, _B]],
            [("dog", "dog", 0.9), ("dog", "puppy", 0.7)],
        ),
        # Two instances of one prompt overlapping: SAM 3's own, both kept.
        (
            Vocabulary(["dog"]),
            [[0.9, 0.8]],
            [[_A, _A2]],
            [("dog", "dog", 0.9), ("dog", "dog", 0.8)],
        ),
        # A negative that beats an overlapping positive suppresses it; a weaker one does not.
        (
            Vocabulary(["dog"], negatives=["toy dog"]),
            [[0.7, 0.9], [0.8, 0.6]],
            [[_A, _B], [_A2, _B]],
            [("dog", "dog", 0.9)],
        ),
        # Across classes, near-identical boxes keep the higher score.
        (
            Vocabulary(["dog", "cat"]),
            [[0.9, 0.1], [0.8, 0.7]],
            [[_A, _B], [_A2, _B]],
            [("dog", "dog", 0.9), ("cat", "cat", 0.7)],
        ),
    ],
    ids=["threshold", "class-threshold", "synonym", "same-prompt", "negative", "cross-class"],
)
def test_vocabulary_rules(prompter, vocab, scores, boxes, expected) -> None:
    prompter.box_threshold = 0.5
    try:
        found = prompter.select(_output(scores, boxes), vocab, (100, 100))
    finally:
        prompter.box_threshold = 0.0
    got = [
        (vocab.names[c], str(p), round(float(s), 4))
        for c, p, s in zip(found.class_id, found.data["prompt"], found.confidence)
    ]
    assert got == expected


def test_nothing_found_is_empty_and_needs_no_sam(prompter, image) -> None:
    prompter.box_threshold = 1.0
    try:
        found = prompter.prompts(image, ["dog"])
    finally:
        prompter.box_threshold = 0.0
    assert len(found) == 0 and found.masks is not None
    dets = decode_prompts(None, image, found)
    assert len(dets) == 0 and dets.mask.shape == (0, *image.shape[:2])


def test_image_is_encoded_once_for_any_number_of_calls(prompter, image, monkeypatch) -> None:
    calls = []
    original = prompter.net.model.get_vision_features
    monkeypatch.setattr(
        prompter.net.model,
        "get_vision_features",
        lambda **kw: calls.append(1) or original(**kw),
    )
    prompter._last = None
    for classes in (["dog"], ["dog", "car", "person"], ["tree"]):
        prompter.prompts(image, classes)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10,20,200,220:dog", Exemplar((10, 20, 200, 220), "dog")),
        ("neg:1.5, 2, 30, 40 : red car", Exemplar((1.5, 2, 30, 40), "red car", positive=False)),
        ("0,0,5,5", Exemplar((0, 0, 5, 5))),
    ],
)
def test_exemplar_parse(text, expected) -> None:
    assert Exemplar.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "10,20,200",
            "exemplar: expected [neg:]X0,Y0,X1,Y1[:CLASS] (pixels, e.g. 10,20,200,220:dog), "
            "got '10,20,200'",
        ),
        ("a,b,c,d", "exemplar: expected four numbers in [neg:]X0,Y0,X1,Y1[:CLASS], got 'a,b,c,d'"),
        ("30,20,10,220", "Exemplar.box: expected x1 > x0 and y1 > y0 (XYXY pixels), got [30.0, "),
    ],
)
def test_exemplar_parse_errors(text, message) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        Exemplar.parse(text)


def test_exemplar_needs_a_known_class(prompter, image) -> None:
    prompter.exemplars = (Exemplar((1, 1, 20, 20)),)
    try:
        with pytest.raises(ValueError, match=r"name its class \(X0,Y0,X1,Y1:CLASS\)"):
            prompter.prompts(image, ["dog", "cat"])
        prompter.exemplars = (Exemplar((1, 1, 20, 20), "horse"),)
        with pytest.raises(ValueError, match="class 'horse' is not one of the classes"):
            prompter.prompts(image, ["dog", "cat"])
        prompter.exemplars = (Exemplar((1, 1, 2000, 20), "dog"),)
        with pytest.raises(ValueError, match="expected a box inside the 800x534 image"):
            prompter.prompts(image, ["dog"])
    finally:
        prompter.exemplars = ()


def test_published_layout_loads_strictly_into_both_models(tmp_path) -> None:
    """facebook/sam3's file holds the video model: detector_model.*, tracker_neck.*,
    tracker_model.* (with video-only parts). Each registry entry takes its part."""
    torch.manual_seed(1)
    detector = create_model("sam3-tiny-test", pretrained=False).model
    tracker = create_model("sam3-tracker-tiny-test", pretrained=False)
    state = {f"detector_model.{k}": v for k, v in detector.state_dict().items()}
    for key, value in tracker.state_dict().items():
        if key.startswith("vision_encoder.neck."):
            state["tracker_neck." + key[len("vision_encoder.neck.") :]] = value
        elif not key.startswith("vision_encoder.backbone."):  # shared with the detector
            state["tracker_model." + key] = value
    state["tracker_model.memory_attention.layers.0.weight"] = torch.zeros(2)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    loaded = create_model("sam3-tiny-test", checkpoint=path).model
    for key, value in detector.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    loaded_tracker = create_model("sam3-tracker-tiny-test", checkpoint=path)
    for key, value in loaded_tracker.state_dict().items():
        # One backbone, the detector's; the rest is the tracker's own.
        source = detector if key.startswith("vision_encoder.backbone.") else tracker
        assert torch.equal(value, source.state_dict()[key]), key


def test_lite_text_variant_runs(image) -> None:
    torch.manual_seed(2)
    prompter = Sam3Prompter("sam3-litetext-tiny-test", box_threshold=0.0)
    found = prompter.prompts(image, ["dog", "car"])
    assert len(found) > 0 and found.masks is not None and len(found.masks) == len(found)
    assert type(prompter.net.model).__name__ == "Sam3LiteTextModel"


def test_sam3_preset_runs_tiny_without_sam_encoding(image) -> None:
    seg = TextSegmenter.from_preset("sam3", tiny=True, box_threshold=0.0, min_area=1)
    # One ViT for the concept model and the tracker, as in SAM 3's checkpoint.
    tracker = seg.sam.backend.model.vision_encoder.backbone
    assert tracker is seg.prompter.net.model.vision_encoder.backbone
    result = seg.segment(image, ["dog", "red car"])
    assert seg.sam.cache.stats().misses == 0  # SAM 3 cut the masks; the tracker was not run
    dets = result.detections
    assert len(dets) > 0 and set(result.counts) == {"dog", "red car"}
    assert {"presence_score", "box", "prompt"} <= set(dets.data) and "sam_iou" not in dets.data
    check_fields({"confidence": dets.confidence, "class_id": dets.class_id, **dets.data})
    lite = TextSegmenter.from_preset("sam3", tiny=True, detector="sam3-litetext-s0")
    assert type(lite.prompter.net.model).__name__ == "Sam3LiteTextModel"
    with pytest.raises(ValueError, match="cuts its masks itself"):
        TextSegmenter.from_preset("sam3", tiny=True, refine=1)
    with pytest.raises(ValueError, match="box exemplars are a SAM 3 prompt"):
        TextSegmenter.from_preset("tiny-test", exemplars=[Exemplar((1, 1, 5, 5))])
