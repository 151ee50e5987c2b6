"""The one normalisation of class lists, shared by detectors, CLIP prompters and labelers.

A :class:`Vocabulary` says what to look for and how each text prompt maps to an output class:

- ``classes``: the class names, in output order (``class_id`` is the index into this list). Each
  class name is itself a prompt.
- ``synonyms``: extra prompts per class (``{"car": ["automobile", "sedan"]}``); every match of a
  synonym is reported as its class, so several prompts never give duplicate classes.
- ``negatives``: prompts whose matches are suppressed (``["toy car", "car picture"]``); they never
  appear in the output.
- ``thresholds``: a minimum score per class (``{"person": 0.5}``), overriding the caller's default.

Normalisation, applied to every class name, synonym and negative: leading and trailing whitespace
and sentence punctuation (``. ? ! , ; :``, which text detectors use as separators) are stripped
and runs of internal whitespace (spaces, tabs, newlines) become one space. Case is kept as given,
but names are compared case-insensitively: ``"Car"``, ``"car"`` and ``"car."`` are duplicates.
The name :data:`UNKNOWN` is reserved for masks no class fits.
Every prompt (class name, synonym or negative) must be unique, so each prompt maps to exactly one
class or to "negative".

Example:
    >>> vocab = Vocabulary(["car", "car door"], synonyms={"car": ["automobile"]},
    ...                    negatives=["toy car"], thresholds={"car door": 0.4})
    >>> vocab.prompts
    ['car', 'automobile', 'car door', 'toy car']
    >>> vocab.prompt_class.tolist()
    [0, 0, 1, -1]
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Union

import numpy as np

__all__ = ["UNKNOWN", "ClassesInput", "Vocabulary", "normalize_name"]

#: ``class_name`` of a detection no class fits confidently; its ``class_id`` is -1. Reserved:
#: no class may be called this.
UNKNOWN = "unknown"

_WHITESPACE = re.compile(r"\s+")
_EDGE_PUNCTUATION = ".?!,;:"

#: What the public functions accept as a class list.
ClassesInput = Union["Vocabulary", Sequence[str]]


def normalize_name(name: str) -> str:
    """Strip whitespace and sentence punctuation from both ends of ``name`` and collapse
    internal whitespace runs to one space (case is kept)."""
    return _WHITESPACE.sub(" ", name).strip().strip(_EDGE_PUNCTUATION).strip()


def _check_name(item: object, what: str) -> str:
    """Normalise one name; ``what`` names it in errors (e.g. ``"classes[2]"``)."""
    if not isinstance(item, str):
        raise TypeError(f"{what}: expected a str, got {type(item).__name__} {item!r}")
    name = normalize_name(item)
    if not name:
        raise ValueError(
            f"{what}: name is empty or only whitespace and punctuation ({item!r}); remove it"
        )
    return name


def _str_list(value: object, what: str) -> list[object]:
    """``value`` as a list of items, refusing a bare string (a common slip for ``[string]``)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what}: expected a list of str, got the str {value!r}; use [{value!r}]")
    if isinstance(value, (set, frozenset)):
        raise TypeError(
            f"{what}: expected a list of str, got a {type(value).__name__}, whose order "
            f"is arbitrary; pass a list so that the order is defined"
        )
    if isinstance(value, Mapping) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{what}: expected a list of str, got {type(value).__name__}")
    return list(value)


