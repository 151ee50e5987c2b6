"""Training the text-prompt adapter (EXPERIMENTAL), as the SAM paper trained its text prompt.

Recipe (Kirillov et al., 2023, section 7.5, with SAM frozen):

* the prompt is the CLIP *image* embedding of each mask's masked crop (pixels outside the
  mask blanked, a square crop around the mask's box, :func:`~textseg.clip.masked_crop`);
  with probability ``text_mix`` the CLIP *text* embedding of the mask's class name is used
  instead (COCO data only);
* the :class:`~textseg.prompters.TextPromptAdapter` maps it to SAM prompt tokens, given to
  SAM's mask decoder as its only sparse prompt, with the "no mask" dense embedding;
* the target is the ground-truth mask resized to the decoder's 256x256 low-resolution frame
  (the image resized so its longest side is SAM's input size, divided by 4, padded);
* loss = ``focal_weight`` * sigmoid focal loss + ``dice_weight`` * dice loss on the decoder's
  single-mask logits, over the part of the 256x256 frame that covers the image (the SAM paper
  weights focal:dice 20:1);
* the SAM image encoder, prompt encoder and mask decoder are frozen: image embeddings are
  computed once by :class:`~textseg.sam.SamCore` and kept (float16, on the CPU), and gradients
  flow through the decoder (called directly, outside ``inference_mode``) into the adapter only.

Masks come from a COCO-format dataset (``annotations.json`` + ``images/``; polygons or RLE,
decoded with pycocotools) or, for a folder of unlabelled images, from textseg's own
:class:`~textseg.sam.AutomaticMaskGenerator` (the SAM "data engine").

The result is a folder with ``model.safetensors`` (the adapter's state dict, loadable with
``textseg._hub.create_model(name, checkpoint=folder)``) and ``config.json``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textseg._hub import create_model
from textseg._registry import get_model_cfg
from textseg.clip.text import DEFAULT_TEMPLATES, embed_texts
from textseg.prompters.clip_tokens import TextPromptAdapter, text_adapter_for
from textseg.train.output import (
    CONFIG,
    WEIGHTS,
    _atomic_json,
    check_same_settings,
    claim_run,
    read_json,
    written,
)
from textseg.train.text_prompt_data import (
    MaskDataset,
    build_dataset,
    coco_paths,
    iter_coco_masks,
    iter_folder_masks,
)

__all__ = [
    "TrainResult",
    "decode_tokens",
    "iter_coco_masks",
    "iter_folder_masks",
    "mask_loss",
    "train_text_prompt",
]

logger = logging.getLogger(__name__)

CONFIG_FORMAT = "textseg-text-prompt-adapter"


@dataclass
class TrainResult:
    """What :func:`train_text_prompt` produced.

    Attributes:
        checkpoint: ``<out>/model.safetensors``, the adapter's state dict.
        config: ``<out>/config.json``, the settings and data summary.
        adapter: Registry name of the adapter (``create_model(adapter, checkpoint=out)``).
        losses: Training loss of every step.
        initial_loss: Loss on the evaluation masks before training (image-embedding prompts).
        final_loss: The same after training.
        num_images: Images used.
        num_masks: Masks used.
        model: The trained adapter (eval mode, on the training device); the checkpoint holds
            its state dict.
    """

    checkpoint: Path
    config: Path
    adapter: str
    losses: list[float] = field(repr=False)
    initial_loss: float
    final_loss: float
    num_images: int
    num_masks: int
    model: TextPromptAdapter | None = field(default=None, repr=False)


# ------------------------------------------------------------------------- model and loss


def decode_tokens(
    sam: nn.Module, image_embedding: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """SAM's mask decoder on prompt tokens alone, differentiable (no ``inference_mode``).

    The same computation as ``SamCore.decode`` for ``Prompts(embeddings=tokens)`` with single
    mask output: the tokens are the only sparse prompt, the dense prompt is the "no mask"
    embedding.

    Args:
        sam: A segment_anything ``Sam``.
        image_embedding: ``(1, C, h, w)`` embedding of one image.
        tokens: ``(N, k, C)`` prompt tokens.

    Returns:
        ``(N, 256, 256)`` low-resolution mask logits.
    """
    prompt_encoder = sam.prompt_encoder
    h, w = image_embedding.shape[-2:]
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(len(tokens), -1, h, w)
    low, _ = sam.mask_decoder(
        image_embeddings=image_embedding,
        image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=tokens,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return low[:, 0]


def mask_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    *,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """Per-mask ``focal_weight * focal + dice_weight * dice`` loss over the valid pixels.

    Args:
        logits: ``(N, S, S)`` mask logits.
        targets: ``(N, S, S)`` bool or {0, 1} float targets.
        valid: ``(N, S, S)`` bool, the pixels that cover the image (padding excluded).
        focal_weight: Weight of the sigmoid focal loss (alpha 0.25, gamma 2), averaged over
            valid pixels.
        dice_weight: Weight of the dice loss ``1 - (2 |p t| + 1) / (|p| + |t| + 1)``.

    Returns:
        ``(N,)`` losses.
    """
    from torchvision.ops import sigmoid_focal_loss

    t = targets.float()
    v = valid.float()
    count = v.sum(dim=(1, 2)).clamp(min=1.0)
    focal = sigmoid_focal_loss(logits, t, alpha=0.25, gamma=2.0, reduction="none")
    focal = (focal * v).sum(dim=(1, 2)) / count
    p = torch.sigmoid(logits) * v
    inter = (p * t).sum(dim=(1, 2))
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(1, 2)) + (t * v).sum(dim=(1, 2)) + 1.0)
    return focal_weight * focal + dice_weight * dice


def _valid_masks(ds: MaskDataset, index: np.ndarray, size: int) -> torch.Tensor:
    out = torch.zeros((len(index), size, size), dtype=torch.bool)
    for row, i in enumerate(index):
        vh, vw = ds.valid[ds.image_of[i]]
        out[row, :vh, :vw] = True
    return out


def _batch_loss(
    sam: nn.Module,
    adapter: TextPromptAdapter,
    ds: MaskDataset,
    index: np.ndarray,
    prompts: torch.Tensor,
    device: torch.device,
    weights: tuple[float, float],
) -> torch.Tensor:
    """Mean loss of the masks ``index`` prompted by ``prompts`` ((B, D) CLIP embeddings)."""
    tokens = adapter(prompts.to(device))
    losses = []
    size = ds.targets.shape[-1]
    for image_id in np.unique(ds.image_of[index]):
        rows = np.flatnonzero(ds.image_of[index] == image_id)
        emb = ds.embeddings[image_id].to(device=device, dtype=torch.float32)
        logits = decode_tokens(sam, emb, tokens[torch.as_tensor(rows, device=device)])
        sel = index[rows]
        losses.append(
            mask_loss(
                logits,
                ds.targets[sel].to(device),
                _valid_masks(ds, sel, size).to(device),
                focal_weight=weights[0],
                dice_weight=weights[1],
            )
        )
    return torch.cat(losses).mean()


def _eval_loss(
    sam: nn.Module,
    adapter: TextPromptAdapter,
    ds: MaskDataset,
    index: np.ndarray,
    device: torch.device,
    weights: tuple[float, float],
    batch_size: int,
) -> float:
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            part = index[start : start + batch_size]
            loss = _batch_loss(sam, adapter, ds, part, ds.clip_embeddings[part], device, weights)
            total += float(loss) * len(part)
    return total / len(index)


# ------------------------------------------------------------------------------ training


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def train_text_prompt(
    sam: str,
    clip: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    steps: int = 2000,
    lr: float = 1e-4,
    batch_size: int = 16,
    text_mix: float = 0.0,
    adapter: str | None = None,
    init_checkpoint: str | os.PathLike[str] | None = None,
    sam_checkpoint: str | os.PathLike[str] | None = None,
    clip_checkpoint: str | os.PathLike[str] | None = None,
    max_images: int | None = None,
    max_masks_per_image: int = 16,
    min_mask_area: int = 256,
    crop_margin: float = 0.1,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    weight_decay: float = 1e-4,
    eval_masks: int = 256,
    amg_options: Mapping[str, Any] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: str | torch.device | None = "cpu",
    seed: int = 0,
    log_every: int = 50,
    resume: bool = False,
) -> TrainResult:
    """Train a :class:`TextPromptAdapter` for one SAM and one CLIP (EXPERIMENTAL).

    See the module docstring for the recipe. Image embeddings are kept in memory (float16,
    ~2 MB per image for the published SAMs); bound them with ``max_images``.

    Args:
        sam: SAM registry name (a segment_anything model: ``sam-vit-b``, ``mobile-sam``...).
        clip: CLIP registry name (``clip-vit-b-32``...).
        data: COCO folder (``annotations.json`` + ``images/``) or its JSON file; or a folder
            of unlabelled images, whose masks come from the automatic mask generator.
        out: Output folder (created); ``model.safetensors`` and ``config.json`` are written.
        steps: Optimiser steps.
        lr: Peak learning rate (AdamW; linear warm-up over 5% of the steps, cosine decay).
        batch_size: Masks per step.
        text_mix: Probability of prompting a labelled mask with its class name's text
            embedding instead of its masked-crop image embedding.
        adapter: Registry name of the adapter; default: the one registered for
            ``(sam, clip)``.
        init_checkpoint: Adapter weights to start from (fine-tuning); default random init.
        sam_checkpoint: Explicit SAM weights.
        clip_checkpoint: Explicit CLIP weights.
        max_images: Use at most this many images.
        max_masks_per_image: Keep the largest masks of each image, at most this many.
        min_mask_area: Skip masks smaller than this (pixels).
        crop_margin: Context margin of the masked crops (fraction of the box's longer side).
        focal_weight: Weight of the focal loss.
        dice_weight: Weight of the dice loss.
        weight_decay: AdamW weight decay.
        eval_masks: Masks (the first ones) on which ``initial_loss`` / ``final_loss`` are
            measured.
        amg_options: Settings of the :class:`~textseg.sam.AutomaticMaskGenerator` for a
            folder of unlabelled images.
        templates: Text templates of the class-name prompts (``text_mix``).
        device: Where to train.
        seed: Seed of the adapter's initialisation and of the mask sampling.
        log_every: Log the mean loss every this many steps (``logging`` at INFO).
        resume: Continue the run in ``out`` (killed, or finished: then it is returned as it
            is). A run killed before its weights were written trains again from its settings:
            seeded, it ends in the same state.

    Returns:
        :class:`TrainResult`.

    Raises:
        ValueError: Bad settings, an unregistered SAM/CLIP pair, a SAM that takes no token
            prompts, or data without usable masks; ``out`` holds a run and ``resume`` is
            False, or ``resume`` with no run or other settings.
        FileNotFoundError: Missing data.
    """
    steps = _positive_int(steps, "steps")
    batch_size = _positive_int(batch_size, "batch_size")
    max_masks_per_image = _positive_int(max_masks_per_image, "max_masks_per_image")
    eval_masks = _positive_int(eval_masks, "eval_masks")
    log_every = _positive_int(log_every, "log_every")
    if max_images is not None:
        max_images = _positive_int(max_images, "max_images")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a positive number, got {lr}")
    if not 0.0 <= text_mix <= 1.0:
        raise ValueError(f"text_mix: expected a probability in [0, 1], got {text_mix}")
    data_path = Path(data)
    if not data_path.exists():
        raise FileNotFoundError(f"data: {data_path} does not exist")
    name = adapter if adapter is not None else text_adapter_for(sam, clip)
    cfg = get_model_cfg(name, task="text-prompt")
    out_dir = Path(out)
    settings: dict[str, Any] = {
        "adapter": cfg.name,
        "sam": sam,
        "clip": clip,
        "data": str(data_path),
        "steps": steps,
        "lr": float(lr),
        "batch_size": batch_size,
        "text_mix": float(text_mix),
        "max_images": max_images,
        "max_masks_per_image": max_masks_per_image,
        "min_mask_area": min_mask_area,
        "crop_margin": float(crop_margin),
        "focal_weight": float(focal_weight),
        "dice_weight": float(dice_weight),
        "weight_decay": float(weight_decay),
        "eval_masks": eval_masks,
        "amg_options": dict(amg_options or {}),
        "templates": list(templates),
        "seed": seed,
        **{
            key: None if path is None else str(path)
            for key, path in (
                ("init_checkpoint", init_checkpoint),
                ("sam_checkpoint", sam_checkpoint),
                ("clip_checkpoint", clip_checkpoint),
            )
        },
    }
    with claim_run(out_dir, "train-text-prompt", resume=resume, owned=(WEIGHTS, CONFIG)) as folder:
        previous = None
        if resume and (out_dir / CONFIG).is_file():
            previous = read_json(out_dir / CONFIG, "text-prompt adapter config")
            check_same_settings(out_dir, previous.get("settings", {}), settings)
        if previous is not None and previous.get("status") == "done":
            result = _finished(out_dir, cfg, previous)
        else:
            result = _fit(
                cfg, settings, out_dir, data_path, amg_options, templates, device, log_every
            )
        folder.update(complete=True)
        written("complete")
    return result


def _finished(out_dir: Path, cfg: Any, config: Mapping[str, Any]) -> TrainResult:
    """The result of a finished run, read back from its folder."""
    from textseg._hub import load_state_dict, load_strict

    checkpoint = out_dir / WEIGHTS
    model: TextPromptAdapter = create_model(cfg, pretrained=False)
    load_strict(model, load_state_dict(checkpoint), cfg.name)
    return TrainResult(
        checkpoint=checkpoint,
        config=out_dir / CONFIG,
        adapter=cfg.name,
        losses=list(config.get("losses", [])),
        initial_loss=float(config["initial_loss"]),
        final_loss=float(config["final_loss"]),
        num_images=int(config["num_images"]),
        num_masks=int(config["num_masks"]),
        model=model.eval(),
    )


def _fit(
    cfg: Any,
    settings: Mapping[str, Any],
    out_dir: Path,
    data_path: Path,
    amg_options: Mapping[str, Any] | None,
    templates: Sequence[str],
    device: str | torch.device | None,
    log_every: int,
) -> TrainResult:
    """Build the masks, train, write the weights and the final config."""
    from safetensors.torch import save_file

    from textseg._device import resolve_device
    from textseg._hub import load_state_dict, load_strict
    from textseg.clip.encoders import load_clip
    from textseg.sam.automatic import AutomaticMaskGenerator
    from textseg.sam.core import SamCore

    name, sam, clip = cfg.name, settings["sam"], settings["clip"]
    steps, lr, batch_size = settings["steps"], settings["lr"], settings["batch_size"]
    text_mix, seed = settings["text_mix"], settings["seed"]
    max_images, max_masks_per_image = settings["max_images"], settings["max_masks_per_image"]
    min_mask_area, crop_margin = settings["min_mask_area"], settings["crop_margin"]
    focal_weight, dice_weight = settings["focal_weight"], settings["dice_weight"]
    weight_decay, eval_masks = settings["weight_decay"], settings["eval_masks"]
    init_checkpoint = settings["init_checkpoint"]
    sam_checkpoint, clip_checkpoint = settings["sam_checkpoint"], settings["clip_checkpoint"]
    torch_device = resolve_device(device)
    # The cache lets the embedding the automatic generator computed for an image be reused for
    # training instead of running the image encoder a second time.
    core = SamCore(sam, checkpoint=sam_checkpoint, device=torch_device, cache_bytes=1 << 28)
    if not core.backend.supports_token_prompts:
        raise ValueError(
            f"sam: {sam!r} takes no token prompts; use a segment_anything model (e.g. "
            f"'sam-vit-b', 'mobile-sam'), not a transformers one"
        )
    sam_model = core.backend.model  # type: ignore[attr-defined]
    sam_model.requires_grad_(False)
    clip_enc = load_clip(clip, checkpoint=clip_checkpoint, device=torch_device)
    prompt_dim = int(sam_model.prompt_encoder.embed_dim)
    if cfg.arch.get("clip_dim") != clip_enc.embed_dim or cfg.arch.get("prompt_dim") != prompt_dim:
        raise ValueError(
            f"adapter {name!r} maps {cfg.arch.get('clip_dim')}-d CLIP embeddings to "
            f"{cfg.arch.get('prompt_dim')}-d tokens, but {clip!r} makes {clip_enc.embed_dim}-d "
            f"embeddings and {sam!r} takes {prompt_dim}-d tokens"
        )

    ann_path, _ = coco_paths(data_path)
    if ann_path.is_file():
        items = iter_coco_masks(data_path)
        source = "coco"
        empty_hint = ""
    else:
        generator = AutomaticMaskGenerator(core, **dict(amg_options or {}))
        items = iter_folder_masks(data_path, generator)
        source = "automatic"
        empty_hint = (
            f" among the automatic generator's masks (pred_iou_thresh="
            f"{generator.pred_iou_thresh}, stability_score_thresh="
            f"{generator.stability_score_thresh}); lower min_mask_area or those thresholds"
        )
    ds = build_dataset(
        items,
        core,
        clip_enc,
        max_images=max_images,
        max_masks_per_image=max_masks_per_image,
        min_mask_area=min_mask_area,
        crop_margin=crop_margin,
        empty_hint=empty_hint,
    )
    num_masks = len(ds.image_of)
    logger.info("%d masks from %d images (%s)", num_masks, len(ds.embeddings), source)
    text_emb = None
    if text_mix > 0 and ds.class_names:
        text_emb = embed_texts(clip_enc, [(n,) for n in ds.class_names], templates).cpu().clone()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: TextPromptAdapter = create_model(cfg, pretrained=False)
    if init_checkpoint is not None:
        load_strict(model, load_state_dict(init_checkpoint), cfg.name)
    model = model.to(torch_device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    weights = (float(focal_weight), float(dice_weight))
    rng = np.random.default_rng(seed)
    eval_index = np.arange(min(eval_masks, num_masks))
    model.eval()
    initial = _eval_loss(sam_model, model, ds, eval_index, torch_device, weights, batch_size)
    model.train()

    losses: list[float] = []
    order = rng.permutation(num_masks)
    cursor = 0
    for step in range(steps):
        if cursor + batch_size > num_masks:
            order, cursor = rng.permutation(num_masks), 0
        index = order[cursor : cursor + batch_size]
        cursor += batch_size
        prompts = ds.clip_embeddings[index].clone()
        if text_emb is not None:
            use_text = (rng.random(len(index)) < text_mix) & (ds.class_of[index] >= 0)
            if use_text.any():
                prompts[torch.as_tensor(use_text)] = text_emb[ds.class_of[index][use_text]]
        loss = _batch_loss(sam_model, model, ds, index, prompts, torch_device, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            recent = losses[-log_every:]
            logger.info("step %d/%d loss %.4f", step + 1, steps, sum(recent) / len(recent))
    model.eval()
    final = _eval_loss(sam_model, model, ds, eval_index, torch_device, weights, batch_size)

    # The settings first: a kill from here on resumes (the steps train again, seeded).
    config = out_dir / CONFIG
    base = {"format": CONFIG_FORMAT, "version": 1, "adapter": cfg.name, "sam": sam, "clip": clip}
    _atomic_json(config, {**base, "settings": dict(settings), "status": "training"})
    written("settings")
    checkpoint = out_dir / WEIGHTS
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = checkpoint.with_name(f".{checkpoint.name}.tmp")
    save_file(state, str(tmp), metadata={"format": CONFIG_FORMAT, "adapter": cfg.name})
    os.replace(tmp, checkpoint)
    written("weights")
    summary = {
        **base,
        "arch": {k: cfg.arch[k] for k in ("clip_dim", "prompt_dim", "num_tokens", "hidden_dim")},
        "data": str(data_path),
        "data_source": source,
        "num_images": len(ds.embeddings),
        "num_masks": num_masks,
        "class_names": ds.class_names,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "text_mix": text_mix,
        "min_mask_area": min_mask_area,
        "max_masks_per_image": max_masks_per_image,
        "crop_margin": crop_margin,
        "focal_weight": focal_weight,
        "dice_weight": dice_weight,
        "seed": seed,
        "initial_loss": initial,
        "final_loss": final,
        "losses": losses,
        "settings": dict(settings),
        "status": "done",
    }
    _atomic_json(config, summary)
    written("final")
    return TrainResult(
        checkpoint=checkpoint,
        config=config,
        adapter=cfg.name,
        losses=losses,
        initial_loss=initial,
        final_loss=final,
        num_images=len(ds.embeddings),
        num_masks=num_masks,
        model=model,
    )
