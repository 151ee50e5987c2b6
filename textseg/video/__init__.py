"""Video: name the classes once, track every instance through a clip, count distinct objects.

- :func:`track` / :class:`Tracker`: keyframe detection with any image pipeline, SAM 2
  propagation with a bounded memory, ids kept by mask IoU, classes by majority vote;
- :class:`TrackBook`: the tracker's model-free bookkeeping (matching, births, deaths, votes);
- :class:`KeyframeSegmenter` / :class:`PipelineKeyframes`: what the tracker asks of the model
  that finds instances on keyframes;
- :class:`~textseg.video.sam3_video.Sam3VideoTracker`: SAM 3's own video model, every class
  detected and tracked jointly in one streaming session (``textseg track --preset sam3``);
- :func:`open_video`: lazy frames from a video file, a folder of frames or arrays;
- :mod:`textseg.video.export`: ``tracks.json`` (COCO / TAO video style), ``counts.csv``,
  ``annotated.mp4``, MOTChallenge and MOTS text, YouTube-VIS JSON;
- :mod:`textseg.video.synthetic`: panning clips with exact ground truth (tests, benchmarks).
"""

from textseg.video.bookkeeping import BookUpdate, TrackBook, TrackState
from textseg.video.keyframes import KeyframeSegmenter, PipelineKeyframes, SharesEmbedding
from textseg.video.propagator import MaskPropagator, Propagated, Sam2Propagator
from textseg.video.sam3_video import Sam3VideoTracker
from textseg.video.sources import Frame, VideoSource, open_video
from textseg.video.tracker import FrameResult, SceneCutDetector, Tracker, track

__all__ = [
    "BookUpdate",
    "Frame",
    "FrameResult",
    "KeyframeSegmenter",
    "MaskPropagator",
    "PipelineKeyframes",
    "Propagated",
    "Sam2Propagator",
    "Sam3VideoTracker",
    "SceneCutDetector",
    "SharesEmbedding",
    "TrackBook",
    "TrackState",
    "Tracker",
    "VideoSource",
    "open_video",
    "track",
]
