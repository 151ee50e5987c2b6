"""ClipLabeler: with a stub encoder whose embeddings we control, then end to end on tiny CLIPs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
import torch.nn.functional as F
from PIL import Image

from textseg.labelers import UNKNOWN, ClipLabeler, Labeler
from textseg.vocab import Vocabulary

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)
FILL = np.array([123, 117, 104], np.uint8)  # round(OpenAI CLIP mean * 255)


class StubEncoder:
    """Embeddings in a 3-d space we control.

    Texts: the vector of the longest known word in the text. Images: the fractions of red, green
    and "other" pixels (blue, white, ...) among the pixels that are not the fill colour, so a
    crop embeds as what it shows.
    """

    input_size = 1000  # large: crops reach the encoder unresized, pixel-exact
    pixel_mean = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
    logit_scale = 100.0

    def __init__(self, words: dict[str, Sequence[float]]) -> None:
        self.words = {k: torch.tensor(v, dtype=torch.float32) for k, v in words.items()}
        self.text_calls: list[list[str]] = []
        self.image_calls: list[list[np.ndarray]] = []

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        self.text_calls.append(list(texts))
        out = []
        for text in texts:
            key = max((k for k in self.words if f" {k}." in f" {text}"), key=len)
            out.append(self.words[key])
        return F.normalize(torch.stack(out), dim=-1)

    def encode_images(self, images: Sequence[np.ndarray], *, batch_size: int = 64) -> torch.Tensor:
        self.image_calls.append([im.copy() for im in images])
        out = []
        for im in images:
            px = im.reshape(-1, 3).astype(int)
            px = px[~(px == FILL).all(1)]  # blanked pixels carry no content
            red = ((px == RED).all(1)).mean()
            green = ((px == GREEN).all(1)).mean()
            out.append(torch.tensor([red, green, 1 - red - green], dtype=torch.float32))
        return F.normalize(torch.stack(out), dim=-1)


WORDS = {"wheel": (1, 0, 0), "car": (0, 1, 0), "background": (0, 0, 1), "nothing": (0, 0, 1)}


def _stub() -> StubEncoder:
    return StubEncoder(WORDS)


def _labeler(encoder: StubEncoder | None = None, **kwargs) -> ClipLabeler:
    kwargs.setdefault("background", ("background", "nothing"))
    kwargs.setdefault("templates", ("a photo of a {}.", "a photo of the {}."))
    return ClipLabeler(encoder or _stub(), **kwargs)


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A green car (rows 20-80, cols 20-180) with a red wheel (rows 50-70, cols 40-60) on it
    and a blue patch (rows 85-95, cols 100-120); returns image, car, wheel and blue masks."""
    image = np.full((100, 200, 3), 255, np.uint8)
    car = np.zeros((100, 200), bool)
    car[20:80, 20:180] = True
    wheel = np.zeros_like(car)
    wheel[50:70, 40:60] = True
    blue = np.zeros_like(car)
    blue[85:95, 100:120] = True
    image[car] = GREEN
    image[wheel] = RED
    image[blue] = BLUE
    return image, car, wheel, blue


def _detections(masks: list[np.ndarray], **fields) -> sv.Detections:
    stacked = np.stack(masks)
    return sv.Detections(xyxy=sv.mask_to_xyxy(stacked).astype(np.float32), mask=stacked, **fields)


# ------------------------------------------------------------------------------ masked crops


def test_outside_mask_is_blanked_to_the_clip_mean() -> None:
    image, car, wheel, _ = _scene()
    encoder = _stub()
    out = _labeler(encoder).label(image, _detections([wheel, car]), ["wheel", "car"])
    crop = encoder.image_calls[0][0]
    # wheel box is 20x20 at (40, 50); context 0.1 -> 24x24 square from (38, 48)
    assert crop.shape == (24, 24, 3)
    inside = np.zeros((24, 24), bool)
    inside[2:22, 2:22] = True
    assert (crop[inside] == RED).all()
    assert (crop[~inside] == FILL).all()  # the green car around the wheel is gone
    # The "enclosing segment" case: the wheel is a wheel, the car a car.
    assert out.data["class_name"].tolist() == ["wheel", "car"]
    assert out.class_id.tolist() == [0, 1]


