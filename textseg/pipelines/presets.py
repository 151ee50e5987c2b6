"""Named pipeline compositions: ``TextSegmenter.from_preset("grounded-sam")``.

- ``grounded-sam``: Grounding DINO tiny boxes, SAM ViT-B; named objects, best boxes.
- ``grounded-sam-verified``: the same, plus CLIP ViT-B/32 verifying every mask; fewer false
  positives.
- ``owlv2-sam``: OWLv2 base boxes, SAM ViT-B; long-tail names.
- ``fast``: Grounding DINO tiny boxes, MobileSAM; CPU speed.
- ``clip-points``: CLIP similarity map -> points, SAM ViT-B; no detector (training-free).
- ``clip-tokens``: CLIP text -> SAM sparse tokens (experimental), SAM ViT-B; the SAM paper's
  text prompt.
- ``everything-clip``: automatic grid, SAM ViT-B, CLIP ViT-B/32 naming; "segment everything,
  then name it".
- ``tiny-test``: tiny random Grounding DINO, SAM and CLIP; tests, offline trials.

Every component can be overridden: ``sam=``, ``detector=``, ``clip=`` take registry names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textseg.pipelines.text_segmenter import TextSegmenter
from textseg.sam import AutomaticMaskGenerator, SamCore

__all__ = ["PRESETS", "build_preset", "list_presets"]


@dataclass(frozen=True)
class Preset:
    """A named composition and its default component names."""

    name: str
    kind: str  # "boxes", "clip-points", "clip-tokens", "everything"
    sam: str
    detector: str | None = None
    clip: str | None = None
    labeler_mode: str | None = None  # None, "verify" or "name"
    text_adapter: str | None = None
    description: str = ""
    labeler_kwargs: tuple[tuple[str, Any], ...] = ()


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
            labeler_mode="verify",
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
            description="CLIP similarity peaks -> SAM point prompts (no detector)",
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
            "everything",
            "sam-vit-b",
            clip="clip-vit-b-32",
            labeler_mode="name",
            description="automatic masks named by CLIP",
        ),
        Preset(
            "tiny-test",
            "boxes",
            "sam-vit-tiny-test",
            detector="grounding-dino-tiny-test",
            clip="clip-vit-tiny-test",
            labeler_mode="verify",
            # Random CLIP weights give near-uniform probabilities; without background texts
            # verify mode keeps the detector's classes, so the tiny pipeline yields masks.
            labeler_kwargs=(("background", ()),),
            description="tiny random-weight models: tests and offline trials",
        ),
    )
}


def fetch_all(names: list[str]) -> None:
    """Resolve (download if allowed) every model's weights before building anything, so that a
    missing file is reported together with all the others, in one line."""
    from textseg._hub import WeightsNotFoundError, _missing_message, is_offline, resolve_weights
    from textseg._registry import get_model_cfg

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
    parts = [
        _missing_message(cfg, why).split(": get ", 1)[1].split(", put it in")[0]
        for cfg, _ in missing
    ]
    raise WeightsNotFoundError(
        f"weights missing ({why}) for {', '.join(c.name for c, _ in missing)}: get "
        + "; ".join(parts)
        + "; put them in a folder and set TEXTSEG_WEIGHTS to that folder"
    )


def list_presets() -> list[str]:
    """Names of the presets."""
    return sorted(PRESETS)


def _preset(name: str) -> Preset:
    if name in PRESETS:
        return PRESETS[name]
    import difflib

    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown preset {name!r}.{hint} Valid presets: {', '.join(list_presets())}")


def build_preset(
    name: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    sam: str | None = None,
    detector: str | None = None,
    clip: str | None = None,
    box_threshold: float | None = None,
    min_area: int = 0,
    pretrained: bool = True,
    points_per_side: int = 32,
    text_adapter_checkpoint: str | None = None,
    **segmenter_kwargs: Any,
) -> TextSegmenter:
    """Build the preset ``name``; component names and thresholds override its defaults.

    Args:
        name: One of :func:`list_presets`.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``, for every component.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` for SAM.
        sam: SAM registry name (``textseg.list_models("sam")``).
        detector: Detector registry name, for box presets.
        clip: CLIP registry name, for CLIP prompters and labelers.
        box_threshold: Default detector threshold.
        min_area: Drop masks smaller than this many pixels.
        pretrained: False builds every component with random weights (speed trials).
        points_per_side: Grid of the automatic generator (``everything-clip``).
        text_adapter_checkpoint: Trained CLIP -> SAM adapter (``clip-tokens``), as written
            by ``textseg train-text-prompt`` (its folder or ``model.safetensors``).
    """
    preset = _preset(name)
    sam_name = sam or preset.sam
    clip_name = clip or preset.clip
    adapter_name = preset.text_adapter
    if preset.kind == "clip-tokens" and (sam or clip):
        from textseg.prompters.clip_tokens import text_adapter_for

        adapter_name = text_adapter_for(sam_name, clip_name)  # the adapter of this pair
    if pretrained:
        needed = [sam_name]
        if preset.kind == "boxes":
            needed.append(detector or preset.detector)
        if clip_name is not None and (preset.labeler_mode or preset.kind != "boxes"):
            needed.append(clip_name)
        if preset.kind == "clip-tokens" and adapter_name and not text_adapter_checkpoint:
            needed.append(adapter_name)
        fetch_all([n for n in needed if n])
    core = SamCore(sam_name, device=device, dtype=dtype, pretrained=pretrained)
    labeler = None
    if preset.labeler_mode is not None and clip_name is not None:
        labeler = _labeler(
            clip_name, preset.labeler_mode, device, pretrained, dict(preset.labeler_kwargs)
        )
    builders: dict[str, Callable[[], TextSegmenter]] = {
        "boxes": lambda: TextSegmenter(
            _box_prompter(detector or preset.detector, device, box_threshold, pretrained),
            core,
            labeler,
            min_area=min_area,
            **segmenter_kwargs,
        ),
        "clip-points": lambda: TextSegmenter(
            _clip_points(clip_name, device, pretrained),
            core,
            labeler,
            min_area=min_area,
            **segmenter_kwargs,
        ),
        "clip-tokens": lambda: TextSegmenter(
            _clip_tokens(clip_name, adapter_name, text_adapter_checkpoint, device, pretrained),
            core,
            labeler,
            min_area=min_area,
            **segmenter_kwargs,
        ),
        "everything": lambda: TextSegmenter(
            None,
            core,
            labeler,
            min_area=min_area,
            automatic=AutomaticMaskGenerator(core, points_per_side=points_per_side, dedup="mask"),
            **segmenter_kwargs,
        ),
    }
    return builders[preset.kind]()


def _box_prompter(
    detector: str | None, device: str, box_threshold: float | None, pretrained: bool
) -> Any:
    from textseg.detectors import build_detector
    from textseg.prompters.box import BoxPrompter

    if detector is None:
        raise ValueError("detector: this preset needs a detector name")
    kwargs: dict[str, Any] = {"device": device}
    if box_threshold is not None:
        kwargs["box_threshold"] = box_threshold
    return BoxPrompter(build_detector(detector, pretrained=pretrained, **kwargs))


def _labeler(clip: str, mode: str, device: str, pretrained: bool, kwargs: dict[str, Any]) -> Any:
    from textseg.clip import load_clip
    from textseg.labelers import ClipLabeler

    return ClipLabeler(load_clip(clip, device=device, pretrained=pretrained), mode=mode, **kwargs)


def _clip_points(clip: str | None, device: str, pretrained: bool) -> Any:
    from textseg.clip import load_clip
    from textseg.prompters.clip_points import ClipPointPrompter

    if clip is None:
        raise ValueError("clip: this preset needs a CLIP model name")
    return ClipPointPrompter(load_clip(clip, device=device, pretrained=pretrained))


def _clip_tokens(
    clip: str | None,
    adapter: str | None,
    checkpoint: str | None,
    device: str,
    pretrained: bool,
) -> Any:
    from textseg._hub import build_model
    from textseg._registry import get_model_cfg
    from textseg.clip import load_clip
    from textseg.prompters.clip_tokens import ClipTokenPrompter

    if clip is None or adapter is None:
        raise ValueError("clip-tokens needs a CLIP model and a text adapter")
    encoder = load_clip(clip, device=device, pretrained=pretrained)
    if not pretrained and checkpoint is None:
        # Speed trials: a random adapter of the registered architecture.
        random_adapter = build_model(get_model_cfg(adapter, "text-prompt"), pretrained=False)
        return ClipTokenPrompter(random_adapter, clip=encoder, device=device)
    return ClipTokenPrompter(adapter, clip=encoder, checkpoint=checkpoint, device=device)
