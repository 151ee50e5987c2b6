"""OWLv2: offline CLIP tokenizer, square padding -> original pixels, the tiny model end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from textseg._hub import create_model
from textseg._image import to_rgb_uint8
from textseg.clip.tokenizer import clip_bpe_vocab
from textseg.detectors import Owlv2Detector, build_detector
from textseg.detectors.owlv2 import pad_to_square
from textseg.detectors.tokenizers import clip_tokenizer
from textseg.vocab import Vocabulary


@pytest.fixture(scope="module")
def detector() -> Owlv2Detector:
    return Owlv2Detector("owlv2-tiny-test", box_threshold=0.0)


@pytest.fixture(scope="module")
def images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "coco-dev" / "images").glob("*.jpg"))[:3]


@pytest.mark.parametrize(
    ("text", "ids"),
    [  # CLIP's published token ids
        ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("A  Photo of a CAT", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("dog", [49406, 1929, 49407]),
    ],
)
def test_offline_clip_tokenizer(text: str, ids: list[int]) -> None:
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok(text)["input_ids"] == ids
    assert tok.pad_token_id == 0  # OWLv2 pads with "!"


def test_pad_to_square() -> None:
    wide = pad_to_square(torch.zeros(3, 20, 50), 0.5)
    assert wide.shape == (3, 50, 50)
    assert (wide[:, :20] == 0).all() and (wide[:, 20:] == 0.5).all()
    tall = pad_to_square(torch.zeros(3, 50, 20), 0.5)
    assert tall.shape == (3, 50, 50) and (tall[:, :, 20:] == 0.5).all()


def fake_heads(monkeypatch, det: Owlv2Detector, boxes: list[list[float]], best_query: list[int]):
    """Make the model predict ``boxes`` (cxcywh, fractions of the padded square), box i matching
    query ``best_query[i]`` with probability 0.9 and every other pair 0.01."""
    n = len(boxes)

    def box_predictor(image_feats, feature_map, interpolate_pos_encoding=False):
        return torch.tensor(boxes, dtype=torch.float32)[None].expand(image_feats.shape[0], -1, -1)

    def class_predictor(image_feats, query_embeds=None, query_mask=None):
        logits = torch.full((image_feats.shape[0], n, query_embeds.shape[1]), -4.6)
        for i, q in enumerate(best_query):
            logits[:, i, q] = 2.2
        return logits, None

    def image_embedder(pixel_values, interpolate_pos_encoding=False):
        return (torch.zeros(pixel_values.shape[0], 1, n, 8), None)

    monkeypatch.setattr(det.model, "box_predictor", box_predictor)
    monkeypatch.setattr(det.model, "class_predictor", class_predictor)
    monkeypatch.setattr(det.model, "image_embedder", image_embedder)


@pytest.mark.parametrize(
    ("hw", "box", "expected"),
    [
        # wide image: the square is 200 px; the bottom 100 px of it are padding
        ((100, 200), [0.25, 0.25, 0.5, 0.5], [0, 0, 100, 100]),
        ((100, 200), [0.75, 0.25, 0.3, 0.2], [120, 30, 180, 70]),
        ((100, 200), [0.5, 0.45, 1.0, 0.3], [0, 60, 200, 100]),  # clipped at the image bottom
        # tall image: the right half of the 300 px square is padding
        ((300, 150), [0.25, 0.5, 0.5, 1.0], [0, 0, 150, 300]),
        ((300, 150), [0.4, 0.1, 0.4, 0.2], [60, 0, 150, 60]),  # clipped at the image's right
    ],
)
def test_boxes_come_back_in_original_pixels(monkeypatch, hw, box, expected) -> None:
    det = Owlv2Detector("owlv2-tiny-test")
    fake_heads(monkeypatch, det, [box], [0])
    dets = det.detect(np.zeros((*hw, 3), np.uint8), ["cat"])
    np.testing.assert_allclose(dets.xyxy, [expected], atol=1e-3)
    np.testing.assert_allclose(dets.confidence, [0.9], atol=1e-3)


def test_best_query_gives_class_synonym_and_negative(monkeypatch) -> None:
    det = Owlv2Detector("owlv2-tiny-test")
    vocab = Vocabulary(["cat", "dog"], synonyms={"dog": ["puppy"]}, negatives=["plush toy"])
    # prompts: cat, dog, puppy, plush toy
    boxes = [[0.1, 0.1, 0.1, 0.1], [0.5, 0.1, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1], [0.1, 0.8, 0.1, 0.1]]
    fake_heads(monkeypatch, det, boxes, [0, 2, 3, 1])
    dets = det.detect(np.zeros((100, 100, 3), np.uint8), vocab)
    corners = [tuple(xy) for xy in dets.xyxy[:, :2].round().astype(int).tolist()]
    got = dict(zip(corners, zip(dets.data["class_name"].tolist(), dets.data["prompt"].tolist())))
    # the "plush toy" box at (75, 75) is dropped
    assert got == {(5, 5): ("cat", "cat"), (45, 5): ("dog", "puppy"), (5, 75): ("dog", "dog")}


def check_fields(dets: sv.Detections, vocab: Vocabulary, hw: tuple[int, int]) -> None:
    assert dets.xyxy.dtype == np.float32 and dets.confidence.dtype == np.float32
    assert set(dets.data) == {"class_name", "prompt"}
    assert [vocab.names[c] for c in dets.class_id] == dets.data["class_name"].tolist()
    h, w = hw
    assert (dets.xyxy >= 0).all()
    assert (dets.xyxy[:, [0, 2]] <= w).all() and (dets.xyxy[:, [1, 3]] <= h).all()


def test_end_to_end_one_image(detector, images) -> None:
    vocab = Vocabulary(["person", "car", "car door", "dog", "traffic light"])
    dets = detector.detect(str(images[0]), vocab)
    assert isinstance(dets, sv.Detections) and len(dets) > 0
    check_fields(dets, vocab, to_rgb_uint8(images[0]).shape[:2])


def test_batch_of_images_of_different_sizes_encodes_text_once(monkeypatch, detector, images):
    vocab = Vocabulary(
        ["person", "car"], synonyms={"car": ["taxi"]}, negatives=["toy"], thresholds={"person": 0.2}
    )
    arrays = [to_rgb_uint8(p) for p in images[:2]] + [np.full((40, 300, 3), 200, np.uint8)]
    calls = []
    original = detector.model.owlv2.get_text_features
    monkeypatch.setattr(
        detector.model.owlv2,
        "get_text_features",
        lambda **kw: calls.append(kw["input_ids"].shape) or original(**kw),
    )
    monkeypatch.setattr(detector, "batch_size", 2)
    results = detector.detect(arrays, vocab)
    assert calls == [(4, calls[0][1])]  # one text pass for all 4 prompts, for all images
    assert len(results) == 3
    for dets, array in zip(results, arrays):
        check_fields(dets, vocab, array.shape[:2])


def test_batched_equals_single(detector, images) -> None:
    vocab = Vocabulary(["person", "car"])
    arrays = [to_rgb_uint8(p) for p in images[:2]]
    batched = detector.detect(arrays, vocab)
    for array, dets in zip(arrays, batched):
        single = detector.detect(array, vocab)
        np.testing.assert_allclose(single.xyxy, dets.xyxy, atol=1e-2)
        np.testing.assert_array_equal(single.class_id, dets.class_id)


def test_checkpoint_round_trip(tmp_path, detector, images) -> None:
    path = tmp_path / "owl.pt"
    torch.save(detector.net.state_dict(), path)
    loaded = Owlv2Detector("owlv2-tiny-test", checkpoint=path, box_threshold=0.0)
    a = detector.detect(images[0], ["person", "car"])
    b = loaded.detect(images[0], ["person", "car"])
    np.testing.assert_array_equal(a.xyxy, b.xyxy)


def test_checkpoint_folder_with_tokenizer(tmp_path) -> None:
    """A Hub-style folder: weights (with an old persistent position_ids buffer), vocab, merges."""
    from safetensors.torch import save_file

    net = create_model("owlv2-tiny-test", task="detector")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["owlv2.text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(state, str(tmp_path / "model.safetensors"))
    vocab, merges = clip_bpe_vocab()
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    loaded = create_model("owlv2-tiny-test", task="detector", checkpoint=tmp_path)
    assert loaded.tokenizer is not net.tokenizer
    assert loaded.tokenizer("a photo of a cat")["input_ids"] == [
        49406,
        320,
        1125,
        539,
        320,
        2368,
        49407,
    ]
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_build_detector_picks_owlv2() -> None:
    assert isinstance(build_detector("owlv2-tiny-test"), Owlv2Detector)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda d: d.detect(np.zeros((32, 32, 3), np.uint8), ["cat", "car " * 20]),
            ValueError,
            "prompt 1 'car car car car car car car car car car car car car car car ...' is 22 "
            "tokens with start/end; OWLv2's text encoder reads at most 16; shorten it",
        ),
        (
            lambda d: d.detect(np.zeros((32, 32, 3), np.uint8), []),
            ValueError,
            "classes: expected at least one class name, got an empty list",
        ),
        (
            lambda d: d.detect(np.zeros((32, 32, 3), np.uint8), ["cat", "\t"]),
            ValueError,
            "classes[1]: name is empty or only whitespace",
        ),
        (
            lambda d: d.detect(np.zeros((32, 32, 3), np.uint8), ["cat", "Cat"]),
            ValueError,
            "classes[1]: 'Cat' duplicates classes[0] 'cat'",
        ),
        (
            lambda d: d.detect(np.zeros((32, 32, 3), np.uint8), [b"cat"]),
            TypeError,
            "classes[0]: expected a str, got bytes b'cat'",
        ),
        (
            lambda d: d.detect(np.zeros((32, 32), np.float32) + 2, ["cat"]),
            ValueError,
            "image: float image with values in [2, 2], expected [0, 1]",
        ),
        (
            lambda d: Owlv2Detector("grounding-dino-tiny-test"),
            TypeError,
            "model: 'grounding-dino-tiny-test' is a GroundingDinoForObjectDetection, not OWLv2",
        ),
        (
            lambda d: Owlv2Detector(d.net, pad_value=2),
            ValueError,
            "pad_value: expected a number in [0, 1], got 2",
        ),
        (
            lambda d: Owlv2Detector(d.net, checkpoint="x.pt"),
            ValueError,
            "checkpoint: only with a registry name, not with a built model",
        ),
    ],
)
def test_bad_input(detector, call, error, message) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call(detector)