def test_plain_box_crop_would_let_the_enclosing_segment_win() -> None:
    """Control for the test above: without a mask the wheel's crop is mostly car."""
    image = _scene()[0]
    boxes = sv.Detections(xyxy=np.array([[30, 40, 70, 80]], np.float32))  # wheel box + context
    out = _labeler().label(image, boxes, ["wheel", "car"])
    assert out.data["class_name"].tolist() == ["car"]


def test_crop_outside_the_image_is_filled() -> None:
    image = np.full((10, 10, 3), 200, np.uint8)
    crop = _labeler(context=0.5).crop(image, np.array([0.0, 0.0, 4.0, 4.0]), None)
    assert crop.shape == (8, 8, 3)  # 4 * (1 + 2 * 0.5), centred on (2, 2): from (-2, -2)
    assert (crop[:2] == FILL).all() and (crop[:, :2] == FILL).all()
    assert (crop[2:, 2:] == 200).all()


def test_large_crops_are_downscaled_to_the_input_size() -> None:
    encoder = _stub()
    encoder.input_size = 16
    image = np.zeros((100, 100, 3), np.uint8)
    mask = np.ones((100, 100), bool)
    crop = _labeler(encoder).crop(image, np.array([0.0, 0.0, 100.0, 100.0]), mask)
    assert crop.shape == (16, 16, 3)


# ------------------------------------------------------------------------------ decisions


def test_low_margin_is_unknown() -> None:
    image = np.full((40, 40, 3), 255, np.uint8)
    image[10:30, 10:20] = RED
    image[10:30, 20:30] = GREEN  # half wheel, half car: a tie
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    out = _labeler().label(image, _detections([mask]), ["wheel", "car"])
    assert out.class_id.tolist() == [-1]
    assert out.data["class_name"].tolist() == [UNKNOWN]
    assert abs(out.data["clip_margin"][0]) < 1e-3  # the best class is only tied with the other
    assert 0.45 < out.data["clip_score"][0] < 0.55


def test_low_margin_accepted_when_allowed() -> None:
    image = np.full((40, 40, 3), 255, np.uint8)
    image[10:30, 10:21] = RED  # 11 red columns, 9 green: wheel ahead by a little
    image[10:30, 21:30] = GREEN
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    encoder = _stub()
    encoder.logit_scale = 1.0  # flat probabilities: wheel 0.36, car 0.31, reject 0.33
    strict = _labeler(encoder).label(image, _detections([mask]), ["wheel", "car"])
    loose = _labeler(encoder, min_margin=0.0, min_score=0.0).label(
        image, _detections([mask]), ["wheel", "car"]
    )
    assert strict.class_id.tolist() == [-1]
    assert loose.class_id.tolist() == [0]


def test_background_wins_is_unknown() -> None:
    image, car, _, blue = _scene()
    out = _labeler().label(image, _detections([blue, car]), ["wheel", "car"])
    assert out.data["class_name"].tolist() == [UNKNOWN, "car"]
    assert out.class_id.tolist() == [-1, 1]
    # "background" and "nothing" embed alike; their probabilities add up rather than split
    assert out.data["clip_margin"][0] < -0.99
    assert out.data["clip_margin"][1] > 0.5


def test_no_forced_label_even_without_background() -> None:
    image, _, _, blue = _scene()
    out = _labeler(background=(), min_score=0.9).label(image, _detections([blue]), ["wheel", "car"])
    assert out.class_id.tolist() == [-1]  # neither class fits; a tie is not a label


