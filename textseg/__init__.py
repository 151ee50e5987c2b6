"""textseg: open-vocabulary text-to-mask segmentation.

Name the things you want; a detector or CLIP turns the names into prompts, a cached SAM core cuts
the masks, and CLIP checks the labels. Results are ``supervision.Detections``.
"""

from textseg._registry import list_models
from textseg.pipelines import Result, TextSegmenter, list_presets
from textseg.sam import AutomaticMaskGenerator, Prompts, SamCore
from textseg.vocab import Vocabulary

__all__ = [
    "AutomaticMaskGenerator",
    "Prompts",
    "Result",
    "SamCore",
    "TextSegmenter",
    "Vocabulary",
    "__version__",
    "list_models",
    "list_presets",
]

__version__ = "0.1.0"
