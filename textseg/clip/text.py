"""Text embeddings of a vocabulary: templates, class ensembles and "reject" texts, once for all.

The labeler, the CLIP prompters, the CLIP mask selector and the text-prompt trainer all embed
a vocabulary the same way, here:

- every prompt of a class (its name and its synonyms) is put into every template
  (``"a photo of a {}."``), each templated text is embedded and L2-normalised, and the class's
  embedding is the renormalised mean over all of them;
- the vocabulary's negative prompts and the background texts are embedded the same way, one
  entry each, as "reject" entries (a background text equal to a class prompt is left out, so
  "sky" can still be a class).

:class:`TextEmbedder` caches the result per vocabulary.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from textseg.vocab import ClassesInput, Vocabulary, normalize_name

if TYPE_CHECKING:
    from textseg.clip.encoders import ClipEncoder

__all__ = [
    "DEFAULT_BACKGROUND",
    "DEFAULT_TEMPLATES",
    "TextEmbedder",
    "VocabularyEmbeddings",
    "check_background",
    "check_templates",
    "embed_texts",
]

#: Prompt templates averaged per class, in the style of CLIP's ImageNet ensemble.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
)

#: Texts that stand for "none of the vocabulary": stuff and emptiness.
DEFAULT_BACKGROUND: tuple[str, ...] = (
    "background",
    "nothing",
    "texture",
    "empty space",
    "ground",
    "wall",
    "sky",
)

#: How many vocabularies a :class:`TextEmbedder` keeps.
_CACHE_SIZE = 8


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """``templates`` as a tuple, each with exactly one ``{}``.

    Raises:
        TypeError: A bare string, or items that are not strings.
        ValueError: No template, or a template without exactly one ``{}``.
    """
    if isinstance(templates, str):
        raise TypeError(f"templates: expected a list of str, got the str {templates!r}")
    templates = tuple(templates)
    if not templates:
        raise ValueError("templates: expected at least one template, e.g. 'a photo of a {}.'")
    for i, template in enumerate(templates):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"templates[{i}] = {template!r}: expected a str with exactly one '{{}}' where "
                f"the class name goes, e.g. 'a photo of a {{}}.'"
            )
    return templates


def check_background(background: Sequence[str]) -> tuple[str, ...]:
    """``background`` as a tuple of normalised, non-empty texts (may be empty).

    Raises:
        TypeError: A bare string.
        ValueError: An empty or non-string text.
    """
    if isinstance(background, str):
        raise TypeError(f"background: expected a list of str, got the str {background!r}")
    texts = []
    for i, text in enumerate(background):
        if not isinstance(text, str) or not normalize_name(text):
            raise ValueError(f"background[{i}] = {text!r}: expected a non-empty str")
        texts.append(normalize_name(text))
    return tuple(texts)


def embed_texts(
    clip: ClipEncoder, groups: Sequence[Sequence[str]], templates: Sequence[str]
) -> torch.Tensor:
    """``(G, D)`` float32 L2-normalised embeddings, one per group of texts: the renormalised
    mean over every text of the group put into every template.

    Raises:
        ValueError: A templated text is too long for CLIP's text encoder; the message names the
            text and the template (cutting a class name would make it another class).
    """
    templated = [t.format(text) for group in groups for text in group for t in templates]
    try:
        emb = clip.encode_text(templated).float()
    except ValueError as err:
        named = _too_long_error(clip, [text for group in groups for text in group], templates)
        if named is None:
            raise
        raise named from err
    emb = F.normalize(emb, dim=-1)
    counts = [len(group) * len(templates) for group in groups]
    means = torch.stack([part.mean(dim=0) for part in torch.split(emb, counts)])
    return F.normalize(means, dim=-1)


def _too_long_error(
    clip: ClipEncoder, texts: Sequence[str], templates: Sequence[str]
) -> ValueError | None:
    """The error naming the first text too long for CLIP in one of ``templates`` (found by
    encoding one templated text at a time, so only on the error path), or None."""
    for text in texts:
        for template in templates:
            try:
                clip.encode_text([template.format(text)])
            except ValueError:
                shown = text if len(text) <= 60 else text[:60] + "..."
                return ValueError(
                    f"text {shown!r} ({len(text)} characters) is too long for the CLIP text "
                    f"encoder: in the template {template!r} it has more than the model's "
                    f"{clip.context_length} tokens (start and end included); expected a "
                    f"shorter class name, synonym or negative"
                )
    return None


@dataclass(frozen=True)
class VocabularyEmbeddings:
    """One vocabulary's text embeddings.

    Attributes:
        classes: ``(C, D)`` float32 L2-normalised, one per class (name and synonyms ensembled).
        rejects: ``(R, D)``: the negative prompts, then the background texts.
        reject_texts: The R reject texts.
    """

    classes: torch.Tensor
    rejects: torch.Tensor
    reject_texts: tuple[str, ...]

    @property
    def entries(self) -> torch.Tensor:
        """``(C + R, D)``: the classes, then the rejects."""
        return torch.cat([self.classes, self.rejects])

    @property
    def entry_class(self) -> np.ndarray:
        """``(C + R,)`` int64 class id per entry, -1 for rejects."""
        return np.concatenate(
            [np.arange(len(self.classes)), np.full(len(self.rejects), -1)]
        ).astype(np.int64)


class TextEmbedder:
    """Embeds vocabularies with one CLIP model, templates and background texts (cached).

    Args:
        clip: The CLIP encoder.
        templates: Templates with one ``{}``.
        background: Reject texts; may be empty.
    """

    def __init__(
        self,
        clip: ClipEncoder,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        background: Sequence[str] = DEFAULT_BACKGROUND,
    ) -> None:
        self.clip = clip
        self.templates = check_templates(templates)
        self.background = check_background(background)
        self._cache: OrderedDict[tuple, VocabularyEmbeddings] = OrderedDict()

    def __call__(self, classes: ClassesInput) -> VocabularyEmbeddings:
        """The embeddings of ``classes`` (names or a :class:`~textseg.vocab.Vocabulary`).

        Raises:
            TypeError, ValueError: A bad class list, or a templated text too long for CLIP.
        """
        vocab = Vocabulary.coerce(classes)
        groups = [(name, *vocab.synonyms_of(i)) for i, name in enumerate(vocab.names)]
        taken = {p.casefold() for group in groups for p in group}
        rejects = tuple(vocab.negatives) + tuple(
            b for b in self.background if b.casefold() not in taken
        )
        key = (tuple(groups), rejects)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        emb = embed_texts(self.clip, [*groups, *((r,) for r in rejects)], self.templates)
        out = VocabularyEmbeddings(emb[: len(groups)], emb[len(groups) :], rejects)
        self._cache[key] = out
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return out