def test_negative_prompts_reject() -> None:
    # the car crop (4% red wheel, 96% green) is a closer match to "toy car" than to "car"
    encoder = StubEncoder({**WORDS, "toy car": (0.05, 1, 0)})
    image, car, _, _ = _scene()
    plain = _labeler(encoder).label(image, _detections([car]), ["wheel", "car"])
    assert plain.data["class_name"].tolist() == ["car"]
    vocab = Vocabulary(["wheel", "car"], negatives=["toy car"])
    out = _labeler(encoder).label(image, _detections([car]), vocab)
    assert out.data["class_name"].tolist() == [UNKNOWN]  # never "toy car", never forced "car"
    assert out.data["clip_margin"][0] < 0


def test_empty_mask_is_unknown_with_nan_scores() -> None:
    image, car, _, _ = _scene()
    empty = np.zeros_like(car)
    encoder = _stub()
    out = _labeler(encoder).label(image, _detections([empty, car]), ["wheel", "car"])
    assert out.data["class_name"].tolist() == [UNKNOWN, "car"]
    assert np.isnan(out.data["clip_score"][0]) and np.isnan(out.data["clip_margin"][0])
    assert sum(len(c) for c in encoder.image_calls) == 1  # the empty mask is not encoded


# ------------------------------------------------------------------------------ verify mode


@pytest.mark.parametrize(
    ("detector_says", "drop", "expected_names"),
    [
        # wheel mask, blue mask, ambiguous mask
        (["wheel", "car", "wheel"], False, ["wheel", UNKNOWN, "wheel"]),  # blue: background wins
        (["car", "wheel", "car"], False, ["wheel", UNKNOWN, "car"]),  # wheel relabelled; tie kept
        (["car", "wheel", "car"], True, ["car"]),  # confident disagreements dropped
        ([UNKNOWN, "wheel", "wheel"], False, ["wheel", UNKNOWN, "wheel"]),  # unknown is named
    ],
)
def test_verify_mode(detector_says: list[str], drop: bool, expected_names: list[str]) -> None:
    image, _, wheel, blue = _scene()
    image[0:20, 150:160] = RED
    image[0:20, 160:170] = GREEN
    tie = np.zeros_like(wheel)
    tie[0:20, 150:170] = True
    detections = _detections(
        [wheel, blue, tie],
        confidence=np.array([0.9, 0.8, 0.7], np.float32),
        data={"class_name": np.array(detector_says), "prompt": np.array(["a", "b", "c"])},
    )
    labeler = _labeler(mode="verify", drop_disagreeing=drop)
    out = labeler.label(image, detections, ["wheel", "car"])
    assert out.data["class_name"].tolist() == expected_names
    index = {"wheel": 0, "car": 1, UNKNOWN: -1}
    assert out.class_id.tolist() == [index[n] for n in expected_names]
    if not drop:
        assert out.data["prompt"].tolist() == ["a", "b", "c"]  # other fields kept
        assert out.confidence.tolist() == pytest.approx([0.9, 0.8, 0.7])
    # the input is not modified
    assert detections.data["class_name"].tolist() == detector_says


def test_verify_reads_class_id_when_no_names() -> None:
    image, car, wheel, _ = _scene()
    detections = _detections([wheel, car], class_id=np.array([1, 1]))
    out = _labeler(mode="verify").label(image, detections, ["wheel", "car"])
    assert out.class_id.tolist() == [0, 1]


# ------------------------------------------------------------------------ caching, batching


def test_text_embeddings_cached_per_vocabulary() -> None:
    image, car, wheel, _ = _scene()
    encoder = _stub()
    labeler = _labeler(encoder)
    detections = _detections([wheel, car])
    labeler.label(image, detections, ["wheel", "car"])
    labeler.label(image, detections, ["wheel", "car"])
    labeler.label(image, detections, Vocabulary(["wheel", "car"]))
    assert len(encoder.text_calls) == 1
    # 2 classes + 2 background texts, 2 templates each, in one call
    assert sorted(encoder.text_calls[0]) == sorted(
        f"{t} {w}."
        for w in ("wheel", "car", "background", "nothing")
        for t in ("a photo of a", "a photo of the")
    )
    labeler.label(image, detections, ["car", "wheel"])
    assert len(encoder.text_calls) == 2


