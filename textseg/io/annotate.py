"""Draw detections on the image with supervision's annotators (masks, boxes, labels).

Labels read ``"<class> <confidence>"`` (e.g. ``"cat 0.87"``), built here from
``data["class_name"]`` and ``confidence``; the class name itself is never changed. Colours are
by class (supervision's default palette, the same as :func:`textseg.io.png.palette`), by
instance when there are no class ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image

from textseg._image import ImageInput, to_rgb_uint8
from textseg.fields import CLASS_NAME
from textseg.io._common import check_detections, prepare_output_dir

__all__ = ["annotate", "detection_labels", "save_annotated"]


def detection_labels(
    detections: sv.Detections, classes: Sequence[str] | None = None, *, decimals: int = 2
) -> list[str]:
    """One label per detection: class name, then the confidence if there is one.

    The name is ``data["class_name"]``, else ``classes[class_id]``, else ``"class <id>"``,
    else ``"object"``.

    Returns:
        ``N`` strings like ``"cat 0.87"``.
    """
    detections = check_detections(detections, what="detection_labels")
    n = len(detections)
    names = detections.data.get(CLASS_NAME)
    if names is not None:
        texts = [str(name) for name in names]
    elif detections.class_id is not None:
        ids = [int(k) for k in detections.class_id]
        if classes is not None:
            texts = [classes[k] if 0 <= k < len(classes) else f"class {k}" for k in ids]
        else:
            texts = [f"class {k}" for k in ids]
    else:
        texts = ["object"] * n
    if detections.confidence is not None:
        texts = [f"{t} {float(c):.{decimals}f}" for t, c in zip(texts, detections.confidence)]
    return texts


def annotate(
    image: ImageInput,
    detections: sv.Detections,
    *,
    classes: Sequence[str] | None = None,
    masks: bool = True,
    boxes: bool = True,
    labels: bool = True,
    opacity: float = 0.5,
) -> np.ndarray:
    """Draw masks, boxes and labels.

    Args:
        image: The image the detections belong to (path, PIL, or numpy, see
            :func:`textseg._image.to_rgb_uint8`).
        detections: ``xyxy`` (N, 4) absolute pixels, optional ``mask`` (N, H, W) bool of the
            image's size, ``class_id``, ``confidence``, ``data["class_name"]``.
        classes: Names for ``class_id`` when ``data`` has no ``class_name``.
        masks: Draw the masks (when there are any).
        boxes: Draw the boxes.
        labels: Draw the labels.
        opacity: Mask opacity in [0, 1].

    Returns:
        A new ``(H, W, 3)`` uint8 RGB image (``PIL.Image.fromarray`` makes it a PIL image).

    Raises:
        ValueError: Masks of another size than the image, or opacity outside [0, 1].
    """
    rgb = to_rgb_uint8(image)
    detections = check_detections(detections, what="annotate")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    height, width = rgb.shape[:2]
    if detections.mask is not None and tuple(np.shape(detections.mask)[1:]) != (height, width):
        raise ValueError(
            f"annotate: masks are {tuple(np.shape(detections.mask)[1:])} (H, W) but the image is "
            f"{(height, width)}; pass the image the detections were made on"
        )
    if len(detections) == 0:
        return rgb.copy()
    lookup = sv.ColorLookup.CLASS if detections.class_id is not None else sv.ColorLookup.INDEX
    # supervision draws numpy images as OpenCV BGR: convert in, and back out.
    scene = np.ascontiguousarray(rgb[:, :, ::-1])
    if masks and detections.mask is not None:
        scene = sv.MaskAnnotator(opacity=opacity, color_lookup=lookup).annotate(scene, detections)
    if boxes:
        thickness = sv.calculate_optimal_line_thickness((width, height))
        scene = sv.BoxAnnotator(thickness=thickness, color_lookup=lookup).annotate(
            scene, detections
        )
    if labels:
        annotator = sv.LabelAnnotator(
            color_lookup=lookup,
            text_scale=sv.calculate_optimal_text_scale((width, height)),
            text_padding=max(2, round(min(width, height) / 150)),
            smart_position=True,
        )
        scene = annotator.annotate(scene, detections, labels=detection_labels(detections, classes))
    return np.ascontiguousarray(scene[:, :, ::-1])


def save_annotated(
    path: str | os.PathLike[str],
    image: ImageInput,
    detections: sv.Detections,
    **options: object,
) -> Path:
    """Annotate (see :func:`annotate`, same options) and save to ``path`` (format from the
    suffix; folder created if needed).

    Returns:
        The file.
    """
    out = annotate(image, detections, **options)  # type: ignore[arg-type]
    path = Path(path)
    prepare_output_dir(path.parent, what="save_annotated")
    try:
        Image.fromarray(out).save(path)
    except (KeyError, ValueError):
        raise ValueError(
            f"cannot save an image as {path.name!r}: unknown file type; use .png or .jpg"
        ) from None
    return path
