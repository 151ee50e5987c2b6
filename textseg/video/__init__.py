"""Video: name the classes once, track every instance through a clip, count distinct objects.

- :func:`track` / :class:`Tracker`: keyframe detection with any image pipeline, SAM 2
  propagation with a bounded memory, ids kept by mask IoU, classes by majority vote;
- :func:`open_video`: lazy frames from a video file, a folder of frames or arrays;
- :mod:`textseg.video.export`: ``tracks.json`` (COCO video style), ``counts.csv``,
  ``annotated.mp4`` and MOTChallenge text;
- :mod:`textseg.video.synthetic`: panning clips with exact ground truth (tests, benchmarks).
"""

from textseg.video.propagator import MaskPropagator, Propagated, Sam2Propagator
from textseg.video.sources import Frame, VideoSource, open_video
from textseg.video.tracker import FrameResult, SceneCutDetector, Tracker, track

__all__ = [
    "Frame",
    "FrameResult",
    "MaskPropagator",
    "Propagated",
    "Sam2Propagator",
    "SceneCutDetector",
    "Tracker",
    "VideoSource",
    "open_video",
    "track",
]
