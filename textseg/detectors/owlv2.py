"""OWLv2 through ``transformers.Owlv2ForObjectDetection``.

Every prompt of the vocabulary (class names, synonyms, negatives) is one text query. The queries
are encoded once per :meth:`~textseg.detectors.base.DetectorBase.detect` call, the images once
per batch, and the class head scores every predicted box against every query; each box takes the
class of its best query (:mod:`textseg.detectors.base`).

OWLv2 sees a square: the image is padded on the bottom and right to a square (gray, 0.5, as in
the original implementation) and resized to the model's input size. Its boxes are fractions of
that padded square, so they are scaled by the square's side (the longer image side) and clipped to
the image, which gives boxes in the original image's pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textseg._hub import load_state_dict, load_strict
from textseg._registry import ModelCfg
from textseg.detectors.base import (
    DetectorBase,
    TextDetectorModel,
    build_net,
    check_score,
    short_repr,
)
from textseg.detectors.tokenizers import clip_tokenizer, clip_tokenizer_from_files
from textseg.vocab import Vocabulary

__all__ = ["Owlv2Detector", "build_owlv2", "load_owlv2_checkpoint", "pad_to_square"]

CLIP_MEAN = (122.770938, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.32316305)


def build_owlv2(cfg: ModelCfg) -> TextDetectorModel:
    """A random-init OWLv2 for ``cfg`` with CLIP's tokenizer (built offline), eval mode, CPU.

    ``cfg.arch`` holds ``vision`` (``Owlv2VisionConfig`` kwargs, with ``image_size`` the square
    input side), ``text`` (``Owlv2TextConfig`` kwargs) and ``projection_dim``.
    """
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    arch = cfg.arch
    config = Owlv2Config(
        text_config=dict(arch["text"]),
        vision_config=dict(arch["vision"]),
        projection_dim=int(arch["projection_dim"]),
    )
    model = Owlv2ForObjectDetection(config).eval()
    options = {"mean": tuple(cfg.mean or CLIP_MEAN), "std": tuple(cfg.std or CLIP_STD)}
    return TextDetectorModel(
        model=model, tokenizer=clip_tokenizer(), name=cfg.name, options=options
    )


def load_owlv2_checkpoint(net: TextDetectorModel, path: str | os.PathLike[str]) -> None:
    """Load a transformers OWLv2 checkpoint (file, or Hub folder with the tokenizer) strictly.

    Keys of buffers the model recomputes (``position_ids``) are dropped first.

    Raises:
        StateDictError: The weights do not fit the model.
    """
    path = Path(path)
    if path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        net.tokenizer = clip_tokenizer_from_files(path)
    state_dict = load_state_dict(path)
    expected = net.model.state_dict()
    non_persistent = {name for name, _ in net.model.named_buffers()} - set(expected)
    state_dict = {k: v for k, v in state_dict.items() if k not in non_persistent}
    load_strict(net.model, state_dict, net.name)


def pad_to_square(image: torch.Tensor, value: float) -> torch.Tensor:
    """Pad a ``(3, H, W)`` image on the bottom and right to ``(3, S, S)``, ``S = max(H, W)``."""
    _, h, w = image.shape
    side = max(h, w)
    return F.pad(image, (0, side - w, 0, side - h), value=value)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(3, S, S)`` to ``(3, size, size)``: Gaussian anti-aliasing, then bilinear, as the
    original OWLv2 pre-processing does (sigma = (factor - 1) / 2 when shrinking)."""
    factor = image.shape[-1] / size
    x = image[None]
    if factor > 1:
        sigma = (factor - 1) / 2
        radius = max(1, int(np.ceil(3 * sigma)))
        grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(grid**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0]


@dataclass(frozen=True)
class _EncodedQueries:
    embeds: torch.Tensor  # (P, D) projected text embeddings


