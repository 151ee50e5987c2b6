"""Named compositions: ``TextSegmenter.from_preset("grounded-sam")``.

A preset names its components (registry names) and how they fit together;
:func:`build_components` builds them and returns the keyword arguments of
:class:`~textseg.pipelines.TextSegmenter` (``from_preset`` is ``cls(**build_components(...))``).
The table :data:`PRESETS` is the one place that lists them; ``README.md`` describes each.

- ``grounded-sam``: Grounding DINO tiny boxes, SAM ViT-B; named objects, best boxes.
- ``grounded-sam-verified``: the same, plus CLIP ViT-B/32 verifying every mask.
- ``owlv2-sam``: OWLv2 base boxes, SAM ViT-B; long-tail names.
- ``fast``: Grounding DINO tiny boxes, MobileSAM; CPU speed.
- ``clip-points``: dense CLIP similarity -> points, SAM ViT-B, SAM's three candidates chosen by
  CLIP on the masked region; no detector (training-free).
- ``clip-tokens``: CLIP text -> SAM sparse tokens (experimental), SAM ViT-B.
- ``everything-clip``: automatic grid, SAM ViT-B, CLIP ViT-B/32 naming.
- ``grounded-sam-hq``: Grounding DINO tiny boxes, HQ-SAM ViT-B; fine boundaries.
- ``sam3``: SAM 3 alone: every prompt (and exemplar box) -> all its instances with SAM 3's own
  masks; the SAM 3 tracker answers clicks and box prompts (app, eval). SAM License.
- ``sam3-verified``: the same, plus CLIP ViT-B/32 verifying every mask.
- ``tiny-test``: an alias of ``grounded-sam-verified`` with ``tiny=True``.

``tiny=True`` (``--tiny`` on the command line) builds every preset with the tiny random-init
variant of each of its models (:func:`textseg._registry.resolve_cfg`): the whole composition
runs offline in seconds, with meaningless masks. Every component can be overridden by registry
name (``sam=``, ``detector=``, ``clip=``); ``sam_checkpoint=`` loads fine-tuned SAM weights of
the chosen architecture, which keeps its size under ``tiny=True`` (a fine-tuned real-size SAM
tried with the rest tiny).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from textseg._registry import get_model_cfg, resolve_cfg

__all__ = ["PRESETS", "Preset", "build_components", "fetch_all", "list_presets"]


@dataclass(frozen=True)
class Preset:
    """A named composition: what prompts SAM, which models, which labeler.

    Attributes:
        name: The preset's name.
        prompter: Key of :data:`PROMPTERS` (how text becomes prompts), or ``"automatic"`` for
            the automatic mask generator (segment everything, a labeler names the masks).
        sam: SAM registry name.
        detector: Detector registry name (box prompters).
        clip: CLIP registry name (CLIP prompters, selectors and labelers).
        labeler: ``None``, ``"verify"`` (CLIP re-checks the prompter's classes) or ``"name"``.
        selector: ``None`` (SAM's predicted IoU picks among multimask candidates) or ``"clip"``
            (CLIP on the masked region picks).
        text_adapter: Text-prompt adapter registry name (``clip-tokens``).
        description: One line for ``list_presets`` and the README.
        alias_of: For an alias: the preset it stands for; ``tiny`` then applies.
        tiny: The alias builds the tiny variants.
    """

    name: str
    prompter: str
    sam: str
    detector: str | None = None
    clip: str | None = None
    labeler: str | None = None
    selector: str | None = None
    text_adapter: str | None = None
    description: str = ""
    alias_of: str | None = None
    tiny: bool = False
    labeler_options: Mapping[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "grounded-sam",
            "boxes",
            "sam-vit-b",
            detector="grounding-dino-tiny",
            description="Grounding DINO boxes -> SAM ViT-B masks",
        ),
        Preset(
            "grounded-sam-verified",
            "boxes",
            "sam-vit-b",
            detector="grounding-dino-tiny",
            clip="clip-vit-b-32",
            labeler="verify",
            description="as grounded-sam, CLIP re-checks each mask's class",
        ),
        Preset(
            "owlv2-sam",
            "boxes",
            "sam-vit-b",
            detector="owlv2-base",
            description="OWLv2 boxes -> SAM ViT-B masks",
        ),
        Preset(
            "fast",
            "boxes",
            "mobile-sam",
            detector="grounding-dino-tiny",
            description="Grounding DINO boxes -> MobileSAM masks",
        ),
        Preset(
            "clip-points",
            "clip-points",
            "sam-vit-b",
            clip="clip-vit-b-16",
            selector="clip",
            description="CLIP similarity peaks -> SAM points, candidates chosen by CLIP",
        ),
        Preset(
            "clip-tokens",
            "clip-tokens",
            "sam-vit-b",
            clip="clip-vit-b-32",
            text_adapter="sam-vit-b+clip-vit-b-32-text-adapter",
            description="CLIP text embedding -> SAM sparse tokens (experimental)",
        ),
        Preset(
            "everything-clip",
            "automatic",
            "sam-vit-b",
            clip="clip-vit-b-32",
            labeler="name",
            description="automatic masks named by CLIP",
        ),
    )
}
PRESETS.update(
    {
        p.name: p
        for p in (
            Preset(
                "grounded-sam-hq",
                "boxes",
                "sam-hq-vit-b",
                detector="grounding-dino-tiny",
                description="Grounding DINO boxes -> HQ-SAM ViT-B masks (fine boundaries)",
            ),
            # The "detector" of the SAM 3 presets is the concept model (--detector picks it,
            # e.g. sam3-litetext-s0); the SAM core is SAM 3's tracker, for clicks and boxes.
            Preset(
                "sam3",
                "sam3",
                "sam3-tracker",
                detector="sam3",
                description="SAM 3: every instance of each prompt, SAM 3's own masks",
            ),
            Preset(
                "sam3-verified",
                "sam3",
                "sam3-tracker",
                detector="sam3",
                clip="clip-vit-b-32",
                labeler="verify",
                description="as sam3, CLIP re-checks each mask's class",
            ),
        )
    }
)
PRESETS["tiny-test"] = replace(
    PRESETS["grounded-sam-verified"],
    name="tiny-test",
    alias_of="grounded-sam-verified",
    tiny=True,
    description="grounded-sam-verified with tiny random models (tests, offline trials)",
)


def list_presets() -> list[str]:
    """Names of the presets."""
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset ``name``.

    Raises:
        ValueError: Unknown name; the message lists the presets and the closest match.
    """
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown preset {name!r}.{hint} Valid presets: {', '.join(list_presets())}")


def fetch_all(names: list[str]) -> None:
    """Resolve (download if allowed) every model's weights before building anything, so that a
    missing file is reported together with all the others, in one line."""
    from textseg._hub import WeightsNotFoundError, is_offline, missing_files, resolve_weights

    missing = []
    for model in names:
        cfg = get_model_cfg(model)
        if cfg.weights is None:
            continue
        try:
            resolve_weights(cfg)
        except WeightsNotFoundError as err:
            missing.append((cfg, err))
    if not missing:
        return
    if len(missing) == 1:
        raise missing[0][1]
    why = "offline: HF_HUB_OFFLINE is set" if is_offline() else "download failed"
    raise WeightsNotFoundError(
        f"weights missing ({why}) for {', '.join(c.name for c, _ in missing)}: get "
        # One file may hold several models (SAM 3's concept model and tracker): named once.
        + "; ".join(dict.fromkeys(missing_files(cfg) for cfg, _ in missing))
        + "; put them in a folder and set TEXTSEG_WEIGHTS to that folder"
    )


@dataclass
class _Parts:
    """What a prompter builder gets: the resolved model names and the run's options."""

    preset: Preset
    sam: str
    detector: str | None
    clip: str | None
    text_adapter: str | None
    device: str
    pretrained: bool
    options: dict[str, Any]


def _detector_boxes(parts: _Parts) -> Any:
    from textseg.detectors import build_detector
    from textseg.prompters.box import BoxPrompter

    if parts.detector is None:
        raise ValueError(f"detector: preset {parts.preset.name!r} needs a detector name")
    kwargs: dict[str, Any] = {"device": parts.device}
    if parts.options.get("box_threshold") is not None:
        kwargs["box_threshold"] = parts.options["box_threshold"]
    return BoxPrompter(build_detector(parts.detector, pretrained=parts.pretrained, **kwargs))


def _clip_points(parts: _Parts) -> Any:
    from textseg.prompters.clip_points import ClipPointPrompter

    return ClipPointPrompter(_clip(parts))


def _clip_tokens(parts: _Parts) -> Any:
    from textseg._hub import create_model
    from textseg.prompters.clip_tokens import ClipTokenPrompter

    if parts.text_adapter is None:
        raise ValueError("clip-tokens needs a text adapter (registry name or checkpoint)")
    checkpoint = parts.options.get("text_adapter_checkpoint")
    cfg = get_model_cfg(parts.text_adapter, "text-prompt")
    if checkpoint is None and (not parts.pretrained or cfg.is_test):
        # Random weights of the registered architecture (speed trials, tiny runs).
        adapter = create_model(cfg, pretrained=False)
        return ClipTokenPrompter(adapter, clip=_clip(parts), device=parts.device)
    return ClipTokenPrompter(
        parts.text_adapter, clip=_clip(parts), checkpoint=checkpoint, device=parts.device
    )


def _sam3(parts: _Parts) -> Any:
    from textseg.prompters.sam3 import Sam3Prompter

    if parts.detector is None:
        raise ValueError(f"detector: preset {parts.preset.name!r} needs a SAM 3 model name")
    kwargs: dict[str, Any] = {"device": parts.device, "pretrained": parts.pretrained}
    if parts.options.get("box_threshold") is not None:
        kwargs["box_threshold"] = parts.options["box_threshold"]
    kwargs["exemplars"] = tuple(parts.options.get("exemplars") or ())
    return Sam3Prompter(parts.detector, **kwargs)


#: How each kind of prompter is built from a preset's parts.
PROMPTERS: dict[str, Callable[[_Parts], Any]] = {
    "boxes": _detector_boxes,
    "sam3": _sam3,
    "clip-points": _clip_points,
    "clip-tokens": _clip_tokens,
}


def _clip(parts: _Parts) -> Any:
    from textseg.clip import load_clip

    if parts.clip is None:
        raise ValueError(f"clip: preset {parts.preset.name!r} needs a CLIP model name")
    key = ("clip", parts.clip)
    if key not in parts.options.setdefault("_built", {}):
        parts.options["_built"][key] = load_clip(
            parts.clip, device=parts.device, pretrained=parts.pretrained
        )
    return parts.options["_built"][key]


def build_components(
    name: str,
    *,
    tiny: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    sam: str | None = None,
    sam_checkpoint: str | None = None,
    detector: str | None = None,
    clip: str | None = None,
    box_threshold: float | None = None,
    pretrained: bool = True,
    points_per_side: int = 32,
    text_adapter_checkpoint: str | None = None,
    exemplars: Sequence[Any] = (),
    specialist: str | None = None,
    **segmenter_options: Any,
) -> dict[str, Any]:
    """Build the preset ``name``'s components: ``TextSegmenter``'s keyword arguments.

    Args:
        name: One of :func:`list_presets`.
        tiny: Build the tiny random-init variant of every model (offline, seconds); the
            component overrides below are mapped to their tiny variants too, except a ``sam``
            given a ``sam_checkpoint`` (the checkpoint's architecture is built).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``, for every component.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` for SAM.
        sam: SAM registry name (``textseg.list_models("sam")``).
        sam_checkpoint: Fine-tuned SAM weights (a state dict of the ``sam`` architecture,
            e.g. MedSAM for ``sam-vit-b``), loaded strictly instead of the published ones.
        detector: Detector registry name, for box presets.
        clip: CLIP registry name, for CLIP prompters, selectors and labelers.
        box_threshold: Default detector threshold.
        pretrained: False builds every component with random weights at its real size
            (speed trials).
        points_per_side: Grid of the automatic generator (``everything-clip``).
        text_adapter_checkpoint: Trained CLIP -> SAM adapter (``clip-tokens``), as written by
            ``textseg train-text-prompt`` (its folder or ``model.safetensors``).
        exemplars: :class:`textseg.prompters.sam3.Exemplar` boxes, "more like this" (SAM 3
            presets only).
        specialist: A folder written by ``textseg train``: the trained specialist replaces
            the preset's prompter and SAM (its masks come with their classes, see
            :class:`textseg.train.Specialist`); the preset's models are not built.
        **segmenter_options: ``TextSegmenter`` options (``min_area``, ``dedup_iou``...).

    Returns:
        ``{"prompter", "sam", "labeler", "selector", "automatic", **segmenter_options}``.

    Raises:
        ValueError: Unknown preset or model name, or a component the preset cannot use.
        WeightsNotFoundError: Weights missing (all of them named in one line).
    """
    from textseg.sam import AutomaticMaskGenerator, SamCore

    if specialist is not None:
        from textseg.specialists import load_specialist

        given = {"sam": sam, "sam_checkpoint": sam_checkpoint, "detector": detector, "clip": clip}
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise ValueError(
                f"specialist: a trained specialist replaces the preset's models; drop "
                f"{', '.join(clash)}"
            )
        get_preset(name)
        masker = load_specialist(specialist, device=device)
        return {"prompter": None, "sam": None, "masker": masker, **segmenter_options}

    preset = get_preset(name)
    tiny = tiny or preset.tiny
    if exemplars and preset.prompter != "sam3":
        raise ValueError(
            f"exemplars: box exemplars are a SAM 3 prompt; use --preset sam3 or sam3-verified, "
            f"not {name!r}"
        )
    names = {
        "sam": sam or preset.sam,
        "detector": (detector or preset.detector) if preset.prompter in ("boxes", "sam3") else None,
        "clip": clip or preset.clip,
        "text_adapter": preset.text_adapter,
    }
    if preset.prompter == "clip-tokens" and (sam or clip):
        from textseg.prompters.clip_tokens import text_adapter_for

        names["text_adapter"] = text_adapter_for(names["sam"], names["clip"])
    if tiny:
        # An explicit SAM checkpoint keeps its (real-size) architecture: a fine-tuned SAM
        # tried with every other model tiny.
        checkpoints = {"sam": sam_checkpoint}
        names = {
            k: None if v is None else resolve_cfg(v, tiny=True, checkpoint=checkpoints.get(k)).name
            for k, v in names.items()
        }
    needs_clip = preset.prompter in ("clip-points", "clip-tokens") or bool(
        preset.labeler or preset.selector
    )
    if not needs_clip:
        names["clip"] = None
    if pretrained and not tiny:
        wanted = [v for k, v in names.items() if v and not (k == "sam" and sam_checkpoint)]
        if names["text_adapter"] and text_adapter_checkpoint:
            wanted.remove(names["text_adapter"])
        fetch_all(wanted)
    parts = _Parts(
        preset,
        names["sam"],
        names["detector"],
        names["clip"],
        names["text_adapter"],
        device,
        pretrained,
        {
            "box_threshold": box_threshold,
            "text_adapter_checkpoint": text_adapter_checkpoint,
            "exemplars": exemplars,
        },
    )
    core = SamCore(
        names["sam"], device=device, dtype=dtype, pretrained=pretrained, checkpoint=sam_checkpoint
    )
    labeler = selector = automatic = prompter = None
    if preset.labeler is not None:
        from textseg.labelers import ClipLabeler

        options = dict(preset.labeler_options)
        if tiny:
            # Random CLIP weights give near-uniform probabilities, so background texts would
            # reject every mask; without them verify mode keeps the prompter's classes.
            options.setdefault("background", ())
        labeler = ClipLabeler(_clip(parts), mode=preset.labeler, **options)
    if preset.selector == "clip":
        from textseg.pipelines.selectors import ClipMaskSelector

        selector = ClipMaskSelector(_clip(parts))
    if preset.prompter == "automatic":
        automatic = AutomaticMaskGenerator(core, points_per_side=points_per_side, dedup="mask")
    else:
        if preset.prompter not in PROMPTERS:
            raise ValueError(f"preset {preset.name!r}: unknown prompter {preset.prompter!r}")
        prompter = PROMPTERS[preset.prompter](parts)
        same_weights = (
            sam_checkpoint is None
            and names["detector"] is not None
            and get_model_cfg(names["detector"]).weights == get_model_cfg(names["sam"]).weights
        )
        if same_weights and hasattr(prompter, "share_backbone"):
            prompter.share_backbone(core)  # SAM 3: one ViT for the concepts and the clicks
    return {
        "prompter": prompter,
        "sam": core,
        "labeler": labeler,
        "selector": selector,
        "automatic": automatic,
        **segmenter_options,
    }