def test_synonyms_are_averaged_into_their_class() -> None:
    encoder = StubEncoder({**WORDS, "automobile": (0, 0.6, 0.8)})
    labeler = _labeler(encoder)
    emb, entry_class = labeler.text_embeddings(
        Vocabulary(["wheel", "car"], synonyms={"car": ["automobile"]})
    )
    assert entry_class.tolist() == [0, 1, -1, -1]
    expected = F.normalize(torch.tensor([0.0, 1.0, 0.0]) + torch.tensor([0.0, 0.6, 0.8]), dim=0)
    torch.testing.assert_close(emb[1], expected)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))


def test_background_equal_to_a_class_is_left_out() -> None:
    labeler = _labeler(background=("background", "car"))
    _, entry_class = labeler.text_embeddings(["wheel", "car"])
    assert entry_class.tolist() == [0, 1, -1]


def test_crops_are_encoded_in_batches() -> None:
    image, car, wheel, blue = _scene()
    encoder = _stub()
    out = _labeler(encoder, batch_size=2).label(
        image, _detections([wheel, car, blue, wheel, car]), ["wheel", "car"]
    )
    assert [len(c) for c in encoder.image_calls] == [2, 2, 1]
    assert out.data["class_name"].tolist() == ["wheel", "car", UNKNOWN, "wheel", "car"]


def test_empty_detections() -> None:
    encoder = _stub()
    out = _labeler(encoder).label(np.zeros((10, 10, 3), np.uint8), sv.Detections.empty(), ["car"])
    assert len(out) == 0
    assert out.class_id.shape == (0,) and out.data["clip_score"].shape == (0,)
    assert encoder.text_calls == [] and encoder.image_calls == []


def test_is_a_labeler() -> None:
    assert isinstance(_labeler(), Labeler)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "guess"}, ValueError, "mode: expected 'name' or 'verify', got 'guess'"),
        ({"drop_disagreeing": True}, ValueError, r"drop_disagreeing=True needs mode='verify'"),
        (
            {"templates": ("a photo",)},
            ValueError,
            r"templates\[0\] = 'a photo': expected a str "
            r"with exactly one '\{\}'",
        ),
        ({"templates": "a {}"}, TypeError, "templates: expected a list of str, got the str"),
        ({"background": "nothing"}, TypeError, "background: expected a list of str, got the str"),
        ({"background": ("sky", " ")}, ValueError, r"background\[1\] = ' ': expected a non-empty"),
        ({"min_score": 1.5}, ValueError, r"min_score: expected a probability in \[0, 1\], got 1.5"),
        ({"context": -0.1}, ValueError, "context: expected a fraction >= 0"),
        ({"batch_size": 0}, ValueError, "batch_size: expected a positive integer, got 0"),
        ({"device": "cpu"}, ValueError, "device and dtype apply when the labeler loads"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _labeler(**kwargs)


def test_bad_encoder() -> None:
    with pytest.raises(
        TypeError, match="expected a ClipEncoder or a registry name, got object without encode_text"
    ):
        ClipLabeler(object())


@pytest.mark.parametrize(
    ("detections", "classes", "error", "match"),
    [
        (None, [], ValueError, "classes: expected at least one class name, got an empty list"),
        (None, ["car", "unknown"], ValueError, "'unknown' is reserved"),
        (
            sv.Detections(xyxy=np.zeros((1, 4), np.float32), mask=np.ones((1, 50, 100), bool)),
            ["car"],
            ValueError,
            r"detections.mask has shape \(1, 50, 100\), expected \(1, 100, 200\): one mask per "
            r"detection at the image's resolution",
        ),
        (
            sv.Detections(xyxy=np.array([[300, 10, 400, 50]], np.float32)),
            ["car"],
            ValueError,
            r"detections.xyxy\[0\] = \[300.0, 10.0, 400.0, 50.0\] has no area inside the 200x100 "
            r"image",
        ),
        ("boxes", ["car"], TypeError, "detections: expected supervision.Detections, got str"),
    ],
)
def test_bad_label_input(detections, classes, error: type[Exception], match: str) -> None:
    image, car, _, _ = _scene()
    if detections is None:
        detections = _detections([car])
    with pytest.raises(error, match=match):
        _labeler().label(image, detections, classes)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({}, r"mode='verify' needs the detector's classes"),
        ({"data": {"class_name": np.array(["truck"])}}, r"is 'truck', not one of the classes"),
        ({"class_id": np.array([5])}, r"detections.class_id\[0\] is 5, expected -1 or an index"),
    ],
)
def test_bad_verify_input(fields: dict, match: str) -> None:
    image, car, _, _ = _scene()
    with pytest.raises(ValueError, match=match):
        _labeler(mode="verify").label(image, _detections([car], **fields), ["wheel", "car"])


