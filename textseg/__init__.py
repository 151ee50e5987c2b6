"""textseg: open-vocabulary text-to-mask segmentation.

Name the things you want; a detector or CLIP turns the names into prompts, a cached SAM core cuts
the masks, and CLIP checks the labels. Results are ``supervision.Detections``.

The public names below are imported on first use (PEP 562), so ``import textseg`` and the
``textseg`` command start without loading torch: the command sets its thread policy before the
OpenMP runtime starts (see :mod:`textseg.cli`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textseg._lazy import lazy_exports

__all__ = [
    "AutomaticMaskGenerator",
    "ChecksumError",
    "Prompts",
    "Result",
    "SamCore",
    "StateDictError",
    "TextSegmenter",
    "Vocabulary",
    "WeightsNotFoundError",
    "__version__",
    "create_model",
    "get_model_cfg",
    "list_models",
    "list_presets",
]

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "ChecksumError": "textseg._hub",
    "StateDictError": "textseg._hub",
    "WeightsNotFoundError": "textseg._hub",
    "create_model": "textseg._hub",
    "get_model_cfg": "textseg._registry",
    "list_models": "textseg._registry",
    "Result": "textseg.pipelines",
    "TextSegmenter": "textseg.pipelines",
    "list_presets": "textseg.pipelines",
    "AutomaticMaskGenerator": "textseg.sam",
    "Prompts": "textseg.sam",
    "SamCore": "textseg.sam",
    "Vocabulary": "textseg.vocab",
}

if TYPE_CHECKING:
    from textseg._hub import ChecksumError, StateDictError, WeightsNotFoundError, create_model
    from textseg._registry import get_model_cfg, list_models
    from textseg.pipelines import Result, TextSegmenter, list_presets
    from textseg.sam import AutomaticMaskGenerator, Prompts, SamCore
    from textseg.vocab import Vocabulary


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
