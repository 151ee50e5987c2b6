"""The text -> boxes interface and the post-processing every detector shares.

A detector turns one image (or a list of images) and a class list into ``supervision.Detections``
with boxes in the original image's pixels. All prompts of the vocabulary (class names, synonyms,
negatives) are scored in one pass per image batch; a detector only has to produce, per image,
candidate boxes and a ``(num_boxes, num_prompts)`` score matrix. :func:`postprocess_detections`
then applies the same rules everywhere:

1. Each box takes its best-scoring prompt; its class is that prompt's class, its confidence that
   prompt's score. Synonyms are thereby merged into their class.
2. A box whose best prompt is a negative is dropped. So is a box that overlaps (IoU above
   ``nms_threshold``) a higher-scoring box whose best prompt is a negative.
3. A box is kept if its confidence reaches its class's threshold (``Vocabulary.thresholds``, else
   ``box_threshold``).
4. Non-maximum suppression within each class at ``nms_threshold`` (this also removes the
   duplicates that several synonyms of one class would give).
5. Across classes: class-agnostic NMS at ``cross_class_nms_threshold`` (default 0.9), so one object
   is not reported under two classes with near-identical boxes, while a "car door" inside a
   "car" (low IoU) survives. ``None`` turns this off.
6. At most ``max_detections`` boxes, highest confidence first.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import supervision as sv
import torch
from torchvision.ops import batched_nms, box_iou, nms

from textseg._device import resolve_device, resolve_dtype
from textseg._image import ImageInput, to_rgb_uint8
from textseg.fields import CLASS_NAME
from textseg.vocab import ClassesInput, Vocabulary

__all__ = [
    "Detector",
    "DetectorBase",
    "PostprocessConfig",
    "TextDetectorModel",
    "build_net",
    "check_score",
    "empty_detections",
    "postprocess_detections",
    "short_repr",
]


@runtime_checkable
class Detector(Protocol):
    """Text -> boxes.

    ``detect(image, classes)`` returns ``sv.Detections`` for one image (a path, PIL image or
    ``(H, W, 3)`` uint8 RGB array); ``detect([image, ...], classes)`` returns a list of them, one
    per image, in order. Detections hold ``xyxy`` ``(N, 4)`` float32 XYXY absolute pixels of the
    original image, ``confidence`` ``(N,)`` float32, ``class_id`` ``(N,)`` int (index into the
    vocabulary's class names), ``data["class_name"]`` and ``data["prompt"]`` (the prompt that
    matched: the class name or one of its synonyms), both ``(N,)`` str arrays.
    """

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: ClassesInput,
        *,
        box_threshold: float | None = None,
    ) -> sv.Detections | list[sv.Detections]: ...


@dataclass
class TextDetectorModel:
    """What a detector's registry entry builds: the network and its tokenizer.

    Attributes:
        model: The transformers model, in eval mode.
        tokenizer: The matching transformers tokenizer (offline-built for test models and for
            ``pretrained=False``; read from the checkpoint folder for published weights).
        name: Registry name.
        options: Pre-processing settings of this variant (input sizes), read by the detector.
    """

    model: torch.nn.Module
    tokenizer: Any
    name: str
    options: dict[str, Any]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's state dict (what ``create_model(..., checkpoint=PATH)`` loads back)."""
        return self.model.state_dict()


def build_net(
    model: str | TextDetectorModel,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    tiny: bool = False,
) -> TextDetectorModel:
    """``model`` as a built network: a registry name is built (and its weights loaded); with
    ``tiny`` its tiny random-init variant (unless a ``checkpoint`` is given).

    Raises:
        TypeError: ``model`` is neither a name nor a TextDetectorModel, or the name is no
            text detector.
        ValueError: Unknown name (the message lists the valid ones), or ``checkpoint`` given
            with an already built model.
    """
    if isinstance(model, TextDetectorModel):
        if checkpoint is not None:
            raise ValueError("checkpoint: only with a registry name, not with a built model")
        return model
    if not isinstance(model, str):
        raise TypeError(
            f"model: expected a registry name or a TextDetectorModel, got {type(model).__name__}"
        )
    from textseg._hub import create_model

    net = create_model(
        model, task="detector", pretrained=pretrained, checkpoint=checkpoint, tiny=tiny
    )
    if not isinstance(net, TextDetectorModel):
        raise TypeError(f"model: registry entry {model!r} does not build a text detector")
    return net


def short_repr(text: str, limit: int = 60) -> str:
    """``repr`` of ``text``, cut to ``limit`` characters with ``...`` for error messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_score(value: object, what: str) -> float:
    """``value`` as a float in [0, 1], or a ValueError/TypeError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what}: expected a number in [0, 1], got {type(value).__name__}")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ValueError(f"{what}: expected a number in [0, 1], got {value}")
    return number