class Owlv2Detector(DetectorBase):
    """Text -> boxes with OWLv2, every prompt as one text query, images batched.

    Args:
        model: Registry name (``"owlv2-base"``, ``"owlv2-large"``, ``"owlv2-tiny-test"``) or a
            built :class:`~textseg.detectors.base.TextDetectorModel`.
        checkpoint: Explicit weights file or folder, first in the resolution order.
        pretrained: Load weights; False gives random weights (speed measurements).
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
        box_threshold: Default minimum confidence (the transformers examples use 0.1).
        nms_threshold: IoU of the per-class NMS and of negative suppression.
        cross_class_nms_threshold: IoU of the class-agnostic NMS; None disables it.
        max_detections: Most boxes per image.
        batch_size: Images per forward pass.
        pad_value: Gray level in [0, 1] of the square padding.

    Example:
        >>> det = Owlv2Detector("owlv2-base")  # doctest: +SKIP
        >>> dets = det.detect(["a.jpg", "b.jpg"], ["cat", "remote control"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | TextDetectorModel = "owlv2-base",
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        pretrained: bool = True,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "float32",
        box_threshold: float = 0.1,
        nms_threshold: float = 0.5,
        cross_class_nms_threshold: float | None = 0.9,
        max_detections: int = 100,
        batch_size: int = 2,
        pad_value: float = 0.5,
    ) -> None:
        from transformers import Owlv2ForObjectDetection

        net = build_net(model, checkpoint=checkpoint, pretrained=pretrained)
        if not isinstance(net.model, Owlv2ForObjectDetection):
            raise TypeError(
                f"model: {net.name!r} is a {type(net.model).__name__}, not OWLv2; "
                f"use textseg.detectors.build_detector({net.name!r}) to get the right detector"
            )
        super().__init__(
            net,
            device=device,
            dtype=dtype,
            box_threshold=box_threshold,
            nms_threshold=nms_threshold,
            cross_class_nms_threshold=cross_class_nms_threshold,
            max_detections=max_detections,
            batch_size=batch_size,
        )
        self.pad_value = check_score(pad_value, "pad_value")
        config = self.model.config
        self.image_size = int(config.vision_config.image_size)
        self.max_text_len = int(config.text_config.max_position_embeddings)
        self._mean = torch.tensor(net.options["mean"], dtype=torch.float32).view(3, 1, 1) / 255.0
        self._std = torch.tensor(net.options["std"], dtype=torch.float32).view(3, 1, 1) / 255.0

    def _encode_text(self, vocab: Vocabulary) -> _EncodedQueries:
        prompts = vocab.prompts
        enc: Any = self.tokenizer(prompts, padding=True, return_tensors="pt")
        lengths = enc["attention_mask"].sum(dim=1)
        too_long = (lengths > self.max_text_len).nonzero()[:, 0].tolist()
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"prompt {i} {short_repr(prompts[i])} is "
                f"{int(lengths[i])} tokens with start/end; OWLv2's text encoder reads at most "
                f"{self.max_text_len}; shorten it"
            )
        with torch.inference_mode():
            out = self.model.owlv2.get_text_features(
                input_ids=enc["input_ids"].to(self.device),
                attention_mask=enc["attention_mask"].to(self.device),
            )
        return _EncodedQueries(out.pooler_output)

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Pad to square, resize and normalise a batch.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays of any sizes.

        Returns:
            ``(B, 3, S, S)`` pixel values on the model's device, ``S`` the model's input size.
        """
        batch = []
        for image in images:
            x = torch.tensor(image).permute(2, 0, 1).float() / 255.0
            x = _resize(pad_to_square(x, self.pad_value), self.image_size)
            batch.append((x - self._mean) / self._std)
        return torch.stack(batch).to(self.device, self.dtype)

    def _predict(
        self, images: list[np.ndarray], text: _EncodedQueries
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pixels = self.preprocess(images)
        feature_map = self.model.image_embedder(pixel_values=pixels)[0]  # (B, h, w, D)
        batch, h, w, dim = feature_map.shape
        image_feats = feature_map.reshape(batch, h * w, dim)
        queries = text.embeds.to(image_feats.dtype)[None].expand(batch, -1, -1)
        logits, _ = self.model.class_predictor(image_feats, queries, None)  # (B, N, P)
        boxes = self.model.box_predictor(image_feats, feature_map)  # (B, N, 4) cxcywh in [0, 1]
        scores = logits.float().sigmoid().cpu()
        boxes = boxes.float().cpu()
        results = []
        for b, image in enumerate(images):
            side = float(max(image.shape[:2]))
            cx, cy, bw, bh = boxes[b].unbind(-1)
            xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * side
            results.append((xyxy, scores[b]))
        return results
