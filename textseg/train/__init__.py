"""Training: specialists distilled from textseg's labels, and the CLIP -> SAM text adapter.

- :func:`train_specialist` / :func:`load_specialist` (:mod:`textseg.train.specialist`): train a
  small fast model (SegFormer, Mask R-CNN, YOLO-seg) on a COCO dataset, such as the output of
  ``textseg label``, and run it through the same pipeline, exports and counts;
- :func:`review_queue` (:mod:`textseg.train.review`): the labelled images ranked by how unsure
  the pipeline was, worst first, for a person to correct;
- :mod:`textseg.train.text_prompt`: the experimental CLIP -> SAM text-prompt adapter.

Submodules import torch and transformers lazily where they can; import what you use.
"""

from textseg.train.review import review_queue
from textseg.train.specialist import Specialist, TrainReport, load_specialist, train_specialist

__all__ = ["Specialist", "TrainReport", "load_specialist", "review_queue", "train_specialist"]
