"""``supervision.Detections`` helpers shared by the pipeline, the labeler and the tracker."""

from __future__ import annotations

import numpy as np
import supervision as sv

__all__ = ["copy_detections"]


def copy_detections(
    detections: sv.Detections, *, mask: bool = True, class_id: bool = True
) -> sv.Detections:
    """A deep copy of ``detections`` (every array and ``data`` field copied, ``metadata``
    shallow-copied), without its masks when ``mask`` is False and without ``class_id`` when
    ``class_id`` is False (e.g. for a labeler that assigns new classes)."""

    def copied(value: np.ndarray | None) -> np.ndarray | None:
        return None if value is None else value.copy()

    return sv.Detections(
        xyxy=detections.xyxy.copy(),
        mask=copied(detections.mask) if mask else None,
        confidence=copied(detections.confidence),
        class_id=copied(detections.class_id) if class_id else None,
        tracker_id=copied(detections.tracker_id),
        data={k: np.asarray(v).copy() for k, v in detections.data.items()},
        metadata=dict(detections.metadata),
    )
