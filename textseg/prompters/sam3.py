"""SAM 3 (promptable concept segmentation) as a prompter: every prompt -> all its instances.

Why a prompter and not a detector: a :class:`~textseg.detectors.base.Detector` returns boxes,
which SAM would then cut again, throwing SAM 3's own masks away. :class:`Sam3Prompter` returns
the pipeline's one result type for "what to segment in this image", :class:`ClassPrompts`, with
SAM 3's instance masks attached (:class:`~textseg.prompters.base.PromptMasks`, 288x288
probabilities) and its boxes as the prompts. :func:`textseg.pipelines.decode_prompts` resizes
those masks instead of running SAM (``cuts_masks = True``), then attaches classes, scores and
fields as for every preset; labelling, mask de-duplication, counts and exports follow unchanged.
The boxes stay available as SAM prompts (a SAM core can re-cut or refine them).

One image, many concepts, one encoder pass:

1. the image is encoded once (``get_vision_features``: the ViT and the FPN, most of SAM 3's
   time; the last image's features are kept, so asking again costs no encoder pass);
2. every prompt of the vocabulary (class names, synonyms, negatives) is tokenized and encoded
   by the text encoder in one batch;
3. the detector (geometry encoder, DETR encoder and decoder, presence head, mask head) runs on
   the cached vision features for ``concept_batch_size`` prompts at a time, the vision features
   broadcast along the batch (not copied). SAM 3 takes one concept per query set, so this is the
   same computation as one ``Sam3Model`` call per prompt, batched (``tests/prompters/
   test_sam3.py`` checks it against transformers' own ``Sam3Processor`` path).

Scores follow transformers' ``Sam3Processor.post_process_instance_segmentation``: an instance's
score is ``sigmoid(logit) * sigmoid(presence logit)``, instances above the threshold are kept,
masks are ``sigmoid(mask logits)`` resized bilinearly to the image and thresholded at 0.5.
Then the vocabulary's rules, as for the detectors (:mod:`textseg.detectors.base`):

- per-class thresholds (``Vocabulary.thresholds``, else ``box_threshold``);
- an instance of a negative prompt suppresses the positive instances it beats and overlaps
  (box IoU above ``nms_threshold``);
- instances of one class found by different prompts (a class name and its synonyms) suppress
  each other at ``nms_threshold``; instances of one prompt are SAM 3's own, de-duplicated by its
  one-to-one matching, and never suppress each other;
- across classes, near-identical boxes (IoU above ``cross_class_nms_threshold``) keep the
  higher-scoring instance.

Exemplars (:class:`Exemplar`): boxes drawn on the image meaning "more like this" (positive) or
"not this" (negative), given to SAM 3's geometry encoder together with the class's text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textseg._device import resolve_device, resolve_dtype
from textseg._image import ImageInput, to_rgb_uint8
from textseg.fields import PRESENCE_SCORE
from textseg.prompters.base import ClassPrompts, PromptMasks
from textseg.sam.modeling.sam3 import Sam3Net
from textseg.sam.prompts import Prompts
from textseg.vocab import ClassesInput, Vocabulary

__all__ = ["Exemplar", "Sam3Output", "Sam3Prompter", "exemplar_rows"]

_DATA_KEYS: dict[str, tuple[tuple[int, ...], Any]] = {
    "prompt": ((), str),
    "box": ((4,), np.float32),
    PRESENCE_SCORE: ((), np.float32),
}
_EXEMPLAR = re.compile(
    r"^(?P<neg>neg:)?\s*(?P<box>[^:]+?)\s*(?::\s*(?P<cls>.+?))?\s*$", re.IGNORECASE
)
#: Label of a padded box row (transformers' Sam3Processor convention).
_PAD = -10


@dataclass(frozen=True)
class Exemplar:
    """A box on the image meaning "more like this" (positive) or "not this" (negative).

    Attributes:
        box: ``(x0, y0, x1, y1)`` XYXY absolute pixels of the image it is drawn on.
        class_name: The class it is an example of; None: the only class of the vocabulary.
        positive: False for a negative example.
    """

    box: tuple[float, float, float, float]
    class_name: str | None = None
    positive: bool = True

    def __post_init__(self) -> None:
        try:
            box = tuple(float(v) for v in self.box)
        except (TypeError, ValueError):
            raise ValueError(
                f"Exemplar.box: expected four numbers x0, y0, x1, y1, got {self.box!r}"
            ) from None
        if len(box) != 4 or not np.isfinite(box).all():
            raise ValueError(
                f"Exemplar.box: expected four finite numbers x0, y0, x1, y1, got {box}"
            )
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(
                f"Exemplar.box: expected x1 > x0 and y1 > y0 (XYXY pixels), got {list(box)}"
            )
        object.__setattr__(self, "box", box)

    @classmethod
    def parse(cls, text: str) -> Exemplar:
        """``"[neg:]x0,y0,x1,y1[:class]"`` (the ``--exemplar`` option), e.g. ``"10,20,200,220:dog"``
        or ``"neg:300,40,380,120:dog"``.

        Raises:
            ValueError: Not of that form (the message shows it).
        """
        match = _EXEMPLAR.match(str(text))
        parts = match["box"].split(",") if match else []
        if match is None or len(parts) != 4:
            raise ValueError(
                f"exemplar: expected [neg:]X0,Y0,X1,Y1[:CLASS] (pixels, e.g. 10,20,200,220:dog), "
                f"got {text!r}"
            )
        try:
            box = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"exemplar: expected four numbers in [neg:]X0,Y0,X1,Y1[:CLASS], got {text!r}"
            ) from None
        return cls(box, match["cls"] or None, positive=not match["neg"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sam3Output:
    """SAM 3's raw answer for one image and P prompts (what ``Sam3Model`` returns, per prompt).

    Attributes:
        scores: ``(P, Q)`` instance scores, ``sigmoid(logit) * presence``.
        presence: ``(P,)`` presence scores, ``sigmoid(presence logit)``.
        boxes: ``(P, Q, 4)`` XYXY boxes as fractions of the image.
        mask_index: ``(K, 2)`` (prompt, query) of the K masks kept.
        mask_logits: ``(K, h, w)`` their mask logits over the whole image (h = w = 288).
    """

    scores: torch.Tensor
    presence: torch.Tensor
    boxes: torch.Tensor
    mask_index: torch.Tensor
    mask_logits: torch.Tensor

    def masks_of(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``(N, h, w)`` mask logits of the given (prompt, query) pairs.

        Raises:
            ValueError: A pair whose mask was not kept.
        """
        q = self.scores.shape[1]
        where = {
            int(k): i
            for i, k in enumerate((self.mask_index[:, 0] * q + self.mask_index[:, 1]).tolist())
        }
        wanted = (prompt * q + query).tolist()
        missing = [k for k in wanted if k not in where]
        if missing:
            raise ValueError(
                f"masks_of: {len(missing)} requested masks were not kept (mask_threshold)"
            )
        return self.mask_logits[torch.tensor([where[k] for k in wanted], dtype=torch.long)]


