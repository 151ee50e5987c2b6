"""Vocabulary: normalisation, prompt -> class mapping, thresholds, and every bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

from textseg.vocab import Vocabulary, normalize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("car", "car"),
        ("  car door ", "car door"),
        ("car\t\n  door", "car door"),
        ("Traffic  Light", "Traffic Light"),  # case is kept
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    ("classes", "synonyms", "negatives", "prompts", "prompt_class"),
    [
        (["cat"], None, (), ["cat"], [0]),
        (["cat", "dog"], None, (), ["cat", "dog"], [0, 1]),
        (
            ["car", "car door"],
            {"car": ["automobile", "sedan"]},
            ["toy car"],
            ["car", "automobile", "sedan", "car door", "toy car"],
            [0, 0, 0, 1, -1],
        ),
        (  # synonyms listed in another order than the classes; keys matched case-insensitively
            ["person", "bicycle", "car"],
            {"CAR": "auto", "person": ["human", "pedestrian"]},
            ["mannequin", "poster"],
            ["person", "human", "pedestrian", "bicycle", "car", "auto", "mannequin", "poster"],
            [0, 0, 0, 1, 2, 2, -1, -1],
        ),
    ],
)
def test_prompts_and_prompt_class(classes, synonyms, negatives, prompts, prompt_class) -> None:
    vocab = Vocabulary(classes, synonyms=synonyms, negatives=negatives)
    assert vocab.prompts == prompts
    assert vocab.prompt_class.tolist() == prompt_class
    assert vocab.prompt_class.dtype == np.int64
    assert vocab.names == list(classes)
    assert len(vocab) == len(classes) == vocab.num_classes
    assert vocab.num_negatives == len(negatives)


def test_names_are_normalised_everywhere() -> None:
    vocab = Vocabulary(
        ["  car\tdoor ", "dog"],
        synonyms={"car door": [" door  of a car "]},
        negatives=[" toy  dog"],
    )
    assert vocab.names == ["car door", "dog"]
    assert vocab.prompts == ["car door", "door of a car", "dog", "toy dog"]
    assert vocab.synonyms_of(0) == ["door of a car"]
    assert vocab.negatives == ["toy dog"]


def test_thresholds() -> None:
    vocab = Vocabulary(["person", "car"], thresholds={"Car": 0.6})
    assert vocab.threshold_for(0, 0.3) == 0.3
    assert vocab.threshold_for(1, 0.3) == 0.6
    np.testing.assert_allclose(vocab.thresholds_array(0.25), [0.25, 0.6])
    with pytest.raises(ValueError, match=re.escape("class_id: expected 0 <= class_id < 2, got 2")):
        vocab.threshold_for(2, 0.3)


def test_coerce() -> None:
    vocab = Vocabulary(["a", "b"])
    assert Vocabulary.coerce(vocab) is vocab
    assert Vocabulary.coerce(["a", "b"]) == vocab
    assert Vocabulary.coerce(("a", "b")) == vocab
    assert Vocabulary.coerce(np.array(["a", "b"])) == vocab
    assert Vocabulary(["a"], negatives=["x"]) != Vocabulary(["a"])
    assert hash(Vocabulary(["a", "b"])) == hash(vocab)
    assert "negatives=['x']" in repr(Vocabulary(["a"], negatives=["x"]))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            dict(classes=[]),
            ValueError,
            "classes: expected at least one class name, got an empty list",
        ),
        (
            dict(classes="cat"),
            TypeError,
            "classes: expected a list of str, got the str 'cat'; use ['cat']",
        ),
        (dict(classes={"cat", "dog"}), TypeError, "classes: expected a list of str, got a set"),
        (dict(classes={"cat": 0}), TypeError, "classes: expected a list of str, got dict"),
        (dict(classes=None), TypeError, "classes: expected a list of str, got NoneType"),
        (dict(classes=["cat", 3]), TypeError, "classes[1]: expected a str, got int 3"),
        (dict(classes=["cat", None]), TypeError, "classes[1]: expected a str, got NoneType None"),
        (
            dict(classes=["cat", "  "]),
            ValueError,
            "classes[1]: name is empty or only whitespace and punctuation ('  '); remove it",
        ),
        (
            dict(classes=["", "cat"]),
            ValueError,
            "classes[0]: name is empty or only whitespace and punctuation (''); remove it",
        ),
        (
            dict(classes=["cat", "dog", "Cat "]),
            ValueError,
            "classes[2]: 'Cat' duplicates classes[0] 'cat'",
        ),
        (
            dict(classes=["car  door", "car door"]),
            ValueError,
            "classes[1]: 'car door' duplicates classes[0] 'car door'",
        ),
        (
            dict(classes=["car"], synonyms={"truck": ["lorry"]}),
            ValueError,
            "synonyms: key 'truck' is not one of the classes ['car']",
        ),
        (
            dict(classes=["car", "auto"], synonyms={"car": ["Auto"]}),
            ValueError,
            "synonyms['car'][0]: 'Auto' duplicates classes[1] 'auto'",
        ),
        (
            dict(classes=["car"], synonyms={"car": ["car"]}),
            ValueError,
            "synonyms['car'][0]: 'car' duplicates classes[0] 'car'",
        ),
        (
            dict(classes=["car"], synonyms={"car": [" "]}),
            ValueError,
            "synonyms['car'][0]: name is empty or only whitespace",
        ),
        (
            dict(classes=["car"], synonyms={"car": [1]}),
            TypeError,
            "synonyms['car'][0]: expected a str, got int 1",
        ),
        (
            dict(classes=["car"], synonyms=["auto"]),
            TypeError,
            "synonyms: expected a dict {class name: [prompts]}, got list",
        ),
        (
            dict(classes=["car"], negatives=["CAR"]),
            ValueError,
            "negatives[0]: 'CAR' equals classes[0] 'car'; a prompt cannot be both a class and a "
            "negative",
        ),
        (
            dict(classes=["car"], synonyms={"car": ["auto"]}, negatives=["auto"]),
            ValueError,
            "negatives[0]: 'auto' equals synonyms['car'][0] 'auto'",
        ),
        (
            dict(classes=["car"], negatives=["toy", "toy"]),
            ValueError,
            "negatives[1]: 'toy' duplicates negatives[0] 'toy'",
        ),
        (
            dict(classes=["car"], negatives="toy"),
            TypeError,
            "negatives: expected a list of str, got the str 'toy'; use ['toy']",
        ),
        (
            dict(classes=["car"], negatives=[""]),
            ValueError,
            "negatives[0]: name is empty or only whitespace",
        ),
        (
            dict(classes=["car"], thresholds={"bus": 0.5}),
            ValueError,
            "thresholds: key 'bus' is not one of the classes ['car']",
        ),
        (
            dict(classes=["car"], thresholds={"car": 1.5}),
            ValueError,
            "thresholds['car']: expected a number in [0, 1], got 1.5",
        ),
        (
            dict(classes=["car"], thresholds={"car": float("nan")}),
            ValueError,
            "thresholds['car']: expected a number in [0, 1], got nan",
        ),
        (
            dict(classes=["car"], thresholds={"car": "0.5"}),
            TypeError,
            "thresholds['car']: expected a number in [0, 1], got str '0.5'",
        ),
        (
            dict(classes=["car"], thresholds={"car": True}),
            TypeError,
            "thresholds['car']: expected a number in [0, 1], got bool True",
        ),
    ],
)
def test_bad_input(kwargs: dict, error: type[Exception], message: str) -> None:
    classes = kwargs.pop("classes")
    with pytest.raises(error, match=re.escape(message)):
        Vocabulary(classes, **kwargs)


def test_prompt_class_is_read_only() -> None:
    vocab = Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="read-only"):
        vocab.prompt_class[0] = 5


@pytest.mark.parametrize("other", ["dog.", "Dog?", " dog! ", "dog ;"])
def test_punctuation_does_not_make_another_class(other):
    with pytest.raises(ValueError, match=r"duplicates classes\[0\] 'dog'"):
        Vocabulary(["dog", other])
    assert Vocabulary([other]).names == ["dog" if other.strip()[0] == "d" else "Dog"]


def test_unknown_is_reserved():
    with pytest.raises(ValueError, match=r"classes\[1\]: 'Unknown' is reserved"):
        Vocabulary(["dog", "Unknown"])
