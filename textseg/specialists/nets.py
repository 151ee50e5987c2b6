"""The specialist networks: a registry backbone plus a head sized to the dataset's classes.

Each wraps one network behind the same three methods the trainer and the predictor use:

- ``loss(examples, flips) -> scalar tensor`` (training mode, gradients on);
- ``predict(images) -> list[supervision.Detections]`` (masks in each image's own pixels);
- ``settings() -> dict``: what :func:`build_specialist` needs to build it again (saved in
  ``config.json``).

``SegformerSpecialist`` (semantic) labels every pixel; its prediction turns each connected
region of a class into one instance (touching objects of one class merge into one region).
``MaskRcnnSpecialist`` (instance) returns one mask per object. Images are numpy
``(H, W, 3) uint8 RGB`` at the boundary; tensors inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import supervision as sv
import torch
import torch.nn.functional as F
from torch import nn

from textseg._registry import ModelCfg, get_model_cfg
from textseg.specialists.example import IGNORE, Example
from textseg.specialists.pretrained import segformer_config_kwargs

__all__ = ["MaskRcnnSpecialist", "SegformerSpecialist", "SpecialistNet", "build_specialist"]


def _flip(example: Example) -> Example:
    return Example(
        file_name=example.file_name,
        image=np.ascontiguousarray(example.image[:, ::-1]),
        masks=np.ascontiguousarray(example.masks[:, :, ::-1]),
        class_ids=example.class_ids,
        weights=example.weights,
        ignore=np.ascontiguousarray(example.ignore[:, ::-1]),
        excluded=example.excluded,
    )


def _empty_detections(h: int, w: int) -> sv.Detections:
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        mask=np.zeros((0, h, w), bool),
        confidence=np.zeros(0, np.float32),
        class_id=np.zeros(0, np.int64),
    )


class SpecialistNet(nn.Module):
    """What the trainer and the predictor need from a specialist network."""

    kind = ""

    def __init__(self, cfg: ModelCfg, classes: Sequence[str]) -> None:
        super().__init__()
        self.arch = cfg.name
        self.classes = list(classes)
        mean = cfg.mean or (0.0, 0.0, 0.0)
        std = cfg.std or (255.0, 255.0, 255.0)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def loss(self, examples: Sequence[Example], flips: Sequence[bool]) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {}


class SegformerSpecialist(SpecialistNet):
    """SegFormer (transformers ``SegformerForSemanticSegmentation``) on square inputs.

    Training resizes each image to ``input_size`` x ``input_size``; the loss is the pixel
    cross-entropy over the 1/4-resolution logits upsampled to the input, ignoring
    :data:`~textseg.specialists.example.IGNORE` pixels and weighting each pixel by its instance's
    provenance weight. Prediction upsamples the class probabilities to the image and splits
    each class's pixels into connected regions (8-connectivity), one instance each, scored by
    the region's mean probability.

    Args:
        cfg: A ``segformer-*`` registry entry.
        classes: The class names (label ``k + 1`` is ``classes[k]``; 0 is background).
        encoder: A pretrained ``SegformerModel`` of the same sizes (None: random init).
        input_size: Side of the square training and inference input (default the entry's).
    """

    kind = "semantic"

    def __init__(
        self,
        cfg: ModelCfg,
        classes: Sequence[str],
        encoder: nn.Module | None = None,
        *,
        input_size: int | None = None,
    ) -> None:
        super().__init__(cfg, classes)
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        config = SegformerConfig(
            **segformer_config_kwargs(cfg.arch), num_labels=len(self.classes) + 1
        )
        self.net = SegformerForSemanticSegmentation(config)
        if encoder is not None:
            self.net.segformer.load_state_dict(encoder.state_dict(), strict=True)
        self.input_size = int(input_size or cfg.input_size or 512)

    def settings(self) -> dict[str, Any]:
        return {"input_size": self.input_size}

    def _pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        s = self.input_size
        batch = np.stack([cv2.resize(im, (s, s), interpolation=cv2.INTER_LINEAR) for im in images])
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()
        return (x - self.pixel_mean) / self.pixel_std

    def loss(self, examples: Sequence[Example], flips: Sequence[bool]) -> torch.Tensor:
        examples = [_flip(e) if f else e for e, f in zip(examples, flips)]
        s = self.input_size
        targets = [e.semantic((s, s)) for e in examples]
        labels = torch.from_numpy(np.stack([t[0] for t in targets])).to(self.device)
        weights = torch.from_numpy(np.stack([t[1] for t in targets])).to(self.device)
        logits = self.net(pixel_values=self._pixels([e.image for e in examples])).logits
        logits = F.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
        per_pixel = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
        valid = (labels != IGNORE).float() * weights
        return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)

    @torch.inference_mode()
    def label_maps(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image ``(H, W)`` int64 labels (0 background, ``k + 1`` class k) and ``(H, W)``
        float32 probability of the label, at the image's size.

        The class probabilities are upsampled bilinearly from the 1/4-resolution output, for
        the classes that rank first or second at some output pixel (with many classes,
        upsampling all of them dominates the run time; a class that is never among the two
        best anywhere does not win after interpolation in practice).
        """
        probs = self.net(pixel_values=self._pixels(images)).logits.softmax(dim=1)
        out = []
        for image, row in zip(images, probs):
            h, w = image.shape[:2]
            candidates = torch.unique(row.topk(min(2, row.shape[0]), dim=0).indices)
            up = F.interpolate(
                row[candidates][None], size=(h, w), mode="bilinear", align_corners=False
            )[0]
            score, index = up.max(dim=0)
            out.append((candidates[index].cpu().numpy(), score.float().cpu().numpy()))
        return out

    def predict(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        return [_regions(label, score) for label, score in self.label_maps(images)]


def _regions(label: np.ndarray, score: np.ndarray) -> sv.Detections:
    """One instance per connected region of each class (label ``k + 1`` -> class ``k``)."""
    h, w = label.shape
    masks, class_ids, scores = [], [], []
    for value in np.unique(label):
        if value == 0:
            continue
        count, components = cv2.connectedComponents(
            (label == value).astype(np.uint8), connectivity=8
        )
        for c in range(1, count):
            mask = components == c
            masks.append(mask)
            class_ids.append(int(value) - 1)
            scores.append(float(score[mask].mean()))
    if not masks:
        return _empty_detections(h, w)
    stacked = np.stack(masks)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(stacked).astype(np.float32),
        mask=stacked,
        confidence=np.asarray(scores, np.float32),
        class_id=np.asarray(class_ids, np.int64),
    )


class MaskRcnnSpecialist(SpecialistNet):
    """Mask R-CNN (torchvision) on a ResNet + FPN backbone.

    Following torchvision's ``maskrcnn_resnet50_fpn``: with a pretrained backbone its batch
    norms are frozen and its stem and first stage are not trained; from random init the batch
    norms train. Images keep their aspect ratio (resized so the short side is ``input_size``,
    the long side at most ``max_size``). The loss is torchvision's sum of RPN, box and mask
    losses, computed image by image so that each image's loss is scaled by the mean
    provenance weight of its instances.

    Args:
        cfg: A ``maskrcnn-*`` registry entry.
        classes: The class names (torchvision label ``k + 1`` is ``classes[k]``).
        backbone: A pretrained torchvision ``ResNet`` of the same sizes (None: random init).
        input_size: Short side of the resized input (default the entry's).
        frozen_bn: Frozen batch norms (default: when ``backbone`` is given).
        score_threshold: Minimum detection score kept by :meth:`predict`.
    """

    kind = "instance"

    def __init__(
        self,
        cfg: ModelCfg,
        classes: Sequence[str],
        backbone: nn.Module | None = None,
        *,
        input_size: int | None = None,
        frozen_bn: bool | None = None,
        score_threshold: float = 0.5,
    ) -> None:
        super().__init__(cfg, classes)
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
        from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
        from torchvision.ops import FrozenBatchNorm2d
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        arch = cfg.arch
        self.frozen_bn = backbone is not None if frozen_bn is None else bool(frozen_bn)
        self.input_size = int(input_size or cfg.input_size or 800)
        self.score_threshold = float(score_threshold)
        block = {"bottleneck": Bottleneck, "basic": BasicBlock}[arch["block"]]
        norm = FrozenBatchNorm2d if self.frozen_bn else nn.BatchNorm2d
        resnet = ResNet(
            block, list(arch["layers"]), width_per_group=arch.get("width", 64), norm_layer=norm
        )
        if backbone is not None:
            state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
            state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
            missing, unexpected = resnet.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"{cfg.name}: the backbone does not fit (missing {missing[:4]}, unexpected "
                    f"{unexpected[:4]})"
                )
            # torchvision's default for a pretrained backbone: train layer2..layer4 only.
            for name, param in resnet.named_parameters():
                if not name.startswith(("layer2", "layer3", "layer4")):
                    param.requires_grad_(False)
        stages = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
        last = "conv3" if block is Bottleneck else "conv2"
        channels = [getattr(stage[-1], last).out_channels for stage in stages]
        fpn = int(arch["fpn_channels"])
        body = BackboneWithFPN(
            resnet,
            {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            channels,
            fpn,
            extra_blocks=LastLevelMaxPool(),
        )
        hidden = int(arch["box_hidden"])
        mask_layers = [int(c) for c in arch["mask_layers"]]
        n = len(self.classes) + 1
        mean = [m / 255.0 for m in (cfg.mean or (0.0, 0.0, 0.0))]
        std = [s / 255.0 for s in (cfg.std or (255.0, 255.0, 255.0))]
        self.net = MaskRCNN(
            body,
            num_classes=None,
            min_size=self.input_size,
            max_size=int(arch.get("max_size", 1333)),
            image_mean=mean,
            image_std=std,
            box_head=TwoMLPHead(fpn * 7 * 7, hidden),
            box_predictor=FastRCNNPredictor(hidden, n),
            mask_head=MaskRCNNHeads(fpn, mask_layers, 1),
            mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], n),
        )

    def settings(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "frozen_bn": self.frozen_bn,
            "score_threshold": self.score_threshold,
        }

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        return torch.tensor(image, device=self.device).permute(2, 0, 1).float() / 255.0

    def loss(self, examples: Sequence[Example], flips: Sequence[bool]) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for example, flip in zip(examples, flips):
            e = _flip(example) if flip else example
            masks = torch.from_numpy(e.masks).to(self.device)
            boxes = sv.mask_to_xyxy(e.masks).astype(np.float32) if len(e.masks) else None
            target = {
                "boxes": torch.from_numpy(boxes + np.asarray([0, 0, 1, 1], np.float32))
                if boxes is not None
                else torch.zeros((0, 4)),
                "labels": torch.from_numpy(e.class_ids + 1),
                "masks": masks.to(torch.uint8),
            }
            target = {k: v.to(self.device) for k, v in target.items()}
            losses = self.net([self._tensor(e.image)], [target])
            weight = float(e.weights.mean()) if len(e.weights) else 1.0
            total = total + weight * sum(losses.values())
        return total / max(1, len(examples))

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        outputs = self.net([self._tensor(im) for im in images])
        results = []
        for image, out in zip(images, outputs):
            h, w = image.shape[:2]
            keep = out["scores"] >= self.score_threshold
            masks = (out["masks"][keep, 0] > 0.5).cpu().numpy()
            nonempty = masks.any(axis=(1, 2))
            masks = masks[nonempty]
            if not len(masks):
                results.append(_empty_detections(h, w))
                continue
            results.append(
                sv.Detections(
                    xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
                    mask=masks,
                    confidence=out["scores"][keep][nonempty].cpu().numpy().astype(np.float32),
                    class_id=(out["labels"][keep][nonempty].cpu().numpy() - 1).astype(np.int64),
                )
            )
        return results


#: Specialist network class per registry ``family``.
FAMILIES: dict[str, type[SpecialistNet]] = {
    "segformer": SegformerSpecialist,
    "maskrcnn": MaskRcnnSpecialist,
}


def build_specialist(
    arch: str,
    classes: Sequence[str],
    *,
    backbone: nn.Module | None = None,
    **settings: Any,
) -> SpecialistNet:
    """Build the specialist network of registry entry ``arch`` for ``classes``.

    Args:
        arch: A ``task="specialist"`` registry name (``textseg models --task specialist``).
        classes: The class names.
        backbone: The entry's pretrained backbone (``create_model(arch)``), or None.
        **settings: Saved settings (``input_size``, ``frozen_bn``, ``score_threshold``...).

    Raises:
        ValueError: Unknown architecture, or one trained elsewhere (YOLO: ultralytics).
    """
    cfg = get_model_cfg(arch, "specialist")
    family = cfg.arch.get("family")
    if family not in FAMILIES:
        raise ValueError(
            f"{arch}: the {family!r} family is not built here (YOLO specialists are trained "
            f"and run by ultralytics: see textseg.specialists.yolo)"
        )
    return FAMILIES[family](cfg, classes, backbone, **settings)