@dataclass(frozen=True)
class PostprocessConfig:
    """The shared post-processing rules (see the module docstring).

    Attributes:
        box_threshold: Minimum confidence of classes without their own threshold.
        nms_threshold: IoU above which boxes of one class suppress each other, and above which a
            higher-scoring negative box suppresses a positive one.
        cross_class_nms_threshold: IoU of the class-agnostic NMS across classes; None disables it.
        max_detections: Most boxes returned per image.
    """

    box_threshold: float
    nms_threshold: float = 0.5
    cross_class_nms_threshold: float | None = 0.9
    max_detections: int = 100

    def __post_init__(self) -> None:
        check_score(self.box_threshold, "box_threshold")
        check_score(self.nms_threshold, "nms_threshold")
        if self.cross_class_nms_threshold is not None:
            check_score(self.cross_class_nms_threshold, "cross_class_nms_threshold")
        if isinstance(self.max_detections, bool) or not isinstance(self.max_detections, int):
            raise TypeError(
                f"max_detections: expected a positive int, got {type(self.max_detections).__name__}"
            )
        if self.max_detections < 1:
            raise ValueError(f"max_detections: expected a positive int, got {self.max_detections}")


def empty_detections() -> sv.Detections:
    """Detections with no boxes but the same fields as a non-empty result."""
    return sv.Detections(
        xyxy=np.zeros((0, 4), dtype=np.float32),
        confidence=np.zeros((0,), dtype=np.float32),
        class_id=np.zeros((0,), dtype=np.int64),
        data={CLASS_NAME: np.array([], dtype=str), "prompt": np.array([], dtype=str)},
    )


def postprocess_detections(
    boxes: torch.Tensor | np.ndarray,
    prompt_scores: torch.Tensor | np.ndarray,
    vocab: Vocabulary,
    *,
    image_size: tuple[int, int],
    config: PostprocessConfig,
) -> sv.Detections:
    """Turn candidate boxes scored against every prompt into the final detections of one image.

    Args:
        boxes: ``(N, 4)`` XYXY absolute pixels of the original image; clipped to the image here.
        prompt_scores: ``(N, P)`` scores in [0, 1] of each box against each prompt of
            ``vocab.prompts`` (same order). A score of 0 means "no match".
        vocab: The vocabulary the prompts came from.
        image_size: ``(height, width)`` of the original image.
        config: Thresholds and limits.

    Returns:
        Detections sorted by confidence (highest first); see :class:`Detector` for the fields.

    Raises:
        ValueError: Shapes do not fit each other or the vocabulary.
    """
    boxes_t = torch.as_tensor(boxes).detach().to("cpu", torch.float32)
    scores_t = torch.as_tensor(prompt_scores).detach().to("cpu", torch.float32)
    num_prompts = len(vocab.prompts)
    if boxes_t.ndim != 2 or boxes_t.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4), got {tuple(boxes_t.shape)}")
    if scores_t.shape != (boxes_t.shape[0], num_prompts):
        raise ValueError(
            f"prompt_scores: expected shape ({boxes_t.shape[0]}, {num_prompts}) (boxes x prompts), "
            f"got {tuple(scores_t.shape)}"
        )
    if boxes_t.shape[0] == 0:
        return empty_detections()
    height, width = image_size
    boxes_t = boxes_t.clone()
    boxes_t[:, 0::2] = boxes_t[:, 0::2].clamp(0.0, float(width))
    boxes_t[:, 1::2] = boxes_t[:, 1::2].clamp(0.0, float(height))

    score, prompt = scores_t.max(dim=1)
    prompt_class = torch.from_numpy(np.array(vocab.prompt_class))
    class_id = prompt_class[prompt]
    valid = (
        torch.isfinite(boxes_t).all(dim=1)
        & torch.isfinite(score)
        & (boxes_t[:, 2] > boxes_t[:, 0])
        & (boxes_t[:, 3] > boxes_t[:, 1])
    )
    thresholds = torch.from_numpy(vocab.thresholds_array(config.box_threshold)).float()
    positive = valid & (class_id >= 0) & (score >= thresholds[class_id.clamp(min=0)]) & (score > 0)
    pos_idx = positive.nonzero()[:, 0]
    if pos_idx.numel() == 0:
        return empty_detections()

    # A box whose best prompt is a negative is never output; if it scores higher than a positive
    # box and overlaps it, that positive box goes too (e.g. "toy car" beats "car" on the toy).
    negative = valid & (class_id < 0) & (score > score[pos_idx].min())
    neg_idx = negative.nonzero()[:, 0]
    if neg_idx.numel():
        iou = box_iou(boxes_t[pos_idx], boxes_t[neg_idx])
        beaten = score[neg_idx][None, :] > score[pos_idx][:, None]
        pos_idx = pos_idx[~((iou > config.nms_threshold) & beaten).any(dim=1)]
        if pos_idx.numel() == 0:
            return empty_detections()

    keep = batched_nms(boxes_t[pos_idx], score[pos_idx], class_id[pos_idx], config.nms_threshold)
    idx = pos_idx[keep]
    if config.cross_class_nms_threshold is not None and idx.numel() > 1:
        idx = idx[nms(boxes_t[idx], score[idx], config.cross_class_nms_threshold)]
    idx = idx[: config.max_detections]

    names = vocab.names
    prompts = vocab.prompts
    class_ids = class_id[idx].numpy().astype(np.int64)
    return sv.Detections(
        xyxy=boxes_t[idx].numpy().astype(np.float32),
        confidence=score[idx].numpy().astype(np.float32),
        class_id=class_ids,
        data={
            CLASS_NAME: np.array([names[c] for c in class_ids], dtype=str),
            "prompt": np.array([prompts[p] for p in prompt[idx].tolist()], dtype=str),
        },
    )


