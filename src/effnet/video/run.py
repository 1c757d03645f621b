"""Classify a video's sampled frames: the reader thread's crops -> the classifier's batches -> timed rows.

Used by :meth:`effnet.predict.Classifier.classify_video` (which passes itself: this module only needs its
``iter_probabilities`` and ``labels``). Files run in throughput mode (batches of ``batch_size`` sampled
frames, the reader ahead); live sources in latency mode (one frame per forward pass, frames dropped by the
reader when inference is behind).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..labels import Prediction, top_k
from ..pipeline import Batch, Decoded
from ..preprocess import MAX_IMAGE_PIXELS
from ..weights.records import Preprocess
from .annotate import AnnotatedWriter, check_destination, draw
from .container import DecodeBudget, InMemory
from .reader import ReaderStats, Sampling, VideoFrame, read_frames
from .segments import DEFAULT_WINDOW, Segment, segments

__all__ = ["FrameResult", "VideoClassification"]


@dataclass
class FrameResult:
    """One sampled frame's answer (or the error that ended the video: ``frame``/``time`` where it stopped)."""

    path: str
    frame: int
    time: float
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        row: dict[str, Any] = {"path": self.path, "frame": self.frame, "time": round(self.time, 3)}
        if self.error is not None:
            return {**row, "error": self.error}
        return {**row, "predictions": [p.to_dict() for p in self.predictions]}


class VideoClassification:
    """Iterate to get one :class:`FrameResult` per sampled frame, as they are classified; then (or at any
    point) :meth:`segments` gives the timeline of the frames so far and :attr:`stats` the reader's counts."""

    def __init__(
        self,
        classifier: Any,
        source: str | InMemory,
        *,
        preprocess: Preprocess,
        sampling: Sampling | None = None,
        top_k: int = 5,
        batch_size: int = 1,
        annotate: str | Path | None = None,
        stall_timeout: float = 10.0,
        name: str | None = None,
        reduce: bool = True,
        budget: DecodeBudget | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.classifier, self.source, self.preprocess = classifier, str(source), preprocess
        self.input, self.budget = source, budget  # budget: a caller's bounds (the server's clip uploads)
        self.max_pixels = max_pixels  # per frame, from the header: the stills' limit (the server's --max-image-mp)
        self.sampling = sampling or Sampling()
        self.k, self.batch_size, self.stall_timeout = top_k, batch_size, stall_timeout
        self.name = name or self.source
        self.reduce = reduce
        self.annotate = (
            check_destination(annotate, [self.source]) if annotate is not None else None
        )  # before any decoding
        self.stats = ReaderStats()
        self.results: list[FrameResult] = []
        self.annotated: Path | None = None
        self.elapsed_s = 0.0
        self._writer: AnnotatedWriter | None = None

    def finish(self) -> Path | None:
        """Close the annotated video with the frames written so far (the end of a file, or Ctrl-C on a live
        stream); without this, a run that stops early leaves no annotated file."""
        if self._writer is not None:
            self.annotated = self._writer.close()
            self._writer = None
        return self.annotated

    def segments(self, window: int = DEFAULT_WINDOW) -> list[Segment]:
        good = [r for r in self.results if r.ok]
        return segments([r.time for r in good], [r.predictions for r in good], window, self.stats.duration)

    def _batches(self, frames: Iterator[VideoFrame]) -> Generator[Batch[Any], None, None]:
        pending: list[Decoded[Any]] = []
        for vf in frames:
            size = 1 if self.stats.live else self.batch_size  # known once the reader has opened the source
            pending.append(Decoded((vf, time.perf_counter()), self.name, vf.crop, vf.error))
            if vf.error is not None or sum(d.ok for d in pending) >= size:
                yield Batch(tuple(pending), 0.0)
                pending = []
        if pending:
            yield Batch(tuple(pending), 0.0)

    def __iter__(self) -> Iterator[FrameResult]:
        frames = read_frames(
            self.input,
            self.preprocess,
            self.sampling,
            keep_images=self.annotate is not None,
            stall_timeout=self.stall_timeout,
            stats=self.stats,
            reduce=self.reduce,
            budget=self.budget,
            max_pixels=self.max_pixels,
        )
        batches = self._batches(frames)
        stream = self.classifier.iter_probabilities(batches)
        start = time.perf_counter()
        try:
            for batch, probs in stream:
                rows = iter(probs)
                now = time.perf_counter()
                for d in batch.images:
                    vf, ready = d.item
                    if d.ok:
                        result = FrameResult(
                            self.name, vf.index, vf.time, top_k(next(rows), self.classifier.labels, self.k)
                        )
                    else:
                        result = FrameResult(self.name, vf.index, vf.time, error=d.error)
                    self.results.append(result)
                    self.elapsed_s = now - start
                    if self.annotate is not None and vf.image is not None and d.ok:
                        if self._writer is None:
                            self._writer = AnnotatedWriter(self.annotate, *vf.image.size)
                        fps = sum(r.ok for r in self.results) / max(self.elapsed_s, 1e-9)
                        status = f"{fps:.1f} FPS  latency {1000 * (now - ready):.0f} ms"
                        self._writer.write(draw(vf.image, result.predictions, status), vf.time)
                    yield result
            self.finish()
        except KeyboardInterrupt:  # Ctrl-C inside inference or the frame queue: keep what was annotated, whole
            self.finish()
            raise
        finally:
            if self._writer is not None:  # stopped early (an error, break) without finish(): no half-written file
                self._writer.abort()
                self._writer = None
            stream.close()
            batches.close()
            frames.close()