# ------------------------------------------------------------------------- real tiny models


def _coco_image_with_masks(data_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from pycocotools import mask as mask_utils

    coco = json.loads((data_dir / "coco-dev" / "annotations.json").read_text())
    info = coco["images"][0]
    anns = [a for a in coco["annotations"] if a["image_id"] == info["id"] and not a["iscrowd"]]
    h, w = info["height"], info["width"]
    masks = np.stack(
        [
            mask_utils.decode(
                mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
            ).astype(bool)
            for a in anns
        ]
    )
    image = np.array(
        Image.open(data_dir / "coco-dev" / "images" / info["file_name"]).convert("RGB")
    )
    return image, masks, [a["category_name"] for a in anns]


@pytest.mark.parametrize("name", ["clip-vit-tiny-test", "hf-clip-vit-tiny-test"])
def test_end_to_end_on_coco_with_tiny_clip(name: str, data_dir: Path) -> None:
    torch.manual_seed(0)
    image, masks, names = _coco_image_with_masks(data_dir)
    classes = [*sorted(set(names)), "zebra"]
    labeler = ClipLabeler(name, min_score=0.0, min_margin=0.0, batch_size=3)
    detections = sv.Detections(xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks)
    out = labeler.label(image, detections, classes)
    assert len(out) == len(masks)
    assert out.class_id.dtype == np.int64
    assert out.data["clip_score"].dtype == np.float32
    for cid, cname in zip(out.class_id, out.data["class_name"], strict=True):
        assert cname == (classes[cid] if cid >= 0 else UNKNOWN)
    assert ((out.data["clip_score"] >= 0) & (out.data["clip_score"] <= 1)).all()
    # The score is CLIP's softmax over the entries for the masked crop, recomputed by hand.
    encoder = labeler.encoder
    text, _ = labeler.text_embeddings(classes)
    cols = np.flatnonzero(masks[0].any(0))
    rows = np.flatnonzero(masks[0].any(1))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], float)
    crop = labeler.crop(image, box, masks[0])
    assert (crop.reshape(-1, 3) == labeler.fill_color()).all(1).any()  # blanked pixels present
    probs = torch.softmax(encoder.logit_scale * encoder.encode_images([crop]) @ text.T, dim=-1)[0]
    ref = out.class_id[0] if out.class_id[0] >= 0 else int(torch.argmax(probs[: len(classes)]))
    assert out.data["clip_score"][0] == pytest.approx(float(probs[ref]), abs=1e-5)


def test_a_class_too_long_for_clip_names_it_without_unsafe_advice(oc_clip) -> None:
    long_name = " ".join(["cat"] * 100)  # ~100 tokens, more than CLIP's 77
    labeler = ClipLabeler(oc_clip, mode="name")
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((1, 32, 32), bool)
    mask[0, 4:20, 4:20] = True
    dets = sv.Detections(xyxy=np.array([[4, 4, 19, 19]], np.float32), mask=mask)
    with pytest.raises(ValueError) as info:
        labeler.label(image, dets, ["cat", long_name])
    message = str(info.value)
    assert "is too long for the CLIP text encoder" in message and "truncate" not in message
