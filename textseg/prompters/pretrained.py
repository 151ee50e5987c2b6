"""Registered text-prompt adapters (task ``"text-prompt"``): CLIP embedding -> SAM tokens.

Each entry ties one SAM to one CLIP (``ModelCfg.pairing``: ``sam`` and ``clip`` registry
names) and describes the :class:`~textseg.prompters.clip_tokens.TextPromptAdapter` between
them. No trained weights are published (status ``"unpublished"``): train one with ``textseg
train-text-prompt`` and load it with ``checkpoint=PATH``. The ``-tiny-test`` entry pairs the
tiny test SAM and CLIP and is built with random weights for the test suite.

Checkpoint descriptions live here, apart from the adapter code.
"""

from __future__ import annotations

from textseg._registry import register_model
from textseg.prompters.clip_tokens import build_text_adapter

_KW = dict(task="text-prompt", prompt_dim=256, num_tokens=2, hidden_dim=1024)

for _sam, _clip, _clip_dim in (
    ("sam-vit-b", "clip-vit-b-32", 512),
    ("sam-vit-b", "clip-vit-b-16", 512),
    ("sam-vit-h", "clip-vit-l-14", 768),
    ("mobile-sam", "clip-vit-b-32", 512),
):
    register_model(
        f"{_sam}+{_clip}-text-adapter",
        description=(
            f"EXPERIMENTAL text prompt for {_sam} from {_clip} embeddings (untrained: "
            f"needs checkpoint=PATH from `textseg train-text-prompt`)"
        ),
        pairing={"sam": _sam, "clip": _clip},
        test_variant="sam-vit-tiny+clip-vit-tiny-text-adapter-tiny-test",
        clip_dim=_clip_dim,
        **_KW,
    )(build_text_adapter)

register_model(
    "sam-vit-tiny+clip-vit-tiny-text-adapter-tiny-test",
    test=True,
    task="text-prompt",
    description="random-init tiny text-prompt adapter for tests (tiny SAM + tiny CLIP)",
    pairing={"sam": "sam-vit-tiny-test", "clip": "clip-vit-tiny-test"},
    clip_dim=16,
    prompt_dim=32,
    num_tokens=2,
    hidden_dim=64,
)(build_text_adapter)