class Vocabulary:
    """Class names, their synonyms, negative prompts and per-class thresholds, normalised.

    Args:
        classes: Class names in output order; ``class_id`` indexes this list.
        synonyms: ``{class name: [extra prompts]}``; each extra prompt reports as its class.
            Keys are matched to class names case-insensitively after normalisation. A single
            string value is taken as one synonym.
        negatives: Prompts whose matches are suppressed.
        thresholds: ``{class name: minimum score in [0, 1]}``; classes not listed use the
            caller's default.

    Raises:
        TypeError: ``classes`` is not a list (a bare string included), or an item is not a str;
            a threshold is not a number.
        ValueError: The class list is empty; a name is empty or whitespace; two prompts are equal
            after normalisation (case-insensitive); a synonym or threshold names an unknown class;
            a negative equals a class name or synonym; a threshold is outside [0, 1]. Messages
            name the offending item and its index.
    """

    __slots__ = ("_names", "_negatives", "_prompt_class", "_prompts", "_synonyms", "_thresholds")

    def __init__(
        self,
        classes: Sequence[str],
        *,
        synonyms: Mapping[str, Sequence[str] | str] | None = None,
        negatives: Sequence[str] = (),
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        items = _str_list(classes, "classes")
        if not items:
            raise ValueError("classes: expected at least one class name, got an empty list")
        names = [_check_name(item, f"classes[{i}]") for i, item in enumerate(items)]
        # folded prompt -> description of where it was first seen, for duplicate errors
        seen: dict[str, str] = {}

        def claim(prompt: str, where: str) -> None:
            key = prompt.casefold()
            if key in seen:
                raise ValueError(
                    f"{where}: {prompt!r} duplicates {seen[key]} (names are compared "
                    f"case-insensitively after whitespace and punctuation normalisation); "
                    f"remove one of them"
                )
            seen[key] = f"{where} {prompt!r}"

        for i, name in enumerate(names):
            if name.casefold() == UNKNOWN:
                raise ValueError(
                    f"classes[{i}]: {name!r} is reserved for masks no class fits; rename that "
                    f"class (e.g. 'unknown object')"
                )
            claim(name, f"classes[{i}]")
        index = {name.casefold(): i for i, name in enumerate(names)}

        syn: list[list[str]] = [[] for _ in names]
        if synonyms is not None:
            if not isinstance(synonyms, Mapping):
                raise TypeError(
                    f"synonyms: expected a dict {{class name: [prompts]}}, "
                    f"got {type(synonyms).__name__}"
                )
            for key, values in synonyms.items():
                cls = _check_name(key, f"synonyms key {key!r}")
                class_id = index.get(cls.casefold())
                if class_id is None:
                    raise ValueError(
                        f"synonyms: key {key!r} is not one of the classes {names}; "
                        f"add it to classes or fix the spelling"
                    )
                values_list = (
                    [values] if isinstance(values, str) else _str_list(values, f"synonyms[{key!r}]")
                )
                for j, value in enumerate(values_list):
                    where = f"synonyms[{key!r}][{j}]"
                    prompt = _check_name(value, where)
                    claim(prompt, where)
                    syn[class_id].append(prompt)

        negs: list[str] = []
        for i, item in enumerate(_str_list(negatives, "negatives")):
            where = f"negatives[{i}]"
            prompt = _check_name(item, where)
            if prompt.casefold() in seen and not seen[prompt.casefold()].startswith("negatives"):
                raise ValueError(
                    f"{where}: {prompt!r} equals {seen[prompt.casefold()]}; a prompt cannot be "
                    f"both a class and a negative"
                )
            claim(prompt, where)
            negs.append(prompt)

        thr: dict[int, float] = {}
        if thresholds is not None:
            if not isinstance(thresholds, Mapping):
                raise TypeError(
                    f"thresholds: expected a dict {{class name: score}}, "
                    f"got {type(thresholds).__name__}"
                )
            for key, value in thresholds.items():
                cls = _check_name(key, f"thresholds key {key!r}")
                class_id = index.get(cls.casefold())
                if class_id is None:
                    raise ValueError(
                        f"thresholds: key {key!r} is not one of the classes {names}; "
                        f"add it to classes or fix the spelling"
                    )
                if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                    raise TypeError(
                        f"thresholds[{key!r}]: expected a number in [0, 1], "
                        f"got {type(value).__name__} {value!r}"
                    )
                if not (math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0):
                    raise ValueError(
                        f"thresholds[{key!r}]: expected a number in [0, 1], got {value}"
                    )
                thr[class_id] = float(value)

        prompts: list[str] = []
        prompt_class: list[int] = []
        for class_id, name in enumerate(names):
            for prompt in (name, *syn[class_id]):
                prompts.append(prompt)
                prompt_class.append(class_id)
        prompts.extend(negs)
        prompt_class.extend([-1] * len(negs))

        self._names = tuple(names)
        self._synonyms = tuple(tuple(s) for s in syn)
        self._negatives = tuple(negs)
        self._thresholds = thr
        self._prompts = tuple(prompts)
        self._prompt_class = np.asarray(prompt_class, dtype=np.int64)
        self._prompt_class.setflags(write=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def coerce(cls, classes: ClassesInput) -> Vocabulary:
        """``classes`` as a Vocabulary: a Vocabulary is returned as is, a list is wrapped.

        Raises:
            TypeError, ValueError: As for the constructor.
        """
        if isinstance(classes, Vocabulary):
            return classes
        return cls(classes)

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> list[str]:
        """Normalised class names; ``class_id`` indexes this list."""
        return list(self._names)

    @property
    def num_classes(self) -> int:
        return len(self._names)

    @property
    def negatives(self) -> list[str]:
        """Normalised negative prompts."""
        return list(self._negatives)

    def synonyms_of(self, class_id: int) -> list[str]:
        """The extra prompts of class ``class_id`` (without the class name itself)."""
        return list(self._synonyms[self._check_id(class_id)])

    @property
    def prompts(self) -> list[str]:
        """Every prompt: for each class its name then its synonyms, then the negatives."""
        return list(self._prompts)

    @property
    def prompt_class(self) -> np.ndarray:
        """``(len(prompts),)`` int64: the class id of each prompt, ``-1`` for negatives."""
        return self._prompt_class

    @property
    def num_negatives(self) -> int:
        return len(self._negatives)

    def threshold_for(self, class_id: int, default: float) -> float:
        """The minimum score of class ``class_id``: its own threshold, else ``default``."""
        return self._thresholds.get(self._check_id(class_id), float(default))

    def thresholds_array(self, default: float) -> np.ndarray:
        """``(num_classes,)`` float64: :meth:`threshold_for` of every class."""
        return np.asarray([self.threshold_for(i, default) for i in range(len(self._names))])

    def _check_id(self, class_id: int) -> int:
        if not 0 <= int(class_id) < len(self._names):
            raise ValueError(
                f"class_id: expected 0 <= class_id < {len(self._names)}, got {class_id}"
            )
        return int(class_id)

    # ------------------------------------------------------------------ dunder
    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (
            self._names == other._names
            and self._synonyms == other._synonyms
            and self._negatives == other._negatives
            and self._thresholds == other._thresholds
        )

    def __hash__(self) -> int:
        return hash((self._names, self._synonyms, self._negatives, tuple(self._thresholds.items())))

    def __repr__(self) -> str:
        parts = [repr(list(self._names))]
        syn = {self._names[i]: list(s) for i, s in enumerate(self._synonyms) if s}
        if syn:
            parts.append(f"synonyms={syn!r}")
        if self._negatives:
            parts.append(f"negatives={list(self._negatives)!r}")
        if self._thresholds:
            thr = {self._names[i]: v for i, v in self._thresholds.items()}
            parts.append(f"thresholds={thr!r}")
        return f"Vocabulary({', '.join(parts)})"
