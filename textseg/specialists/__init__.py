"""Trained specialists at inference: small fast models trained by ``textseg train``
(:mod:`textseg.train`) and run as the mask source of the pipelines (``--specialist DIR``).

- :func:`load_specialist` / :class:`Specialist` (:mod:`textseg.specialists.predictor`);
- the networks: :mod:`textseg.specialists.nets` (SegFormer, Mask R-CNN),
  :mod:`textseg.specialists.yolo` (YOLO-seg through ultralytics, AGPL-3.0, optional);
- their registry entries (task ``"specialist"``): :mod:`textseg.specialists.pretrained`.

This package never imports :mod:`textseg.train`: the trainer depends on it, not the reverse.
"""

from textseg.specialists.predictor import (
    Specialist,
    is_specialist_dir,
    load_specialist,
    specialist_classes,
)

__all__ = ["Specialist", "is_specialist_dir", "load_specialist", "specialist_classes"]
