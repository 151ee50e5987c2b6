"""The SAM paper's text prompt: a CLIP embedding projected into SAM's sparse prompt tokens.

EXPERIMENTAL. The SAM paper (Kirillov et al., 2023, section 7.5) trained SAM with the CLIP
*image* embedding of each mask's masked crop as an extra prompt and, at inference, gave the
CLIP *text* embedding in its place (CLIP aligns the two spaces). That model was never
released. Here a small :class:`TextPromptAdapter` maps a CLIP embedding (512/768-d) to ``k``
tokens in SAM's 256-d prompt space, appended to the decoder's point/box tokens
(``Prompts.embeddings``); SAM itself stays frozen. No trained adapter weights are published
yet: train one with :func:`textseg.train.text_prompt.train_text_prompt` (CLI
``textseg train-text-prompt``) and pass its checkpoint. Until then this route is a research
hook and :class:`ClipTokenPrompter` warns when it is used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from textseg._image import ImageInput, to_rgb_uint8
from textseg._registry import ModelCfg, get_model_cfg
from textseg.clip.text import DEFAULT_TEMPLATES, TextEmbedder
from textseg.fields import CLASS_NAME
from textseg.prompters.base import ClassPrompts
from textseg.prompters.clip_points import _DATA_KEYS as _POINT_DATA_KEYS
from textseg.prompters.clip_points import ClipPointPrompter
from textseg.sam.prompts import Prompts
from textseg.vocab import ClassesInput, Vocabulary

if TYPE_CHECKING:
    from textseg.clip.encoders import ClipEncoder
    from textseg.sam.core import SamCore

__all__ = [
    "ClipTokenPrompter",
    "ExperimentalWarning",
    "TextPromptAdapter",
    "build_text_adapter",
    "check_core",
    "text_adapter_for",
]


class ExperimentalWarning(UserWarning):
    """A feature whose results are not validated yet (e.g. the untrained SAM text prompt)."""


class TextPromptAdapter(nn.Module):
    """CLIP embedding -> ``num_tokens`` sparse prompt tokens for SAM's mask decoder.

    ``LayerNorm(clip_dim) -> Linear(clip_dim, hidden_dim) -> GELU -> Linear(hidden_dim,
    num_tokens * prompt_dim)``, reshaped to ``(num_tokens, prompt_dim)``. The LayerNorm brings
    the L2-normalised CLIP embedding (entries ~1/sqrt(D)) to unit scale, so image and text
    embeddings of either CLIP size feed the MLP alike.

    EXPERIMENTAL: meaningful only with trained weights (see the module docstring).

    Args:
        clip_dim: CLIP embedding size ``D`` (512 for ViT-B, 768 for ViT-L).
        prompt_dim: SAM's prompt token size (256 for every published SAM).
        num_tokens: Tokens ``k`` per prompt.
        hidden_dim: Width of the MLP's hidden layer.
    """

    def __init__(
        self, clip_dim: int, prompt_dim: int = 256, num_tokens: int = 2, hidden_dim: int = 1024
    ) -> None:
        super().__init__()
        for name, value in (
            ("clip_dim", clip_dim),
            ("prompt_dim", prompt_dim),
            ("num_tokens", num_tokens),
            ("hidden_dim", hidden_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.clip_dim = clip_dim
        self.prompt_dim = prompt_dim
        self.num_tokens = num_tokens
        self.hidden_dim = hidden_dim
        self.norm = nn.LayerNorm(clip_dim)
        self.fc1 = nn.Linear(clip_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, num_tokens * prompt_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, clip_dim)`` CLIP embeddings -> ``(B, num_tokens, prompt_dim)`` tokens."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.clip_dim:
            raise ValueError(
                f"embeddings: expected (B, {self.clip_dim}) CLIP embeddings, got "
                f"{tuple(embeddings.shape)}"
            )
        x = self.fc2(self.act(self.fc1(self.norm(embeddings))))
        return x.reshape(-1, self.num_tokens, self.prompt_dim)

    def extra_repr(self) -> str:
        return (
            f"clip_dim={self.clip_dim}, prompt_dim={self.prompt_dim}, "
            f"num_tokens={self.num_tokens}, hidden_dim={self.hidden_dim}"
        )


def build_text_adapter(cfg: ModelCfg) -> TextPromptAdapter:
    """Registry builder: a random-init :class:`TextPromptAdapter` from ``cfg.arch``
    (``clip_dim``, ``prompt_dim``, ``num_tokens``, ``hidden_dim``)."""
    arch = cfg.arch
    return TextPromptAdapter(
        clip_dim=arch["clip_dim"],
        prompt_dim=arch.get("prompt_dim", 256),
        num_tokens=arch.get("num_tokens", 2),
        hidden_dim=arch.get("hidden_dim", 1024),
    )


def text_adapter_for(sam: str, clip: str) -> str:
    """The registered text-prompt adapter name for a SAM and a CLIP registry name.

    Raises:
        ValueError: No adapter is registered for the pair; the message lists the pairs.
    """
    from textseg._registry import list_models

    pairs = []
    for name in list_models("text-prompt"):
        pairing = get_model_cfg(name, "text-prompt").pairing
        if pairing.get("sam") == sam and pairing.get("clip") == clip:
            return name
        pairs.append(f"{pairing.get('sam')}+{pairing.get('clip')}")
    raise ValueError(
        f"no text-prompt adapter is registered for sam={sam!r} and clip={clip!r}; registered "
        f"pairs: {', '.join(pairs)}"
    )


def check_core(core: SamCore, adapter: TextPromptAdapter) -> None:
    """Raise ValueError unless ``core`` takes ``adapter``'s tokens (a segment_anything SAM
    whose prompt size is the adapter's ``prompt_dim``)."""
    backend = core.backend
    if not getattr(backend, "supports_token_prompts", False):
        raise ValueError(
            f"core: token prompts need a segment_anything SAM (e.g. 'sam-vit-b', 'mobile-sam'); "
            f"{type(backend).__name__} does not take them"
        )
    dim = int(backend.model.prompt_encoder.embed_dim)  # type: ignore[attr-defined]
    if dim != adapter.prompt_dim:
        raise ValueError(
            f"core: SAM's prompt tokens are {dim}-d but the adapter makes "
            f"{adapter.prompt_dim}-d tokens; use the adapter trained for this SAM"
        )


