"""Video files, live streams and cameras: sampled frames classified with the stills' preprocessing.

PyAV decodes (``pip install 'effnet[video]'``); :mod:`.reader` samples and crops frames ahead of inference,
:mod:`.run` classifies them into timed rows, :mod:`.segments` makes the timeline, :mod:`.annotate` writes
the annotated MP4. The entry point is :meth:`effnet.predict.Classifier.classify_video`.
"""

from __future__ import annotations

from .container import UPLOAD_FORMATS, DecodeBudget, InMemory, NotAVideoError, VideoLimitError, VideoLimits
from .reader import DEFAULT_FPS, ReaderStats, Sampling, VideoError, VideoFrame, read_frames
from .run import FrameResult, VideoClassification
from .segments import DEFAULT_WINDOW, Segment, format_time, segments

__all__ = [
    "DecodeBudget",
    "InMemory",
    "NotAVideoError",
    "UPLOAD_FORMATS",
    "VideoLimitError",
    "VideoLimits",
    "DEFAULT_FPS",
    "DEFAULT_WINDOW",
    "FrameResult",
    "ReaderStats",
    "Sampling",
    "Segment",
    "VideoClassification",
    "VideoError",
    "VideoFrame",
    "format_time",
    "read_frames",
    "segments",
]