class Sam3Prompter:
    """Text (and exemplar boxes) -> all instances, with SAM 3's masks (see the module docstring).

    Args:
        model: Registry name (``"sam3"``, ``"sam3-litetext-s0"``, ``"sam3-tiny-test"``...; task
            ``"sam3"``) or a built :class:`~textseg.sam.modeling.sam3.Sam3Net`.
        checkpoint: Explicit weights file or folder, first in the resolution order.
        pretrained: Load weights; False gives random weights (speed measurements).
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
        box_threshold: Minimum instance score of classes without their own threshold (SAM 3's
            default 0.5).
        nms_threshold: Box IoU above which a synonym's instance or a beaten instance of a
            negative prompt suppresses another.
        cross_class_nms_threshold: Box IoU above which instances of two classes are one object
            (the lower score goes); None keeps both.
        concept_batch_size: Prompts run through the detector at once (default 4 on CPU, 16 on
            CUDA); memory grows with it (the mask head's output is 200 x 288 x 288 per prompt).
        exemplars: :class:`Exemplar` boxes given with every image (meant for one image, or for
            images that share a framing, e.g. a fixed camera).

    Example:
        >>> prompter = Sam3Prompter("sam3-tiny-test")  # doctest: +SKIP
        >>> found = prompter.prompts("street.jpg", ["car", "person"])  # doctest: +SKIP
        >>> found.masks.to_dense((480, 640)).shape  # doctest: +SKIP
    """

    #: The prompts come with their masks: the pipeline does not decode them with SAM.
    cuts_masks = True

    def __init__(
        self,
        model: str | Sam3Net = "sam3",
        *,
        checkpoint: str | None = None,
        pretrained: bool = True,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "float32",
        box_threshold: float = 0.5,
        nms_threshold: float = 0.5,
        cross_class_nms_threshold: float | None = 0.9,
        concept_batch_size: int | None = None,
        exemplars: Sequence[Exemplar] = (),
    ) -> None:
        from transformers import Sam3ImageProcessor

        if isinstance(model, str):
            from textseg._hub import create_model

            net = create_model(model, task="sam3", pretrained=pretrained, checkpoint=checkpoint)
        elif isinstance(model, Sam3Net):
            net = model
        else:
            raise TypeError(
                f"model: expected a SAM 3 registry name (textseg.list_models('sam3')) or a "
                f"Sam3Net, got {type(model).__name__}"
            )
        torch_device = resolve_device(device)
        net.model.to(device=torch_device, dtype=resolve_dtype(dtype)).eval()
        self.net = net
        for name, value in (("box_threshold", box_threshold), ("nms_threshold", nms_threshold)):
            _check_unit(value, name)
        if cross_class_nms_threshold is not None:
            _check_unit(cross_class_nms_threshold, "cross_class_nms_threshold")
        if concept_batch_size is not None and (
            isinstance(concept_batch_size, bool)
            or not isinstance(concept_batch_size, int)
            or concept_batch_size < 1
        ):
            raise ValueError(
                f"concept_batch_size: expected a positive integer, got {concept_batch_size!r}"
            )
        self.box_threshold = float(box_threshold)
        self.nms_threshold = float(nms_threshold)
        self.cross_class_nms_threshold = cross_class_nms_threshold
        self.concept_batch_size = concept_batch_size or (16 if torch_device.type == "cuda" else 4)
        self.exemplars = tuple(exemplars)
        for i, item in enumerate(self.exemplars):
            if not isinstance(item, Exemplar):
                raise TypeError(
                    f"exemplars[{i}]: expected textseg.prompters.sam3.Exemplar, got "
                    f"{type(item).__name__}"
                )
        size = net.image_size
        self.image_processor = Sam3ImageProcessor(size={"height": size, "width": size})
        self._last: tuple[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Sam3Prompter({self.net.name})"

    @property
    def device(self) -> torch.device:
        return next(self.net.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.model.parameters()).dtype

    def share_backbone(self, sam: Any) -> bool:
        """Let a SAM 3 tracker core use this model's ViT backbone instead of its own copy.

        SAM 3's checkpoint holds one backbone for the concept model and the tracker (each with
        its own FPN neck); loaded as two models it would be two identical copies (~1.8 GB in
        float32). Called by the presets when both come from the same weights.

        Returns:
            True when shared; False when ``sam`` is not a SAM 3 tracker core or the backbones
            differ in shape.
        """
        from textseg.sam.backends.sam3 import Sam3TrackerBackend

        backend = getattr(sam, "backend", None)
        if not isinstance(backend, Sam3TrackerBackend):
            return False
        mine = self.net.model.vision_encoder.backbone
        theirs = backend.model.vision_encoder.backbone
        shapes = {k: v.shape for k, v in mine.state_dict().items()}
        if shapes != {k: v.shape for k, v in theirs.state_dict().items()}:
            return False
        a, b = next(mine.parameters()), next(theirs.parameters())
        if (a.device, a.dtype) != (b.device, b.dtype):
            return False
        backend.model.vision_encoder.backbone = mine
        return True

    # ------------------------------------------------------------------ model stages
    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> Any:
        """SAM 3's vision features of one ``(H, W, 3)`` uint8 RGB image (``Sam3Model.
        get_vision_features``: FPN levels and their position encodings, batch 1), preprocessed
        by transformers' ``Sam3ImageProcessor``. The last image's features are kept."""
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
        digest.update(repr(image.shape).encode())
        key = digest.hexdigest()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        writable = image if image.flags.writeable else image.copy()  # torch wants writable
        pixels = self.image_processor(images=writable, return_tensors="pt")["pixel_values"]
        vision = self.net.model.get_vision_features(pixel_values=pixels.to(self.device, self.dtype))
        self._last = (key, vision)
        return vision

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> tuple[Any, torch.Tensor]:
        """The text encoder's output (``pooler_output`` ``(P, 32, C)``) and the ``(P, 32)``
        attention mask of ``texts``, tokenized and padded as transformers' ``Sam3Processor``
        does, in one batch.

        Raises:
            ValueError: A prompt longer than the 32-token context.
        """
        context = self.net.context_length
        lengths = [len(ids) for ids in self.net.tokenizer(list(texts))["input_ids"]]
        for text, length in zip(texts, lengths, strict=True):
            if length > context:
                raise ValueError(
                    f"prompt {text!r} is {length} tokens; SAM 3 reads at most {context} "
                    f"(start and end included): shorten it"
                )
        tokens = self.net.tokenizer(
            list(texts), padding="max_length", max_length=context, return_tensors="pt"
        )
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        return self.net.model.get_text_features(input_ids=ids, attention_mask=mask), mask

    @torch.inference_mode()
    def predict_concepts(
        self,
        vision: Any,
        text: Any,
        text_mask: torch.Tensor,
        boxes: Sequence[np.ndarray | None] | None = None,
        *,
        mask_threshold: torch.Tensor | None = None,
    ) -> Sam3Output:
        """SAM 3's detector for P prompts on one image's cached vision features, batched.

        Args:
            vision: :meth:`encode_image`'s output (batch 1).
            text: :meth:`encode_text`'s output for the P prompts.
            text_mask: ``(P, 32)`` attention mask.
            boxes: Per prompt, ``(B_i, 5)`` exemplar rows ``(cx, cy, w, h, label)`` with the box
                as fractions of the image and label 1 / 0 (positive / negative), or None.
                Prompts with and without boxes run in separate batches (SAM 3 adds a geometry
                token whenever boxes are given).
            mask_threshold: ``(P,)`` scores above which an instance's mask is kept (memory:
                200 masks of 288x288 per prompt otherwise); None keeps every mask.

        Returns:
            The :class:`Sam3Output` of the P prompts, in order.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        p = int(text_mask.shape[0])
        boxes = list(boxes) if boxes is not None else [None] * p
        if len(boxes) != p:
            raise ValueError(f"boxes: expected one entry per prompt ({p}), got {len(boxes)}")
        features = text.pooler_output
        groups = [
            [i for i in range(p) if boxes[i] is None],
            [i for i in range(p) if boxes[i] is not None],
        ]
        scores = presence = out_boxes = None
        kept_index: list[torch.Tensor] = []
        kept_masks: list[torch.Tensor] = []
        for rows in groups:
            for start in range(0, len(rows), self.concept_batch_size):
                chunk = rows[start : start + self.concept_batch_size]
                n = len(chunk)
                kwargs: dict[str, Any] = {}
                if boxes[chunk[0]] is not None:
                    kwargs.update(self._box_inputs([boxes[i] for i in chunk]))
                out = self.net.model(
                    vision_embeds=_expand(vision, n),
                    text_embeds=BaseModelOutputWithPooling(pooler_output=features[chunk]),
                    attention_mask=text_mask[chunk],
                    **kwargs,
                )
                pres = out.presence_logits.float().sigmoid().reshape(n)
                part = out.pred_logits.float().sigmoid() * pres[:, None]
                if scores is None:
                    q = out.pred_logits.shape[1]
                    scores = torch.zeros((p, q), device=part.device)
                    presence = torch.zeros(p, device=part.device)
                    out_boxes = torch.zeros((p, q, 4), device=part.device)
                index = torch.tensor(chunk, device=part.device)
                scores[index] = part
                presence[index] = pres
                out_boxes[index] = out.pred_boxes.float()
                if mask_threshold is None:
                    keep = torch.ones_like(part, dtype=torch.bool)
                else:
                    keep = part > mask_threshold.to(part.device)[index][:, None]
                hit, queries = torch.nonzero(keep, as_tuple=True)
                kept_index.append(torch.stack([index[hit], queries], dim=1).cpu())
                kept_masks.append(out.pred_masks[hit, queries].float())
                del out
        assert scores is not None and presence is not None and out_boxes is not None
        return Sam3Output(scores, presence, out_boxes, torch.cat(kept_index), torch.cat(kept_masks))

    def _box_inputs(self, rows: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        boxes = torch.full((len(rows), width, 4), float(_PAD))
        labels = torch.full((len(rows), width), _PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            boxes[i, : len(row)] = torch.from_numpy(np.asarray(row[:, :4], np.float32))
            labels[i, : len(row)] = torch.from_numpy(np.asarray(row[:, 4], np.int64))
        return {
            "input_boxes": boxes.to(self.device, self.dtype),
            "input_boxes_labels": labels.to(self.device),
        }

    # ------------------------------------------------------------------ the prompter
    def _exemplar_rows(self, vocab: Vocabulary, size: tuple[int, int]) -> list[np.ndarray | None]:
        """Per prompt of ``vocab.prompts``: its class's exemplar rows, or None."""
        return exemplar_rows(self.exemplars, vocab, size)

    def prompts(self, image: ImageInput, classes: ClassesInput) -> ClassPrompts:
        """Every instance of every class, with its SAM 3 mask.

        Args:
            image: Path, PIL image or ``(H, W, 3)`` uint8 RGB array.
            classes: Class names or a :class:`~textseg.vocab.Vocabulary` (synonyms, negatives,
                per-class thresholds).

        Returns:
            :class:`ClassPrompts` sorted by score: ``prompts`` the instances' boxes (XYXY
            pixels, clipped to the image), ``class_id``, ``confidence`` (instance score times
            presence), ``data`` ``"prompt"`` (the text that found it), ``"box"`` (SAM 3's box),
            ``"presence_score"``, and ``masks`` (288x288 probabilities over the image). Empty
            when nothing scores above the thresholds.

        Raises:
            ValueError: An exemplar that names no class of the vocabulary or lies outside the
                image; a prompt longer than 32 tokens.
        """
        array = to_rgb_uint8(image)
        vocab = Vocabulary.coerce(classes)
        h, w = array.shape[:2]
        exemplar_rows = self._exemplar_rows(vocab, (h, w))
        vision = self.encode_image(array)
        text, mask = self.encode_text(vocab.prompts)
        out = self.predict_concepts(
            vision, text, mask, exemplar_rows, mask_threshold=self._limits(vocab)
        )
        return self.select(out, vocab, (h, w))

    def _limits(self, vocab: Vocabulary) -> torch.Tensor:
        """``(P,)`` score each prompt's instances must exceed (its class's threshold)."""
        prompt_class = torch.tensor(np.array(vocab.prompt_class), dtype=torch.long)
        thresholds = torch.from_numpy(vocab.thresholds_array(self.box_threshold)).float()
        return torch.where(
            prompt_class >= 0, thresholds[prompt_class.clamp(min=0)], self.box_threshold
        )

    def select(self, out: Sam3Output, vocab: Vocabulary, size: tuple[int, int]) -> ClassPrompts:
        """Apply the thresholds and the vocabulary's rules (module docstring) to SAM 3's raw
        output for ``vocab.prompts`` on an ``H x W`` image."""
        from torchvision.ops import box_iou

        names = tuple(vocab.names)
        h, w = size
        prompt_class = torch.tensor(np.array(vocab.prompt_class), dtype=torch.long)
        scores = out.scores.detach().float().cpu()
        limit = self._limits(vocab)
        prompt, query = torch.nonzero(scores > limit[:, None], as_tuple=True)
        if prompt.numel() == 0:
            return _nothing(names)
        score = scores[prompt, query]
        class_id = prompt_class[prompt]
        boxes = out.boxes.detach().float().cpu()[prompt, query] * torch.tensor(
            [w, h, w, h], dtype=torch.float32
        )
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, float(w))
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, float(h))
        iou = box_iou(boxes, boxes)
        order = torch.argsort(score, descending=True, stable=True)
        positive = class_id >= 0
        keep: list[int] = []
        for i in order.tolist():
            if not positive[i]:
                continue
            beaten = (~positive) & (score > score[i]) & (iou[i] > self.nms_threshold)
            if beaten.any():
                continue
            if keep:
                kept = torch.tensor(keep)
                same = class_id[kept] == class_id[i]
                overlap = iou[i, kept]
                # Another prompt of the same class (a synonym) found the same object ...
                clash = same & (prompt[kept] != prompt[i]) & (overlap > self.nms_threshold)
                # ... or another class holds a near-identical box.
                if self.cross_class_nms_threshold is not None:
                    clash |= ~same & (overlap > self.cross_class_nms_threshold)
                if clash.any():
                    continue
            keep.append(i)
        if not keep:
            return _nothing(names)
        idx = torch.tensor(keep)
        kept_boxes = boxes[idx].numpy().astype(np.float32)
        logits = out.masks_of(prompt[idx], query[idx])
        masks = PromptMasks(logits.float().sigmoid().cpu().numpy())
        texts = vocab.prompts
        return ClassPrompts(
            prompts=Prompts.from_boxes(kept_boxes),
            class_id=class_id[idx].numpy().astype(np.int64),
            confidence=score[idx].numpy().astype(np.float32),
            data={
                "prompt": np.array([texts[p] for p in prompt[idx].tolist()], dtype=str),
                "box": kept_boxes.copy(),
                PRESENCE_SCORE: out.presence.detach().float().cpu()[prompt[idx]].numpy(),
            },
            multimask=False,
            class_names=names,
            masks=masks,
        )