class ClipTokenPrompter:
    """Text -> SAM prompt tokens through a :class:`TextPromptAdapter` (EXPERIMENTAL).

    Each class's CLIP text embedding (template ensemble over its name and synonyms) goes
    through the adapter and is given to SAM as ``Prompts.embeddings``. Without points, one
    prompt per class (the text alone). With ``point_prompter`` (a :class:`ClipPointPrompter`),
    one prompt per instance it finds, the class tokens added to its points ("a point added to
    the text often fixes a wrong pick"); or pass ``points=`` to :meth:`prompts` yourself.

    No trained adapter weights are published: until you train one
    (:func:`textseg.train.text_prompt.train_text_prompt`) and pass
    ``checkpoint=``, the results mean nothing. An :class:`ExperimentalWarning` is issued the
    first time each prompter makes prompts.

    Args:
        adapter: Registry name (``textseg.list_models("text-prompt")``, e.g.
            ``"sam-vit-b+clip-vit-b-32-text-adapter"``) or a built adapter.
        clip: The CLIP encoder or its registry name; default: the one the adapter's registry
            entry names. Its embedding size must be the adapter's ``clip_dim``.
        checkpoint: Trained adapter weights (``model.safetensors`` or the folder holding it),
            loaded strictly. Required for unpublished registry entries; test entries build
            with random weights.
        templates: Text templates with one ``{}``.
        point_prompter: Adds CLIP-derived points to the tokens (one prompt per instance).
        device: Where to run the adapter and a CLIP model built from a name.

    Raises:
        ValueError: Unknown adapter name, no checkpoint for an entry without weights, or a
            CLIP whose embedding size does not fit the adapter.
    """

    def __init__(
        self,
        adapter: str | TextPromptAdapter = "sam-vit-b+clip-vit-b-32-text-adapter",
        *,
        clip: ClipEncoder | str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        point_prompter: ClipPointPrompter | None = None,
        device: str | torch.device | None = "cpu",
    ) -> None:
        from textseg._device import resolve_device

        torch_device = resolve_device(device)
        if isinstance(adapter, str):
            from textseg._hub import create_model

            cfg = get_model_cfg(adapter, task="text-prompt")
            if cfg.status == "unpublished" and checkpoint is None:
                raise ValueError(
                    f"adapter {cfg.name!r} has no published trained weights; train one with "
                    f"`textseg train-text-prompt --sam {cfg.pairing.get('sam')} --clip "
                    f"{cfg.pairing.get('clip')} ...` and pass checkpoint=PATH"
                )
            self.name = cfg.name
            model = create_model(cfg, checkpoint=checkpoint)
            if clip is None:
                clip = cfg.pairing.get("clip")
        elif isinstance(adapter, TextPromptAdapter):
            if checkpoint is not None:
                raise ValueError("checkpoint: only with a registry name, not with a built adapter")
            self.name = type(adapter).__name__
            model = adapter
        else:
            raise TypeError(
                f"adapter: expected a registry name or a TextPromptAdapter, got "
                f"{type(adapter).__name__}"
            )
        if clip is None:
            raise ValueError("clip: required with a built adapter (a ClipEncoder or a name)")
        if isinstance(clip, str):
            from textseg.clip.encoders import load_clip

            clip = load_clip(clip, device=torch_device)
        if int(clip.embed_dim) != model.clip_dim:
            raise ValueError(
                f"clip: {getattr(clip, 'name', type(clip).__name__)!r} makes "
                f"{clip.embed_dim}-d embeddings but the adapter takes {model.clip_dim}-d; use "
                f"the CLIP model the adapter was trained with"
            )
        if point_prompter is not None and not isinstance(point_prompter, ClipPointPrompter):
            raise TypeError(
                f"point_prompter: expected a ClipPointPrompter, got {type(point_prompter).__name__}"
            )
        self.adapter = model.to(torch_device).eval()
        self.clip = clip
        self._text = TextEmbedder(clip, templates, background=())
        self.point_prompter = point_prompter
        self._warned = False

    def __repr__(self) -> str:
        return f"ClipTokenPrompter({self.name!r}, clip={getattr(self.clip, 'name', None)!r})"

    def _warn_once(self) -> None:
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f"ClipTokenPrompter ({self.name}) is experimental: SAM's text prompt needs a "
            f"trained text adapter and no trained weights are published; masks from "
            f"untrained or lightly trained adapters are not meaningful",
            ExperimentalWarning,
            stacklevel=3,
        )

    @property
    def templates(self) -> tuple[str, ...]:
        """The text templates."""
        return self._text.templates

    def check_sam(self, core: SamCore) -> None:
        """Raise ValueError unless ``core`` takes this adapter's tokens (:func:`check_core`);
        ``TextSegmenter`` calls it when composed."""
        check_core(core, self.adapter)

    @torch.inference_mode()
    def tokens(self, classes: ClassesInput) -> np.ndarray:
        """``(C, k, prompt_dim)`` float32 prompt tokens, one set per class."""
        text = self._text(classes).classes
        param = next(self.adapter.parameters())
        out = self.adapter(text.to(device=param.device, dtype=param.dtype))
        return out.float().cpu().numpy()

    def prompts(
        self,
        image: ImageInput,
        classes: ClassesInput,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> ClassPrompts:
        """Token prompts for the classes of ``classes`` in one image.

        Args:
            image: Path, PIL image or ``(H, W, 3)`` uint8 RGB array (used for the point
                prompter and to check points).
            classes: Class names or a :class:`~textseg.vocab.Vocabulary`.
            points: Optional ``(C, P, 2)`` XY original pixels, one row of points per class
                (in class order), added to its tokens; cannot be combined with a
                ``point_prompter``.
            point_labels: ``(C, P)`` 1 foreground / 0 background / -1 padding; required with
                ``points``.

        Returns:
            :class:`ClassPrompts` with ``prompts.embeddings`` ``(N, k, prompt_dim)``; N = C
            (text, optionally with ``points``) or the point prompter's instance count.
            ``confidence`` is NaN for text-only prompts (the adapter does not score: the
            pipeline then reports SAM's predicted IoU), else the point prompter's.
            ``multimask`` is False for text-only prompts (the adapter is
            trained on SAM's single-mask output), ``"auto"`` with points.
        """
        vocab = Vocabulary.coerce(classes)
        array = to_rgb_uint8(image)
        names = tuple(vocab.names)
        self._warn_once()
        tokens = self.tokens(vocab)
        if self.point_prompter is not None:
            if points is not None:
                raise ValueError("points: give either points or a point_prompter, not both")
            found = self.point_prompter.prompts(array, vocab)
            if len(found) == 0:
                return ClassPrompts.empty(
                    data_keys=_POINT_DATA_KEYS, multimask="auto", class_names=names
                )
            p = found.prompts
            return ClassPrompts(
                prompts=Prompts(
                    points=p.points,
                    point_labels=p.point_labels,
                    embeddings=tokens[found.class_id],
                ),
                class_id=found.class_id,
                confidence=found.confidence,
                data=found.data,
                multimask="auto",
                class_names=names,
            )
        n = vocab.num_classes
        data = {
            CLASS_NAME: np.array(names, dtype=str),
            "prompt": np.array(names, dtype=str),
        }
        if points is None:
            if point_labels is not None:
                raise ValueError("point_labels: given without points")
            prompts = Prompts(embeddings=tokens)
            multimask: Any = False
        else:
            if point_labels is None:
                raise ValueError("point_labels: required with points (1 fg, 0 bg, -1 padding)")
            pts = np.asarray(points, dtype=np.float32)
            if pts.ndim != 3 or len(pts) != n:
                raise ValueError(
                    f"points: expected ({n}, P, 2), one row of points per class, got {pts.shape}"
                )
            prompts = Prompts(points=pts, point_labels=point_labels, embeddings=tokens)
            prompts.check_inside(*array.shape[:2])
            multimask = "auto"
        return ClassPrompts(
            prompts=prompts,
            class_id=np.arange(n, dtype=np.int64),
            confidence=np.full(n, np.nan, np.float32),
            data=data,
            multimask=multimask,
            class_names=names,
        )
