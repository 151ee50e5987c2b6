"""textseg: open-vocabulary text-to-mask segmentation.

Name the things you want; a detector or CLIP turns the names into prompts, a cached SAM core cuts
the masks, and CLIP checks the labels. Results are ``supervision.Detections``.
"""

from textseg._hub import ChecksumError, StateDictError, WeightsNotFoundError, create_model
from textseg._registry import get_model_cfg, list_models
from textseg.pipelines import Result, TextSegmenter, list_presets
from textseg.sam import AutomaticMaskGenerator, Prompts, SamCore
from textseg.vocab import Vocabulary

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
