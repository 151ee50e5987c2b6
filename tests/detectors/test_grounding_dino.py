"""Grounding DINO: caption spans, span scoring -> classes (synthetic logits), and the tiny model
end to end on coco-dev images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from textseg._hub import create_model
from textseg._image import to_rgb_uint8
from textseg.detectors import GroundingDinoDetector, build_detector
from textseg.detectors.base import PostprocessConfig, postprocess_detections
from textseg.detectors.grounding_dino import (
    build_captions,
    prompt_scores_from_logits,
    resize_shape,
)
from textseg.detectors.tokenizers import offline_bert_tokenizer
from textseg.vocab import Vocabulary

HIGH, LOW = 6.0, -6.0  # logits: sigmoid 0.998 and 0.002


@pytest.fixture(scope="module")
def tokenizer():
    return offline_bert_tokenizer()


@pytest.fixture(scope="module")
def detector() -> GroundingDinoDetector:
    return GroundingDinoDetector("grounding-dino-tiny-test")


@pytest.fixture(scope="module")
def images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "coco-dev" / "images").glob("*.jpg"))[:3]


def span_words(tokenizer, chunk, p: int) -> str:
    start, end = chunk.spans[p]
    tokens = tokenizer.convert_ids_to_tokens(list(chunk.input_ids[start:end]))
    return " ".join(tokens).replace(" ##", "")


# ---------------------------------------------------------------------- captions and spans
@pytest.mark.parametrize(
    "classes",
    [
        ["cat"],
        ["car", "car door"],
        ["person", "traffic light", "fire hydrant", "car", "car door"],
        ["Teddy Bear", "bears", "zebra-crossing", "u-turn sign", "x"],
    ],
)
def test_caption_spans_cover_each_prompt(tokenizer, classes: list[str]) -> None:
    chunks = build_captions(Vocabulary(classes).prompts, tokenizer)
    assert len(chunks) == 1
    chunk = chunks[0]
    assert chunk.caption == " . ".join(classes) + " ."
    assert chunk.input_ids[0] == 101 and chunk.input_ids[-1] == 102  # [CLS] ... [SEP]
    assert chunk.prompt_ids == tuple(range(len(classes)))
    for p, name in enumerate(classes):
        # The span holds exactly the prompt's words (lowercased, punctuation split off).
        words = re.sub(r"([^\w\s])", r" \1 ", name.lower()).split()
        assert span_words(tokenizer, chunk, p) == " ".join(words)
        end = chunk.spans[p][1]
        assert chunk.input_ids[end] == 1012  # each span is followed by "."


def test_delimiters_inside_a_prompt_are_not_phrase_breaks(tokenizer) -> None:
    chunk = build_captions(["st. bernard", "what?"], tokenizer)[0]
    assert chunk.caption == "st bernard . what ."
    assert span_words(tokenizer, chunk, 0) == "st bernard"


def test_long_vocabularies_split_into_several_captions(tokenizer) -> None:
    objects = ["person", "bicycle", "car", "bus", "train", "truck", "boat"]
    objects += ["bench", "bird", "cat", "dog", "horse", "sheep", "cow"]
    colors = ["red", "blue", "green", "white", "black", "a", "the", "of"]
    prompts = [f"{c} {o}" for c in colors for o in objects]  # 112 prompts, 2 tokens + "." each
    chunks = build_captions(prompts, tokenizer, max_len=256)
    assert [len(c.prompt_ids) for c in chunks] == [84, 28]  # (256 - 2) // 3 = 84 per caption
    assert [i for c in chunks for i in c.prompt_ids] == list(range(112))
    for chunk in chunks:
        assert len(chunk.input_ids) <= 256
        for p, i in enumerate(chunk.prompt_ids):
            assert span_words(tokenizer, chunk, p) == prompts[i]


@pytest.mark.parametrize(
    ("prompts", "max_len", "message"),
    [
        (
            ["cat", " ".join(["car"] * 254)],
            256,
            "prompt 1 'car car car car car car car car car car car car car car car ...' is 254 "
            "tokens; Grounding DINO's text encoder reads at most 253 tokens per prompt (256 with "
            "[CLS], '.' and [SEP]); shorten it",
        ),
        (
            ["cat dog bird"],
            5,
            "prompt 0 'cat dog bird' is 3 tokens; Grounding DINO's text encoder "
            "reads at most 2 tokens per prompt",
        ),
        (["cat", "..."], 256, "prompt 1 '...': nothing left for Grounding DINO once '.' and '?'"),
    ],
)
def test_caption_errors(tokenizer, prompts, max_len, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_captions(prompts, tokenizer, max_len=max_len)


# ---------------------------------------------------------------------- span scoring -> classes
def synthetic_logits(chunk, hot: list[list[tuple]]) -> torch.Tensor:
    """(Q, 256) logits: probability ~0 everywhere except the cells listed per box.

    A cell is ``(prompt index, token offset in its span or None for every token, probability)``
    (probability defaults to 0.998). Padding positions (after [SEP]) are -inf, as the model
    returns them.
    """
    logits = torch.full((len(hot), 256), LOW)
    logits[:, len(chunk.input_ids) :] = float("-inf")
    for q, cells in enumerate(hot):
        for p, offset, *prob in cells:
            start, end = chunk.spans[p]
            value = torch.logit(torch.tensor(prob[0])) if prob else HIGH
            if offset is None:
                logits[q, start:end] = value
            else:
                logits[q, start + offset] = value
    return logits


def classify(vocab: Vocabulary, logits, chunk, reduce="mean", text_threshold=0.25):
    scores = prompt_scores_from_logits(
        logits, chunk.spans, reduce=reduce, text_threshold=text_threshold
    )
    boxes = torch.tensor([[10.0 * q, 0.0, 10.0 * q + 8, 8.0] for q in range(len(logits))])
    return postprocess_detections(
        boxes, scores, vocab, image_size=(100, 100), config=PostprocessConfig(box_threshold=0.35)
    )


def by_box(dets: sv.Detections, field: str = "class_name") -> dict:
    values = dets.class_id if field == "class_id" else dets.data[field]
    return dict(zip((dets.xyxy[:, 0] // 10).astype(int).tolist(), values.tolist()))


def test_one_class(tokenizer) -> None:
    vocab = Vocabulary(["cat"])
    chunk = build_captions(vocab.prompts, tokenizer)[0]
    dets = classify(vocab, synthetic_logits(chunk, [[(0, 0)], []]), chunk)
    assert dets.class_id.tolist() == [0]
    np.testing.assert_allclose(dets.xyxy, [[0, 0, 8, 8]])


def test_overlapping_names_car_and_car_door(tokenizer) -> None:
    vocab = Vocabulary(["car", "car door"])
    chunk = build_captions(vocab.prompts, tokenizer)[0]
    hot = [
        # a car: "car" fires in both phrases, "door" does not -> car 0.9 vs car door 0.43
        [(0, 0, 0.9), (1, 0, 0.8), (1, 1, 0.05)],
        # a car door: the "car door" phrase fires fully -> car 0.6 vs car door 0.85
        [(0, 0, 0.6), (1, 0, 0.8), (1, 1, 0.9)],
        # only "door" fires: half of "car door" (mean 0.45) still names it
        [(1, 1, 0.9)],
    ]
    dets = classify(vocab, synthetic_logits(chunk, hot), chunk)
    assert by_box(dets) == {0: "car", 1: "car door", 2: "car door"}
    # max over the span cannot tell the first two apart the same way
    dets_max = classify(vocab, synthetic_logits(chunk, hot), chunk, reduce="max")
    assert by_box(dets_max) == {0: "car", 1: "car door", 2: "car door"}
    np.testing.assert_allclose(sorted(dets_max.confidence), [0.9, 0.9, 0.9], atol=1e-5)


def test_five_classes_multi_word(tokenizer) -> None:
    classes = ["person", "traffic light", "fire hydrant", "car", "car door"]
    vocab = Vocabulary(classes)
    chunk = build_captions(vocab.prompts, tokenizer)[0]
    hot = [
        [(3, 0, 0.6), (4, 0, 0.8), (4, 1, 0.9)],  # car door ("car" of "car" fires too)
        [(2, None)],  # fire hydrant
        [(1, None, 0.9), (2, 1, 0.9)],  # traffic light (one stray token of "fire hydrant")
        [(0, None)],  # person
        [(3, 0, 0.9), (4, 0, 0.7)],  # car
        [],  # nothing: dropped, never class 0
        [(1, 0, 0.5)],  # "traffic" alone, mean 0.25 < 0.35: dropped
    ]
    dets = classify(vocab, synthetic_logits(chunk, hot), chunk)
    assert by_box(dets, "class_id") == {0: 4, 1: 2, 2: 1, 3: 0, 4: 3}
    assert dets.data["class_name"].tolist() == [classes[c] for c in dets.class_id]


@pytest.mark.parametrize(("reduce", "expected"), [("mean", [0.5, 0.998]), ("max", [0.998, 0.998])])
def test_span_reduce(tokenizer, reduce, expected) -> None:
    chunk = build_captions(["fire hydrant", "dog"], tokenizer)[0]
    logits = synthetic_logits(chunk, [[(0, 0), (1, 0)]])
    scores = prompt_scores_from_logits(logits, chunk.spans, reduce=reduce)
    np.testing.assert_allclose(scores[0].numpy(), expected, atol=2e-3)


def test_text_threshold_zeroes_weak_prompts(tokenizer) -> None:
    chunk = build_captions(["cat", "dog"], tokenizer)[0]
    logits = synthetic_logits(chunk, [[]])
    logits[0, chunk.spans[0][0]] = 0.0  # sigmoid 0.5
    logits[0, chunk.spans[1][0]] = -1.5  # sigmoid 0.18
    scores = prompt_scores_from_logits(logits, chunk.spans, text_threshold=0.25)
    np.testing.assert_allclose(scores[0].numpy(), [0.5, 0.0], atol=1e-6)


def test_synonyms_and_negatives_through_spans(tokenizer) -> None:
    vocab = Vocabulary(["car"], synonyms={"car": ["automobile"]}, negatives=["toy car"])
    chunk = build_captions(vocab.prompts, tokenizer)[0]
    hot = [
        [(1, None)],  # "automobile" (spelled in pieces) -> class car, prompt automobile
        [(0, 0, 0.9), (2, None)],  # "toy car" wins over "car": dropped
    ]
    dets = classify(vocab, synthetic_logits(chunk, hot), chunk)
    assert dets.class_id.tolist() == [0]
    assert dets.data["prompt"].tolist() == ["automobile"]


# ---------------------------------------------------------------------- images
@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((480, 640), (800, 1066)),  # truncated, as transformers and the official code do
        ((640, 480), (1066, 800)),
        ((100, 1000), (133, 1333)),  # the long side caps the size
        ((800, 800), (800, 800)),
        ((1, 1), (800, 800)),
    ],
)
def test_resize_shape(hw, expected) -> None:
    assert resize_shape(*hw, 800, 1333) == expected


def test_resize_shape_is_transformers_for_common_sizes() -> None:
    from transformers.image_transforms import get_size_with_aspect_ratio

    sizes = [
        (h, w)
        for h in (240, 333, 375, 427, 480, 500, 612, 720, 1080, 3000)
        for w in (320, 427, 500, 640, 683, 1024, 1280, 1920, 4000)
    ]
    for h, w in sizes:
        assert resize_shape(h, w, 800, 1333) == get_size_with_aspect_ratio((h, w), 800, 1333)


# ---------------------------------------------------------------------- end to end (tiny model)
def check_fields(dets: sv.Detections, vocab: Vocabulary, hw: tuple[int, int]) -> None:
    assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape == (len(dets), 4)
    assert dets.confidence.dtype == np.float32
    assert set(dets.data) == {"class_name", "prompt"}
    for c, name, prompt in zip(dets.class_id, dets.data["class_name"], dets.data["prompt"]):
        assert vocab.names[c] == name
        assert prompt in vocab.prompts and vocab.prompt_class[vocab.prompts.index(prompt)] == c
    h, w = hw
    assert (dets.xyxy[:, [0, 2]] <= w).all() and (dets.xyxy[:, [1, 3]] <= h).all()
    assert (dets.xyxy >= 0).all()
    assert np.all(np.diff(dets.confidence) <= 0)


def test_end_to_end_one_image(detector, images) -> None:
    from PIL import Image

    vocab = Vocabulary(["person", "car", "car door", "dog", "traffic light"])
    dets = detector.detect(images[0], vocab, box_threshold=0.0)
    assert isinstance(dets, sv.Detections) and len(dets) > 0
    check_fields(dets, vocab, Image.open(images[0]).size[::-1])


def test_batch_of_images_of_different_sizes(detector, images) -> None:
    vocab = Vocabulary(
        ["person", "car"], synonyms={"car": ["taxi"]}, negatives=["toy"], thresholds={"person": 0.2}
    )
    arrays = [to_rgb_uint8(p) for p in images[:2]] + [np.full((50, 300, 3), 127, np.uint8)]
    results = detector.detect(arrays, vocab, box_threshold=0.0)
    assert isinstance(results, list) and len(results) == 3
    for dets, array in zip(results, arrays):
        check_fields(dets, vocab, array.shape[:2])
    assert detector.detect([], vocab) == []


def test_batching_does_not_change_same_size_images(detector, images) -> None:
    array = to_rgb_uint8(images[0])
    text = detector._encode_text(Vocabulary(["person", "car"]))
    with torch.inference_mode():
        ((boxes_1, scores_1),) = detector._predict([array], text)
        (boxes_2, scores_2), _ = detector._predict([array, array[::-1].copy()], text)
    torch.testing.assert_close(boxes_1, boxes_2, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(scores_1, scores_2, atol=1e-4, rtol=1e-4)


def test_several_captions_end_to_end(detector, images) -> None:
    """A vocabulary longer than the text encoder runs as several captions in one batch."""
    vocab = Vocabulary(["person", "car", "car door", "dog", "traffic light", "fire hydrant"])
    short = GroundingDinoDetector(detector.net, box_threshold=0.0)
    short.max_text_len = 8  # forces 3+ captions for these prompts
    text = short._encode_text(vocab)
    assert len(text.chunks) >= 3
    with torch.inference_mode():
        ((boxes, scores),) = short._predict([np.full((64, 96, 3), 90, np.uint8)], text)
    q = short.model.config.num_queries
    assert boxes.shape == (q * len(text.chunks), 4)
    assert scores.shape == (q * len(text.chunks), len(vocab.prompts))
    # rows of caption c score only the prompts of caption c
    for c, chunk in enumerate(text.chunks):
        rows = scores[c * q : (c + 1) * q]
        others = [i for i in range(len(vocab.prompts)) if i not in chunk.prompt_ids]
        assert (rows[:, others] == 0).all()
    dets = short.detect(images[0], vocab)
    assert dets.class_id.max() < len(vocab)


def test_checkpoint_round_trip(tmp_path, detector, images) -> None:
    path = tmp_path / "gdino-tiny.pt"
    torch.save(detector.net.state_dict(), path)
    loaded = GroundingDinoDetector("grounding-dino-tiny-test", checkpoint=path)
    for (k, a), b in zip(detector.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), k
    vocab = Vocabulary(["person", "car"])
    a = detector.detect(images[0], vocab, box_threshold=0.0)
    b = loaded.detect(images[0], vocab, box_threshold=0.0)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.class_id, b.class_id)


def test_checkpoint_folder_with_vocab(tmp_path) -> None:
    """A Hub-style folder: model.safetensors + vocab.txt; the tokenizer comes from the folder."""
    from safetensors.torch import save_file

    net = create_model("grounding-dino-tiny-test", task="detector")
    # The tied box heads are saved once (bbox_embed.0), as save_pretrained writes them.
    tied = re.compile(r"model\.decoder\.bbox_embed\..*|bbox_embed\.[1-9]\d*\..*")
    state = {k: v.clone() for k, v in net.state_dict().items() if not tied.fullmatch(k)}
    save_file(state, str(tmp_path / "model.safetensors"))
    vocab = sorted(net.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n")
    loaded = create_model("grounding-dino-tiny-test", task="detector", checkpoint=tmp_path)
    assert loaded.tokenizer is not net.tokenizer
    assert loaded.tokenizer("car door")["input_ids"] == net.tokenizer("car door")["input_ids"]
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_build_detector_picks_grounding_dino() -> None:
    det = build_detector("grounding-dino-tiny-test", box_threshold=0.2)
    assert isinstance(det, GroundingDinoDetector) and det.postprocess.box_threshold == 0.2


@pytest.mark.parametrize(
    ("classes", "error", "message"),
    [
        ([], ValueError, "classes: expected at least one class name, got an empty list"),
        (
            ["cat", "   "],
            ValueError,
            "classes[1]: name is empty or only whitespace and punctuation ('   ')",
        ),
        (["cat", "dog", "CAT"], ValueError, "classes[2]: 'CAT' duplicates classes[0] 'cat'"),
        (["cat", 7], TypeError, "classes[1]: expected a str, got int 7"),
        ("cat . dog .", TypeError, "classes: expected a list of str, got the str 'cat . dog .'"),
        (
            ["cat", "dog " * 300],
            ValueError,
            "prompt 1 'dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog ...' is 300 "
            "tokens; "
            "Grounding DINO's text encoder reads at most 253 tokens per prompt",
        ),
    ],
)
def test_bad_classes(detector, classes, error, message) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(error, match=re.escape(message)):
        detector.detect(image, classes)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda d: d.detect(np.zeros((32, 32, 3), np.uint8), ["cat"], box_threshold=1.5),
            ValueError,
            "box_threshold: expected a number in [0, 1], got 1.5",
        ),
        (
            lambda d: d.detect([np.zeros((32, 32, 3), np.uint8), 5], ["cat"]),
            TypeError,
            "images[1]: expected a path, PIL.Image or numpy array (H, W, 3) uint8 RGB, got int",
        ),
        (
            lambda d: GroundingDinoDetector("owlv2-tiny-test"),
            TypeError,
            "model: 'owlv2-tiny-test' is a Owlv2ForObjectDetection, not Grounding DINO",
        ),
        (
            lambda d: GroundingDinoDetector(d.net, span_reduce="median"),
            ValueError,
            "span_reduce: expected 'mean' or 'max', got 'median'",
        ),
        (
            lambda d: GroundingDinoDetector(d.net, text_threshold=-1),
            ValueError,
            "text_threshold: expected a number in [0, 1], got -1",
        ),
        (
            lambda d: GroundingDinoDetector(d.net, batch_size=0),
            ValueError,
            "batch_size: expected a positive int, got 0",
        ),
        (
            lambda d: GroundingDinoDetector("grounding-dino-tny"),
            ValueError,
            "unknown detector model 'grounding-dino-tny'. Did you mean 'grounding-dino-tiny'?",
        ),
    ],
)
def test_bad_arguments(detector, call, error, message) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call(detector)