def exemplar_rows(
    exemplars: Sequence[Exemplar], vocab: Vocabulary, size: tuple[int, int]
) -> list[np.ndarray | None]:
    """Per prompt of ``vocab.prompts``: its class's exemplar rows ``(B, 5)`` ``(cx, cy, w, h,
    label)`` (box as fractions of the ``(H, W)`` image, label 1 / 0 for positive / negative),
    or None for a prompt whose class has no exemplar.

    Raises:
        ValueError: An exemplar that names no class of the vocabulary (or names none when it
            has several), or lies outside the image.
    """
    if not exemplars:
        return [None] * len(vocab.prompts)
    h, w = size
    per_class: dict[int, list[list[float]]] = {}
    folded = [n.casefold() for n in vocab.names]
    for item in exemplars:
        if item.class_name is None:
            if len(vocab.names) != 1:
                raise ValueError(
                    f"exemplar {list(item.box)}: name its class (X0,Y0,X1,Y1:CLASS); the "
                    f"vocabulary has {len(vocab.names)} classes {list(vocab.names)}"
                )
            class_id = 0
        elif item.class_name.strip().casefold() in folded:
            class_id = folded.index(item.class_name.strip().casefold())
        else:
            raise ValueError(
                f"exemplar {list(item.box)}: class {item.class_name!r} is not one of the "
                f"classes {list(vocab.names)}"
            )
        x0, y0, x1, y1 = item.box
        if x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1:
            raise ValueError(
                f"exemplar {list(item.box)}: expected a box inside the {w}x{h} image (XYXY pixels)"
            )
        x0, x1 = max(x0, 0.0), min(x1, float(w))
        y0, y1 = max(y0, 0.0), min(y1, float(h))
        row = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
        per_class.setdefault(class_id, []).append([*row, 1.0 if item.positive else 0.0])
    return [
        np.asarray(per_class[c], np.float32) if c >= 0 and c in per_class else None
        for c in vocab.prompt_class
    ]


def _nothing(names: tuple[str, ...]) -> ClassPrompts:
    """No instance: empty prompts that still say they carry their masks (nothing for SAM)."""
    empty = ClassPrompts.empty(data_keys=_DATA_KEYS, multimask=False, class_names=names)
    return dataclasses.replace(empty, masks=PromptMasks(np.zeros((0, 1, 1), np.float32)))


def _expand(vision: Any, n: int) -> Any:
    """The batch-1 vision features broadcast to ``n`` rows (views, no copy)."""
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    return Sam3VisionEncoderOutput(
        fpn_hidden_states=tuple(f.expand(n, *f.shape[1:]) for f in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(
            f.expand(n, *f.shape[1:]) for f in vision.fpn_position_encoding
        ),
    )


def _check_unit(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
