"""SAM backends: the model-specific half of the SAM core (encode, decode on an embedding).

:func:`make_backend` picks the backend for a model object from :data:`BACKENDS`, a table of
``model class -> backend class`` given as import paths, so that no model library (transformers
is slow to import) is loaded before a model of it is used.
"""

from __future__ import annotations

import importlib

from textseg.sam.backends.base import SamBackend

__all__ = ["BACKENDS", "SamBackend", "make_backend"]

#: ``(fully qualified model class, "module:BackendClass")``; the first entry whose class is in
#: the model's MRO wins.
BACKENDS: tuple[tuple[str, str], ...] = (
    (
        "segment_anything.modeling.sam.Sam",
        "textseg.sam.backends.segment_anything:SegmentAnythingBackend",
    ),
    (
        "transformers.models.sam.modeling_sam.SamModel",
        "textseg.sam.backends.hf:TransformersSamBackend",
    ),
    (
        "transformers.models.sam2_video.modeling_sam2_video.Sam2VideoModel",
        "textseg.sam.backends.sam2:Sam2Backend",
    ),
    ("transformers.models.sam2.modeling_sam2.Sam2Model", "textseg.sam.backends.sam2:Sam2Backend"),
    (
        "transformers.models.edgetam_video.modeling_edgetam_video.EdgeTamVideoModel",
        "textseg.sam.backends.sam2:Sam2Backend",
    ),
    (
        "transformers.models.edgetam.modeling_edgetam.EdgeTamModel",
        "textseg.sam.backends.sam2:Sam2Backend",
    ),
    (
        "transformers.models.sam_hq.modeling_sam_hq.SamHQModel",
        "textseg.sam.backends.hq:SamHQBackend",
    ),
    (
        "transformers.models.sam3_tracker.modeling_sam3_tracker.Sam3TrackerModel",
        "textseg.sam.backends.sam3:Sam3TrackerBackend",
    ),
)


def _load(path: str) -> type[SamBackend]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def make_backend(model: object) -> SamBackend:
    """The backend for a model object (a backend is returned as it is).

    Raises:
        TypeError: No backend takes this model class; the message lists the ones that do.
    """
    if isinstance(model, SamBackend):
        return model
    lineage = {f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__}
    for model_class, backend in BACKENDS:
        if model_class in lineage:
            return _load(backend)(model)
    known = ", ".join(c.rsplit(".", 1)[-1] for c, _ in BACKENDS)
    raise TypeError(f"expected a SAM model ({known}), got {type(model).__name__}")
