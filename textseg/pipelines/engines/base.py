"""What every engine shares: the item to segment, how to build the segmenter (picklable), and
one image-or-batch step that turns any per-image failure into that image's error line."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from textseg.pipelines.text_segmenter import Result, TextSegmenter
from textseg.vocab import Vocabulary

__all__ = ["Item", "Outcome", "SegmenterSpec", "error_line", "segment_each", "segmenter_spec"]


@dataclass(frozen=True)
class Item:
    """One image of a plan: its COCO image id (None: the writer's next free id), COCO file name
    and path on disk."""

    image_id: int | None
    file_name: str
    path: str


#: What an engine yields per item: the result, or the one-line reason the image failed.
Outcome = tuple[Item, "Result | str"]


@dataclass(frozen=True)
class SegmenterSpec:
    """How to build the segmenter, picklable so that Ray actors can build their own copy.

    ``device`` None (preset only) is decided once the engine knows its resources: ``"cuda"`` for
    Ray actors given GPUs, else ``"cpu"`` (:meth:`on_device`).
    """

    preset: str | None
    options: Mapping[str, Any]
    factory: Callable[[], TextSegmenter] | None
    seed: int
    device: str | None = None

    def on_device(self, gpus: float) -> SegmenterSpec:
        """This spec with its device decided for a worker given ``gpus`` GPUs."""
        if self.factory is not None or self.device is not None:
            return self
        return replace(self, device="cuda" if gpus > 0 else "cpu")

    def build(self) -> TextSegmenter:
        """Build the segmenter under :attr:`seed` (the caller's RNG state is kept)."""
        # Components without weights (tiny-test, pretrained=False) are random-initialised: a
        # fixed seed gives every actor and every resumed run the same model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.factory is not None:
                segmenter = self.factory()
            else:
                device = self.device if self.device is not None else "cpu"
                segmenter = TextSegmenter.from_preset(self.preset, device=device, **self.options)
        if not isinstance(segmenter, TextSegmenter):
            raise TypeError(
                f"segmenter_factory: expected a function returning a TextSegmenter, got "
                f"{type(segmenter).__name__}"
            )
        return segmenter

    def keeps_unknown(self) -> bool:
        """Whether a preset is asked to keep unnamed masks (they get an "unknown" category)."""
        return bool(self.options.get("keep_unknown", False))


def segmenter_spec(
    preset: str,
    preset_kwargs: Mapping[str, Any] | None,
    factory: Callable[[], TextSegmenter] | None,
    device: str | None,
    engine: str,
    seed: int,
) -> SegmenterSpec:
    """The spec of a preset (checked: an unknown name lists the presets) or of a factory.

    Raises:
        TypeError: ``factory`` is not callable.
        ValueError: An unknown preset, or a factory together with preset options.
    """
    if factory is not None:
        if not callable(factory):
            raise TypeError(
                f"segmenter_factory: expected a function returning a TextSegmenter, got "
                f"{type(factory).__name__}"
            )
        if preset_kwargs or device is not None:
            raise ValueError(
                "segmenter_factory builds the segmenter itself: drop preset_kwargs and device, "
                "or drop the factory and use preset="
            )
        return SegmenterSpec(None, {}, factory, seed)
    from textseg.pipelines.presets import get_preset

    get_preset(preset)  # unknown name -> ValueError listing the presets
    options = dict(preset_kwargs or {})
    if "device" in options:
        raise ValueError("preset_kwargs: pass the device as label_folder(device=...)")
    if device is None and engine == "local":
        device = "cpu"
    # Ray with device=None: each actor's device follows the GPUs it gets (ray_outcomes).
    return SegmenterSpec(preset, options, None, seed, device)


def segment_each(
    segmenter: TextSegmenter, ready: Sequence[tuple[Any, np.ndarray]], vocab: Vocabulary
) -> Iterator[tuple[Any, Result | str]]:
    """``(key, result or error line)`` for each image: a batch first, and when it fails, one
    image at a time, so that one bad image (any error: an extreme aspect ratio, a decoder
    failure) is named, recorded and skipped, and the others are labelled. With
    ``TEXTSEG_DEBUG`` set, the first error is raised instead."""
    debug = bool(os.environ.get("TEXTSEG_DEBUG"))
    try:
        images = [image for _, image in ready]
        results = segmenter.segment(images, vocab, batch_size=len(images))
    except Exception as err:
        if debug:
            raise
        if len(ready) == 1:
            yield ready[0][0], error_line(err)
            return
        for key, image in ready:
            try:
                yield key, segmenter.segment(image, vocab)
            except Exception as one:
                yield key, error_line(one)
        return
    yield from ((key, result) for (key, _), result in zip(ready, results))


def error_line(err: BaseException) -> str:
    """``"Type: first line of the message"``: one line for errors.csv and the terminal."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
