"""How good is textseg on your data: five protocols on any COCO-format dataset.

Example::

    from textseg.eval import evaluate
    from textseg.pipelines import TextSegmenter

    report = evaluate("data/coco-dev", TextSegmenter.from_preset("fast"), out_dir="eval-out")
    report["box"].metrics["miou"], report["text"].metrics["ap"]

- ``box``: SAM prompted with the ground-truth boxes, mIoU overall and per class;
- ``point``: one click at the farthest interior point, mIoU of the top-scoring and the best
  (oracle) of three masks;
- ``text``: the pipeline prompted with the class names, COCO mask AP / AP50;
- ``label``: the labeler naming the ground-truth masks, accuracy and unknown rate;
- ``count``: the pipeline's per-image, per-class counts, MAE and exact-match rate.

One runner (:mod:`textseg.eval.runner`) feeds the protocols' accumulators
(:mod:`textseg.eval.accumulators`) image by image, for :func:`evaluate` and for
:func:`textseg.eval.compare.compare_presets` alike. The command line is
``textseg eval DATASET --preset NAME --out DIR``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textseg._lazy import lazy_exports

__all__ = [
    "DEFAULT_LABELER_CLIP",
    "PROTOCOLS",
    "EvalDataset",
    "EvalReport",
    "ProtocolResult",
    "Sample",
    "coco_mask_ap",
    "count_errors",
    "eval_box_prompts",
    "eval_counting",
    "eval_labeling",
    "eval_point_prompts",
    "eval_text_prompts",
    "evaluate",
    "farthest_interior_point",
    "load_dataset",
    "mask_iou",
    "mean_iou",
    "parse_protocols",
]

#: Public name -> the module that defines it (imported on first use: the command line reads
#: the protocol names without loading the evaluation stack).
_EXPORTS = {
    "DEFAULT_LABELER_CLIP": "textseg.eval.protocols",
    "EvalDataset": "textseg.eval.dataset",
    "EvalReport": "textseg.eval.report",
    "PROTOCOLS": "textseg.eval.protocol_names",
    "ProtocolResult": "textseg.eval.report",
    "Sample": "textseg.eval.dataset",
    "coco_mask_ap": "textseg.eval.metrics",
    "count_errors": "textseg.eval.metrics",
    "eval_box_prompts": "textseg.eval.protocols",
    "eval_counting": "textseg.eval.protocols",
    "eval_labeling": "textseg.eval.protocols",
    "eval_point_prompts": "textseg.eval.protocols",
    "eval_text_prompts": "textseg.eval.protocols",
    "evaluate": "textseg.eval.protocols",
    "farthest_interior_point": "textseg.eval.metrics",
    "load_dataset": "textseg.eval.dataset",
    "mask_iou": "textseg.eval.metrics",
    "mean_iou": "textseg.eval.metrics",
    "parse_protocols": "textseg.eval.protocol_names",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

if TYPE_CHECKING:
    from textseg.eval.dataset import EvalDataset, Sample, load_dataset
    from textseg.eval.metrics import (
        coco_mask_ap,
        count_errors,
        farthest_interior_point,
        mask_iou,
        mean_iou,
    )
    from textseg.eval.protocol_names import PROTOCOLS, parse_protocols
    from textseg.eval.protocols import (
        DEFAULT_LABELER_CLIP,
        eval_box_prompts,
        eval_counting,
        eval_labeling,
        eval_point_prompts,
        eval_text_prompts,
        evaluate,
    )
    from textseg.eval.report import EvalReport, ProtocolResult
