"""The export formats by name, and what each owns in an output folder.

Kept apart from :mod:`textseg.io.export` (no torch, no writers) so that the command line can
offer the formats in its help without loading the export stack.
"""

from __future__ import annotations

__all__ = ["DERIVED_FORMATS", "FORMATS", "OWNED"]

#: The formats a run can ask for. ``coco`` / ``coco-polygons`` choose the COCO file's own
#: segmentation (RLE or polygons); the others are derived from it.
FORMATS: tuple[str, ...] = ("coco", "coco-polygons", "yolo", "png", "labelstudio", "cvat")
#: Formats written by :func:`textseg.io.export.write_exports` from the COCO file.
DERIVED_FORMATS: tuple[str, ...] = ("yolo", "png", "labelstudio", "cvat")
#: The folders (or files) each derived format owns in the output folder.
OWNED: dict[str, tuple[str, ...]] = {
    "yolo": ("yolo",),
    "png": ("masks",),
    "labelstudio": ("labelstudio",),
    "cvat": ("cvat",),
}
