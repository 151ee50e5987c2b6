"""Grounding DINO through ``transformers.GroundingDinoForObjectDetection`` (no compiled op).

Many classes in one pass, as a contract rather than a string convention:

1. The prompts of the vocabulary (class names, synonyms, negatives) are joined into one caption,
   ``"cat . dog . car door ."``. Each prompt's token span is computed from the tokenizer's
   character offsets (:func:`build_captions`), so nothing is ever parsed back from sub-words.
2. The model gives, per query box, one logit per caption token. Each box is scored against each
   prompt from the sigmoid of its span's tokens (:func:`prompt_scores_from_logits`: the mean by
   default, or the max), and takes the class of its best prompt (:mod:`textseg.detectors.base`).
3. Captions longer than the text encoder's 256 tokens are split between prompts into several
   captions, run as one batch; their boxes are merged before NMS. A single prompt too long for
   the encoder is an error.

Thresholds follow the reference: ``box_threshold`` (0.35) is the minimum confidence of a box;
``text_threshold`` (0.25) is the minimum token probability inside a prompt's span for that
prompt to match at all (in the reference, the tokens kept in the phrase).

The characters ``.`` and ``?`` delimit phrases for the model (the transformers model splits the
caption's attention at their token ids), so inside a prompt they are replaced by spaces in the
caption; the prompt reported in ``data["prompt"]`` is the one given.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from textseg._hub import StateDictError, load_state_dict, load_strict, resolve_weights
from textseg._registry import ModelCfg
from textseg.detectors.base import (
    DetectorBase,
    TextDetectorModel,
    build_net,
    check_score,
    short_repr,
)
from textseg.detectors.convert_groundingdino import fit_hf_state_dict, official_to_hf_state_dict
from textseg.detectors.tokenizers import bert_tokenizer_from_file, offline_bert_tokenizer
from textseg.vocab import Vocabulary

__all__ = [
    "CaptionChunk",
    "GroundingDinoDetector",
    "build_captions",
    "build_grounding_dino",
    "load_hf_checkpoint",
    "load_official_checkpoint",
    "prompt_scores_from_logits",
    "resize_shape",
]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

_DELIMITERS = re.compile(r"[.?]")
_SPACES = re.compile(r"\s+")


# ---------------------------------------------------------------------- building and loading
def build_grounding_dino(cfg: ModelCfg) -> TextDetectorModel:
    """A random-init Grounding DINO for ``cfg`` with an offline tokenizer, in eval mode, on CPU.

    ``cfg.arch`` holds ``swin`` (``SwinConfig`` kwargs), ``text`` (``BertConfig`` kwargs),
    ``transformer`` (``GroundingDinoConfig`` kwargs), ``shortest_edge`` and ``longest_edge`` (the
    resize rule of the input). Published weights and their tokenizer are loaded afterwards by the
    entry's loader (:func:`load_hf_checkpoint`, :func:`load_official_checkpoint`).
    """
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        SwinConfig,
    )

    arch = cfg.arch
    swin = SwinConfig(**arch["swin"], out_indices=[2, 3, 4])
    text = BertConfig(**arch["text"])
    config = GroundingDinoConfig(
        backbone_config=swin, text_config=text, **arch.get("transformer", {})
    )
    model = GroundingDinoForObjectDetection(config).eval()
    options = {
        "shortest_edge": int(arch["shortest_edge"]),
        "longest_edge": int(arch["longest_edge"]),
        "mean": tuple(cfg.mean or IMAGENET_MEAN),
        "std": tuple(cfg.std or IMAGENET_STD),
    }
    return TextDetectorModel(
        model=model, tokenizer=offline_bert_tokenizer(), name=cfg.name, options=options
    )


def load_hf_checkpoint(net: TextDetectorModel, path: str | os.PathLike[str]) -> None:
    """Load a transformers-layout checkpoint (file, or Hub folder with ``vocab.txt``) strictly.

    Raises:
        StateDictError: The weights do not fit the model (missing, unexpected, mis-shaped keys).
    """
    path = Path(path)
    if path.is_dir() and (path / "vocab.txt").is_file():
        net.tokenizer = bert_tokenizer_from_file(path / "vocab.txt")
    state_dict = fit_hf_state_dict(load_state_dict(path), net.model)
    load_strict(net.model, state_dict, net.name)


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors" or path.is_dir():
        return load_state_dict(path)
    # The official .pth files may carry the training arguments next to the weights.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling fails with many types; one clear line
            raise StateDictError(f"cannot read a state dict from {path}: {err}") from err
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StateDictError(f"{path} does not hold a state dict of tensors under 'model'")
    return obj


def load_official_checkpoint(
    net: TextDetectorModel, path: str | os.PathLike[str], *, vocab: ModelCfg | None = None
) -> None:
    """Load an official ``groundingdino_*.pth`` by converting it to the transformers layout.

    Args:
        net: The built model.
        path: The official checkpoint file.
        vocab: Where BERT's ``vocab.txt`` comes from (resolved like any weights); None keeps the
            tokenizer the model was built with (test models).

    Raises:
        StateDictError: The file is unreadable or the converted weights do not fit.
        ValueError: The file has keys of no official Grounding DINO.
    """
    state_dict = official_to_hf_state_dict(_read_official(Path(path)))
    load_strict(net.model, state_dict, net.name)
    if vocab is not None:
        net.tokenizer = bert_tokenizer_from_file(resolve_weights(vocab))


# ---------------------------------------------------------------------- captions and spans
@dataclass(frozen=True)
class CaptionChunk:
    """One caption fed to the text encoder, and where each of its prompts lies in it.

    Attributes:
        caption: The text, e.g. ``"cat . car door ."``.
        prompt_ids: Indices into the vocabulary's prompts, in caption order.
        spans: ``[start, end)`` token positions of each prompt in ``input_ids`` (``[CLS]`` is 0).
        input_ids: Token ids with ``[CLS]`` and ``[SEP]``.
    """

    caption: str
    prompt_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    input_ids: tuple[int, ...]


def _caption_text(prompt: str) -> str:
    return _SPACES.sub(" ", _DELIMITERS.sub(" ", prompt)).strip()


def build_captions(
    prompts: Sequence[str], tokenizer: Any, max_len: int = 256
) -> list[CaptionChunk]:
    """Join ``prompts`` into as few captions of at most ``max_len`` tokens as needed.

    Prompts keep their order; a caption holds whole prompts only. Each prompt's token span is
    found from the tokenizer's character offsets.

    Args:
        prompts: The vocabulary's prompts.
        tokenizer: A fast BERT tokenizer (``return_offsets_mapping`` support).
        max_len: The text encoder's maximum length, special tokens included.

    Raises:
        ValueError: A prompt has no text once ``.``/``?`` are removed, or is longer than
            ``max_len - 3`` tokens (the caption also needs ``[CLS]``, ``.`` and ``[SEP]``).
    """
    texts = [_caption_text(p) for p in prompts]
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        if not text:
            raise ValueError(
                f"prompt {i} {prompt!r}: nothing left for Grounding DINO once '.' and '?' (its "
                f"phrase separators) are removed; use words"
            )
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    for i, (prompt, n) in enumerate(zip(prompts, lengths)):
        if n + 3 > max_len:
            raise ValueError(
                f"prompt {i} {short_repr(prompt)} is {n} tokens; "
                f"Grounding DINO's text encoder reads at most {max_len - 3} tokens per prompt "
                f"({max_len} with [CLS], '.' and [SEP]); shorten it"
            )

    groups: list[list[int]] = []
    used = max_len  # forces a first group
    for i, n in enumerate(lengths):
        if used + n + 1 > max_len:
            groups.append([])
            used = 2  # [CLS] and [SEP]
        groups[-1].append(i)
        used += n + 1

    chunks = []
    for group in groups:
        caption, ranges = "", []
        for i in group:
            start = len(caption)
            caption += texts[i]
            ranges.append((start, len(caption)))
            caption += " . "
        caption = caption.rstrip()
        enc = tokenizer(caption, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        spans = []
        for (a, b), i in zip(ranges, group):
            inside = [t for t, (s, e) in enumerate(offsets) if e > s and s >= a and e <= b]
            if not inside or inside != list(range(inside[0], inside[-1] + 1)):
                raise RuntimeError(f"token span of prompt {prompts[i]!r} not found in {caption!r}")
            spans.append((inside[0], inside[-1] + 1))
        if len(ids) > max_len:
            raise RuntimeError(f"caption of {len(ids)} tokens exceeds {max_len}: {caption!r}")
        chunks.append(CaptionChunk(caption, tuple(group), tuple(spans), tuple(ids)))
    return chunks


def prompt_scores_from_logits(
    token_logits: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    *,
    reduce: Literal["mean", "max"] = "mean",
    text_threshold: float = 0.0,
) -> torch.Tensor:
    """Score every box against every prompt from its span's token logits.

    Args:
        token_logits: ``(Q, L)`` logits of ``Q`` boxes over the caption's ``L`` token positions
            (``-inf`` at padding).
        spans: ``[start, end)`` token positions of each prompt.
        reduce: ``"mean"`` (default) averages the sigmoid over the span, so that "car door"
            needs both words and a car alone scores higher on "car" than on "car door";
            ``"max"`` takes the best token, as the reference's box score does.
        text_threshold: A prompt whose best token probability is below this scores 0 (no match).

    Returns:
        ``(Q, len(spans))`` float32 scores in [0, 1].
    """
    probs = token_logits.float().sigmoid()
    out = probs.new_zeros((probs.shape[0], len(spans)))
    for p, (start, end) in enumerate(spans):
        span = probs[:, start:end]
        best = span.amax(dim=1)
        score = span.mean(dim=1) if reduce == "mean" else best
        out[:, p] = torch.where(best >= text_threshold, score, torch.zeros_like(score))
    return out


# ---------------------------------------------------------------------- images
def resize_shape(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """``(height, width)`` after resizing the shorter side to ``shortest_edge``, unless that
    makes the longer side exceed ``longest_edge``, in which case the longer side is fitted.

    The arithmetic of transformers' (and the official) Grounding DINO pre-processing: the
    shorter side is rounded, the longer one truncated (``int``), and an image whose shorter
    side already has the size keeps its size.
    """
    short, long = min(height, width), max(height, width)
    size, raw = int(shortest_edge), None
    if long / short * size > longest_edge:
        raw = longest_edge * short / long
        size = round(raw)
    if short == size:
        return height, width
    scale = raw if raw is not None else size
    if width < height:
        return max(1, int(scale * height / width)), max(1, size)
    return max(1, size), max(1, int(scale * width / height))


@dataclass(frozen=True)
class _EncodedText:
    chunks: list[CaptionChunk]
    input_ids: torch.Tensor  # (C, L) long
    attention_mask: torch.Tensor  # (C, L) long
    num_prompts: int


class GroundingDinoDetector(DetectorBase):
    """Text -> boxes with Grounding DINO, every class in one pass.

    Args:
        model: Registry name (``"grounding-dino-tiny"``, ``"grounding-dino-base"``,
            ``"grounding-dino-swint-ogc"``, ``"grounding-dino-swinb-cogcoor"``,
            ``"grounding-dino-tiny-test"``...; see ``textseg.list_models("detector")``) or a
            built :class:`~textseg.detectors.base.TextDetectorModel`.
        checkpoint: Explicit weights file or folder, first in the resolution order.
        pretrained: Load weights; False gives random weights and the offline tokenizer (for
            speed measurements).
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
        box_threshold: Default minimum confidence (reference: 0.35).
        text_threshold: Minimum token probability within a prompt's span (reference: 0.25).
        span_reduce: How a prompt's tokens make its score: ``"mean"`` or ``"max"``.
        nms_threshold: IoU of the per-class NMS and of negative suppression.
        cross_class_nms_threshold: IoU of the class-agnostic NMS; None disables it.
        max_detections: Most boxes per image.
        batch_size: Images per forward pass (times the number of captions when the prompts
            need more than one).

    Example:
        >>> det = GroundingDinoDetector("grounding-dino-tiny")  # doctest: +SKIP
        >>> dets = det.detect("street.jpg", ["person", "car", "car door"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | TextDetectorModel = "grounding-dino-tiny",
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        pretrained: bool = True,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "float32",
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        span_reduce: Literal["mean", "max"] = "mean",
        nms_threshold: float = 0.5,
        cross_class_nms_threshold: float | None = 0.9,
        max_detections: int = 100,
        batch_size: int = 2,
    ) -> None:
        from transformers import GroundingDinoForObjectDetection

        net = build_net(model, checkpoint=checkpoint, pretrained=pretrained)
        if not isinstance(net.model, GroundingDinoForObjectDetection):
            raise TypeError(
                f"model: {net.name!r} is a {type(net.model).__name__}, not Grounding DINO; "
                f"use textseg.detectors.build_detector({net.name!r}) to get the right detector"
            )
        if span_reduce not in ("mean", "max"):
            raise ValueError(f"span_reduce: expected 'mean' or 'max', got {span_reduce!r}")
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
        self.text_threshold = check_score(text_threshold, "text_threshold")
        self.span_reduce = span_reduce
        self.max_text_len = int(self.model.config.max_text_len)
        opts = net.options
        self._sizes = (int(opts["shortest_edge"]), int(opts["longest_edge"]))
        self._mean = torch.tensor(opts["mean"], dtype=torch.float32).view(3, 1, 1) / 255.0
        self._std = torch.tensor(opts["std"], dtype=torch.float32).view(3, 1, 1) / 255.0

    def _encode_text(self, vocab: Vocabulary) -> _EncodedText:
        chunks = build_captions(vocab.prompts, self.tokenizer, self.max_text_len)
        length = max(len(c.input_ids) for c in chunks)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(chunks), length), pad, dtype=torch.long)
        mask = torch.zeros((len(chunks), length), dtype=torch.long)
        for c, chunk in enumerate(chunks):
            ids[c, : len(chunk.input_ids)] = torch.tensor(chunk.input_ids)
            mask[c, : len(chunk.input_ids)] = 1
        return _EncodedText(chunks, ids, mask, len(vocab.prompts))

    def preprocess(self, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize, normalise and pad a batch.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays of any sizes.

        Returns:
            ``pixel_values`` ``(B, 3, H', W')`` float and ``pixel_mask`` ``(B, H', W')`` long
            (1 on image pixels, 0 on the bottom/right padding), on the model's device.
        """
        resized = []
        for image in images:
            h, w = image.shape[:2]
            nh, nw = resize_shape(h, w, *self._sizes)
            x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
            x = F.interpolate(
                x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
            )
            resized.append((x[0] - self._mean) / self._std)
        height = max(x.shape[1] for x in resized)
        width = max(x.shape[2] for x in resized)
        pixels = torch.zeros((len(resized), 3, height, width))
        mask = torch.zeros((len(resized), height, width), dtype=torch.long)
        for i, x in enumerate(resized):
            pixels[i, :, : x.shape[1], : x.shape[2]] = x
            mask[i, : x.shape[1], : x.shape[2]] = 1
        return pixels.to(self.device, self.dtype), mask.to(self.device)

    def _predict(
        self, images: list[np.ndarray], text: _EncodedText
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pixels, pixel_mask = self.preprocess(images)
        batch, chunks = len(images), len(text.chunks)
        # Row b * chunks + c is image b with caption c: all captions in one forward pass.
        outputs = self.model(
            pixel_values=pixels.repeat_interleave(chunks, dim=0),
            pixel_mask=pixel_mask.repeat_interleave(chunks, dim=0),
            input_ids=text.input_ids.repeat(batch, 1).to(self.device),
            attention_mask=text.attention_mask.repeat(batch, 1).to(self.device),
            token_type_ids=torch.zeros_like(text.input_ids).repeat(batch, 1).to(self.device),
        )
        logits = outputs.logits.float().cpu()
        boxes = outputs.pred_boxes.float().cpu()
        results = []
        for b, image in enumerate(images):
            h, w = image.shape[:2]
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            all_boxes, all_scores = [], []
            for c, chunk in enumerate(text.chunks):
                row = b * chunks + c
                cx, cy, bw, bh = boxes[row].unbind(-1)
                xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
                all_boxes.append(xyxy * scale)
                scores = torch.zeros((xyxy.shape[0], text.num_prompts))
                scores[:, list(chunk.prompt_ids)] = prompt_scores_from_logits(
                    logits[row],
                    chunk.spans,
                    reduce=self.span_reduce,
                    text_threshold=self.text_threshold,
                )
                all_scores.append(scores)
            results.append((torch.cat(all_boxes), torch.cat(all_scores)))
        return results