class DetectorBase(abc.ABC):
    """The shared half of the transformers detectors: input handling, batching, post-processing.

    Subclasses encode the vocabulary once per call (:meth:`_encode_text`) and score a batch of
    images against it (:meth:`_predict`); this class converts the images, batches them, and applies
    :func:`postprocess_detections`.

    Args:
        net: The built model and tokenizer.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
        box_threshold: Default minimum confidence (per-class thresholds of the vocabulary win).
        nms_threshold: IoU of the per-class NMS and of negative suppression.
        cross_class_nms_threshold: IoU of the class-agnostic NMS; None disables it.
        max_detections: Most boxes per image.
        batch_size: Images per forward pass.
    """

    def __init__(
        self,
        net: TextDetectorModel,
        *,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "float32",
        box_threshold: float,
        nms_threshold: float = 0.5,
        cross_class_nms_threshold: float | None = 0.9,
        max_detections: int = 100,
        batch_size: int = 4,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.net = net
        self.model = net.model.to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()
        self.tokenizer = net.tokenizer
        self.postprocess = PostprocessConfig(
            box_threshold=box_threshold,
            nms_threshold=nms_threshold,
            cross_class_nms_threshold=cross_class_nms_threshold,
            max_detections=max_detections,
        )
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        return self.net.name

    @abc.abstractmethod
    def _encode_text(self, vocab: Vocabulary) -> Any:
        """Everything about the prompts that does not depend on the images (tokens, embeddings)."""

    @abc.abstractmethod
    def _predict(
        self, images: list[np.ndarray], text: Any
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: ``(N, 4)`` XYXY pixel boxes and ``(N, P)`` prompt scores in [0, 1]."""

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: ClassesInput,
        *,
        box_threshold: float | None = None,
    ) -> sv.Detections | list[sv.Detections]:
        """Detect every class of ``classes`` in one image or a list of images.

        Args:
            images: One image (path, PIL image, ``(H, W, 3)`` uint8 RGB array) or a list or tuple
                of them, of any sizes.
            classes: Class names, or a :class:`~textseg.vocab.Vocabulary` with synonyms,
                negatives and per-class thresholds.
            box_threshold: Overrides the detector's default minimum confidence for this call.

        Returns:
            For one image, ``sv.Detections``; for a list, a list of them in the same order. See
            :class:`Detector` for the fields.

        Raises:
            TypeError, ValueError: Bad class list, image, threshold, or a prompt too long for the
                text encoder.
        """
        vocab = Vocabulary.coerce(classes)
        config = self.postprocess
        if box_threshold is not None:
            config = PostprocessConfig(
                box_threshold=check_score(box_threshold, "box_threshold"),
                nms_threshold=config.nms_threshold,
                cross_class_nms_threshold=config.cross_class_nms_threshold,
                max_detections=config.max_detections,
            )
        single = not isinstance(images, (list, tuple))
        image_list = [images] if single else list(images)
        if not image_list:
            return []
        text = self._encode_text(vocab)
        results: list[sv.Detections] = []
        for start in range(0, len(image_list), self.batch_size):
            arrays = [
                to_rgb_uint8(image, name="image" if single else f"images[{start + i}]")
                for i, image in enumerate(image_list[start : start + self.batch_size])
            ]
            with torch.inference_mode():
                raw = self._predict(arrays, text)
            for array, (boxes, scores) in zip(arrays, raw):
                results.append(
                    postprocess_detections(
                        boxes, scores, vocab, image_size=array.shape[:2], config=config
                    )
                )
        return results[0] if single else results
