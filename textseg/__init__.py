"""textseg: open-vocabulary text-to-mask segmentation.

Name the things you want; a detector or CLIP turns the names into prompts, a cached SAM core cuts
the masks, and CLIP checks the labels. Results are ``supervision.Detections``.
"""

from textseg._registry import list_models

__all__ = ["__version__", "list_models"]

__version__ = "0.1.0"
