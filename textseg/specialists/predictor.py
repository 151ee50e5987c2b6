"""A trained specialist at inference: :func:`load_specialist` reads a folder written by
``textseg train`` (:func:`textseg.train.train_specialist`) into a :class:`Specialist`, the mask
source behind ``--specialist DIR`` of ``segment``, ``count``, ``label`` and the app.

The folder holds ``config.json`` (format :data:`CONFIG_FORMAT`: the architecture, the classes,
the settings, the history) and ``model.safetensors`` (the weights, loaded strictly: nothing is
unpickled). The networks are :mod:`textseg.specialists.nets` (SegFormer, Mask R-CNN) and
:mod:`textseg.specialists.yolo` (YOLO-seg, ultralytics).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from textseg._device import resolve_device
from textseg._image import ImageInput, to_rgb_uint8
from textseg.fields import CLASS_NAME
from textseg.vocab import Vocabulary, normalize_name

__all__ = [
    "CONFIG",
    "CONFIG_FORMAT",
    "WEIGHTS",
    "Specialist",
    "is_specialist_dir",
    "load_specialist",
    "specialist_classes",
]

#: ``config.json``'s ``format``: a folder written by ``textseg train``.
CONFIG_FORMAT = "textseg-specialist"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def is_specialist_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by :func:`train_specialist`."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == CONFIG_FORMAT
    except (OSError, ValueError):
        return False


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"specialist not found: {path}")
    config_path = path / CONFIG
    if not config_path.is_file():
        raise ValueError(
            f"{path} is not a specialist folder (no {CONFIG}); train one with `textseg train`"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format") != CONFIG_FORMAT:
        raise ValueError(
            f"{config_path}: not a textseg specialist config (format {config.get('format')!r})"
        )
    if not (path / WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{path / WEIGHTS} is missing: the training run ended before its first epoch; "
            f"resume it with `textseg train ... --resume`"
        )
    return config


def specialist_classes(path: str | os.PathLike[str]) -> list[str]:
    """The class names a specialist folder was trained on (reads ``config.json`` only)."""
    return list(_read_config(Path(path))["classes"])


class Specialist:
    """A trained specialist: images in, instance masks with class names out.

    It is a mask source for :class:`textseg.pipelines.TextSegmenter` (``masker=``; the
    ``--specialist DIR`` option of ``segment``, ``count`` and ``label``): :meth:`segment`
    answers a vocabulary with masks whose ``class_id`` indexes it, so the exports and counts
    need no special case.

    Attributes:
        path: The folder it was loaded from.
        classes: The class names it was trained on.
        kind: ``"semantic"`` (one instance per connected region of a class) or ``"instance"``.
        arch: Its registry architecture.
        config: The folder's ``config.json``.
    """

    def __init__(self, net: Any, config: Mapping[str, Any], path: Path) -> None:
        self.net = net
        self.config = dict(config)
        self.path = path
        self.classes: list[str] = list(config["classes"])
        self.kind: str = str(config["kind"])
        self.arch: str = str(config["arch"])

    def __repr__(self) -> str:
        return f"Specialist({str(self.path)!r}, {self.arch}, classes={len(self.classes)})"

    @property
    def name(self) -> str:
        return f"specialist:{self.arch}"

    def predict(self, image: ImageInput) -> sv.Detections:
        """Every instance of every trained class in one image.

        Args:
            image: A path, PIL image or ``(H, W, 3)`` uint8 RGB array.

        Returns:
            Detections: ``mask`` (N, H, W) bool, ``xyxy`` (N, 4) float32 box of the mask
            (absolute pixels), ``confidence`` (the specialist's score), ``class_id`` indexing
            :attr:`classes`, ``data["class_name"]``.
        """
        array = to_rgb_uint8(image)
        dets = self.net.predict([array])[0]
        dets.data[CLASS_NAME] = np.asarray(
            [self.classes[int(c)] for c in dets.class_id], dtype=object
        )
        return dets

    def segment(self, image: ImageInput, classes: Sequence[str] | Vocabulary) -> sv.Detections:
        """The instances of the vocabulary's classes, ``class_id`` indexing ``classes``.

        A vocabulary class matches a trained class by name or by one of its synonyms (after
        textseg's name normalisation); per-class thresholds apply to ``confidence``.

        Raises:
            ValueError: A class the specialist was not trained on, or negative prompts (a
                specialist reads no text).
        """
        vocab = Vocabulary.coerce(classes)
        if vocab.negatives:
            raise ValueError(
                f"negative prompts ({', '.join(vocab.negatives)}) need a text prompter; the "
                f"specialist {self.path} finds its trained classes only: drop --negative"
            )
        mapping = self._mapping(vocab)
        dets = self.predict(image)
        ids = mapping[np.asarray(dets.class_id, np.int64)] if len(dets) else np.zeros(0, int)
        keep = ids >= 0
        if len(dets):
            conf = np.asarray(dets.confidence, np.float64)
            keep &= conf >= vocab.thresholds_array(0.0)[np.maximum(ids, 0)]
        dets = dets[keep]
        dets.class_id = ids[keep].astype(np.int64)
        dets.data[CLASS_NAME] = np.asarray(
            [vocab.names[int(c)] for c in dets.class_id], dtype=object
        )
        return dets

    def _mapping(self, vocab: Vocabulary) -> np.ndarray:
        """Trained class index -> vocabulary class index (-1: not asked for)."""
        trained = {normalize_name(c).casefold(): k for k, c in enumerate(self.classes)}
        mapping = np.full(len(self.classes), -1, np.int64)
        for i, name in enumerate(vocab.names):
            hits = [
                trained[p.casefold()]
                for p in (name, *vocab.synonyms_of(i))
                if p.casefold() in trained
            ]
            if not hits:
                raise ValueError(
                    f"class {name!r}: the specialist {self.path} was not trained on it; it "
                    f"knows {', '.join(self.classes)} (a synonym may name one: --synonym "
                    f"{name}=CLASS)"
                )
            mapping[hits] = i
        return mapping


def load_specialist(path: str | os.PathLike[str], *, device: str = "cpu") -> Specialist:
    """Load a folder written by :func:`train_specialist` (weights loaded strictly).

    Raises:
        FileNotFoundError: The folder or its weights are missing.
        ValueError: Not a specialist folder.
        StateDictError: The weights do not fit the architecture in ``config.json``.
    """
    from textseg._hub import load_state_dict, load_strict
    from textseg.specialists.nets import build_specialist

    path = Path(path)
    config = _read_config(path)
    if config.get("family") == "yolo":
        from textseg.specialists.yolo import load_yolo_specialist

        return Specialist(load_yolo_specialist(path, config, device), config, path)
    net = build_specialist(
        config["arch"], config["classes"], **config["settings"].get("net_settings", {})
    )
    load_strict(net, load_state_dict(path / WEIGHTS), f"specialist {path}")
    net.to(resolve_device(device))
    net.eval()
    return Specialist(net, config, path)
