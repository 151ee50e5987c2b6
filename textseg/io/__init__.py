"""Export and import of textseg results (``supervision.Detections``) that round-trip.

- :mod:`~textseg.io.rle`: COCO RLE encode/decode, :class:`CompactMasks` (bounded memory);
- :mod:`~textseg.io.polygons`: exact mask <-> polygon conversion (tiny masks, parts, holes);
- :mod:`~textseg.io.coco`: :class:`CocoWriter` (incremental, atomic, resumable), :func:`load_coco`;
- :mod:`~textseg.io.yolo`: YOLO-seg datasets;
- :mod:`~textseg.io.png`: per-instance PNGs and palette index PNGs;
- :mod:`~textseg.io.counts`: per-image class counts as CSV / JSON;
- :mod:`~textseg.io.annotate`: annotated images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textseg._lazy import lazy_exports

__all__ = [
    "CocoData",
    "CocoWriter",
    "CompactMasks",
    "YoloData",
    "YoloWriter",
    "annotate",
    "coco_to_detections",
    "count_classes",
    "count_per_image",
    "decode_masks",
    "detection_labels",
    "detections_to_coco",
    "detections_to_yolo",
    "encode_masks",
    "join_polygons",
    "load_coco",
    "load_counts_csv",
    "load_counts_json",
    "load_index_png",
    "load_instance_masks",
    "load_yolo",
    "mask_to_polygons",
    "polygons_to_mask",
    "rle_area",
    "rle_xyxy",
    "save_annotated",
    "save_counts_csv",
    "save_counts_json",
    "save_index_png",
    "save_instance_masks",
    "yolo_to_detections",
]

#: Public name -> the module that defines it (imported on first use: the command line reads
#: the export formats without loading every writer).
_EXPORTS = {
    "CocoData": "textseg.io.coco",
    "CocoWriter": "textseg.io.coco_writer",
    "CompactMasks": "textseg.io.rle",
    "YoloData": "textseg.io.yolo",
    "YoloWriter": "textseg.io.yolo",
    "annotate": "textseg.io.annotate",
    "coco_to_detections": "textseg.io.coco",
    "count_classes": "textseg.io.counts",
    "count_per_image": "textseg.io.counts",
    "decode_masks": "textseg.io.rle",
    "detection_labels": "textseg.io.annotate",
    "detections_to_coco": "textseg.io.coco",
    "detections_to_yolo": "textseg.io.yolo",
    "encode_masks": "textseg.io.rle",
    "join_polygons": "textseg.io.polygons",
    "load_coco": "textseg.io.coco",
    "load_counts_csv": "textseg.io.counts",
    "load_counts_json": "textseg.io.counts",
    "load_index_png": "textseg.io.png",
    "load_instance_masks": "textseg.io.png",
    "load_yolo": "textseg.io.yolo",
    "mask_to_polygons": "textseg.io.polygons",
    "polygons_to_mask": "textseg.io.polygons",
    "rle_area": "textseg.io.rle",
    "rle_xyxy": "textseg.io.rle",
    "save_annotated": "textseg.io.annotate",
    "save_counts_csv": "textseg.io.counts",
    "save_counts_json": "textseg.io.counts",
    "save_index_png": "textseg.io.png",
    "save_instance_masks": "textseg.io.png",
    "yolo_to_detections": "textseg.io.yolo",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

if TYPE_CHECKING:
    from textseg.io.annotate import annotate, detection_labels, save_annotated
    from textseg.io.coco import CocoData, coco_to_detections, detections_to_coco, load_coco
    from textseg.io.coco_writer import CocoWriter
    from textseg.io.counts import (
        count_classes,
        count_per_image,
        load_counts_csv,
        load_counts_json,
        save_counts_csv,
        save_counts_json,
    )
    from textseg.io.png import (
        load_index_png,
        load_instance_masks,
        save_index_png,
        save_instance_masks,
    )
    from textseg.io.polygons import join_polygons, mask_to_polygons, polygons_to_mask
    from textseg.io.rle import CompactMasks, decode_masks, encode_masks, rle_area, rle_xyxy
    from textseg.io.yolo import (
        YoloData,
        YoloWriter,
        detections_to_yolo,
        load_yolo,
        yolo_to_detections,
    )
