"""Video frames -> sampled, displayed-orientation, record-preprocessed crops, decoded ahead in a thread.

PyAV (FFmpeg's libraries) demuxes and decodes; FFmpeg's own frame threads decode H.264/HEVC. Only the
sampled frames are converted to RGB (``--fps`` / ``--every``), rotated as a player shows them (the stream's
display matrix: phones store portrait video as landscape plus a rotation) and cropped by the same
:func:`effnet.preprocess.resize_crop` as a still photo, so a frame and its photo give the same crop up to
the codec's loss. The reader thread runs ahead of inference through a bounded queue:

- a file (throughput mode) blocks the reader when the queue is full: every sampled frame is classified;
- a live source (a stream URL, a camera; latency mode) never blocks: when inference is slower than the
  stream, the oldest waiting frame is dropped and counted, so memory stays bounded and answers stay current.
  A live source that ends or fails reconnects with bounded backoff; one that sends nothing for
  ``stall_timeout`` seconds ends with an error.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image

from .._optional import require
from ..errors import EffnetError
from ..files import is_live
from ..preprocess import MAX_IMAGE_PIXELS, resize_crop, resized_size
from ..weights.records import Preprocess
from .container import DecodeBudget, InMemory, VideoError, VideoLimitError, open_source, video_stream

__all__ = ["Sampling", "VideoFrame", "VideoError", "ReaderStats", "read_frames", "DEFAULT_FPS"]

# --fps 2 by default: a scene's label rarely changes within half a second, segments then resolve to 0.5 s,
# and a 30 frames/s video costs 15x fewer forward passes than --every 1 (B5 on a CPU runs a few frames/s).
DEFAULT_FPS = 2.0
_QUEUE = 8  # sampled frames waiting for inference: bounded memory whatever the video's length
_BACKOFF = (0.5, 1.0, 2.0)  # seconds between reconnects of a live source; then it has ended


@dataclass(frozen=True)
class Sampling:
    """Which frames are classified: ``fps`` per second of video time (by timestamps), or every ``every``-th."""

    fps: float | None = DEFAULT_FPS
    every: int | None = None

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise EffnetError(f"--every must be >= 1, got {self.every}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):  # nan fails every comparison
            raise EffnetError(f"--fps must be a finite number > 0, got {self.fps}")


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: its index among the decoded frames, its time (s, from the PTS), its crop and, when
    asked for (``--annotate``), the whole displayed picture."""

    index: int
    time: float
    crop: np.ndarray | None
    image: Image.Image | None = None
    error: str | None = None


@dataclass
class ReaderStats:
    decoded: int = 0  # frames decoded
    sampled: int = 0  # frames converted and cropped
    dropped: int = 0  # sampled frames dropped because inference was behind (live sources only)
    reconnects: int = 0
    live: bool = False  # read as a live source (latency mode: frames dropped when inference is behind)
    width: int = 0
    height: int = 0
    rate: Fraction | None = None
    decode_s: float = 0.0  # reader thread's busy time: demux, decode, convert, crop (a stream: also its waits)
    audio: str | None = None  # the first audio stream's codec, if any
    duration: float | None = None  # seconds, as the file states it (a file; None for a live source or unknown)
    extra: dict[str, Any] = field(default_factory=dict)


def displayed(frame: Any, reduce_for: Preprocess | None = None) -> Image.Image:
    """A decoded frame as a player shows it: RGB, the display matrix's rotation (counter-clockwise) applied.

    ``reduce_for=p``: a frame of at least 4x ``p``'s resize target is converted to RGB already scaled down by
    1/2, 1/4 or 1/8 (FFmpeg's swscale, area averaging, in the same pass as the conversion), to no less than
    twice the target: the rule of ``--decode reduced`` for JPEGs (:func:`effnet.preprocess.decode_crop_reduced`).
    """
    size: dict[str, Any] = {}
    if reduce_for is not None:
        rw, rh = resized_size(frame.width, frame.height, reduce_for)
        s = next((s for s in (8, 4, 2) if frame.width // s >= 2 * rw and frame.height // s >= 2 * rh), 1)
        if s > 1:
            size = {"width": -(-frame.width // s), "height": -(-frame.height // s), "interpolation": "AREA"}
    image = frame.to_image(**size)
    turn = round(getattr(frame, "rotation", 0) or 0) % 360
    transpose = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return image.transpose(transpose[turn]) if turn in transpose else image


class _Reader:
    """The reader thread's state: one container at a time (a live source reopens), the sampler, counters."""

    def __init__(
        self, source: str | InMemory, preprocess: Preprocess, sampling: Sampling, keep_images: bool,
        stall_timeout: float, stats: ReaderStats, queue_size: int, max_pixels: int, reduce: bool,
        budget: DecodeBudget | None,
    ) -> None:  # fmt: skip
        self.av = require("av", "video", "reading videos")
        self.input, self.source, self.preprocess, self.sampling = source, str(source), preprocess, sampling
        self.budget = budget
        self.failure: VideoLimitError | None = None  # a caller's bound crossed: re-raised to the consumer
        self.keep_images, self.stall_timeout, self.stats = keep_images, stall_timeout, stats
        # --annotate draws on the frame at its own size: no reduced conversion then
        self.live = isinstance(source, str) and is_live(source)
        self.max_pixels, self.reduce = max_pixels, reduce and not keep_images
        self.out: queue.Queue[VideoFrame | None] = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.index, self.last_slot, self.time, self.end = 0, -1, 0.0, 0.0
        self.t0 = 0.0
        self.origin: float | None = None
        self.container = open_source(self.av, source, stall_timeout)
        self.stream = video_stream(self.container, source, max_pixels)
        if self.live and self.container.duration is not None and not self.source.startswith("/dev/"):
            # a URL of a file (an MP4 over HTTP knows its duration): read it whole, like a local file, without
            # drops; a reconnect would replay it from the start
            self.live = False
        stats.live = self.live
        stats.duration = None if self.live else self.duration()
        ctx = self.stream.codec_context
        stats.width, stats.height, stats.rate = ctx.width, ctx.height, self.stream.average_rate
        audio = self.container.streams.audio
        stats.audio = audio[0].codec_context.name if audio else None

    def put(self, item: VideoFrame | None) -> None:
        while not self.stop.is_set():
            if self.live and item is not None:
                try:
                    self.out.put_nowait(item)
                    return
                except queue.Full:  # inference is behind a live source: drop the oldest, keep the newest
                    try:
                        self.out.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass
                    continue
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def take(self, t: float) -> bool:
        if self.sampling.every is not None:
            return self.index % self.sampling.every == 0
        slot = int(t * (self.sampling.fps or DEFAULT_FPS) + 1e-6)  # by timestamps: right for variable frame rates
        if slot > self.last_slot:
            self.last_slot = slot
            return True
        return False

    def frame_time(self, frame: Any) -> float:
        """Seconds from the stream's start, from the frame's PTS (a live source: from its first frame)."""
        if frame.pts is None:
            return self.time
        start = self.stream.start_time
        if self.live or start is None:
            if self.origin is None:
                self.origin = float(frame.pts * self.stream.time_base) - self.time
            return float(frame.pts * self.stream.time_base) - self.origin
        return float((frame.pts - start) * self.stream.time_base)

    def duration(self) -> float | None:
        """The video stream's duration in seconds as the file states it, or None: the stream's own (MP4, an
        MPEG-TS estimate), its DURATION tag (Matroska/WebM), else the container's when it holds no other
        stream (an audio track may outlast the picture)."""
        if self.stream.duration is not None and self.stream.time_base is not None:
            return float(self.stream.duration * self.stream.time_base)
        tag = (self.stream.metadata or {}).get("DURATION") or (self.stream.metadata or {}).get("duration")
        if tag:
            try:
                h, m, sec = tag.split(":")
                return int(h) * 3600 + int(m) * 60 + float(sec)
            except ValueError:
                pass
        if self.container.duration is not None and len(self.container.streams) == 1:
            return self.container.duration / 1_000_000
        return None

    def ended_early(self) -> str | None:
        """A file whose frames stop well before its stated duration was cut short (Matroska and MPEG-TS count
        no frames in their header): the truncation error, or None."""
        duration = self.duration()
        rate = float(self.stream.average_rate or 0) or 25.0
        reached = max(self.end, self.time + 1 / rate) if self.index else 0.0  # the last frame's end
        if duration is not None and duration - reached > max(0.5, 2 / rate):
            return f"truncated: the frames end at {reached:.2f} s of the {duration:.2f} s the file states"
        size = None
        if "mpegts" in (self.container.format.name or "") and not is_live(self.source):
            try:
                size = len(self.input.data) if isinstance(self.input, InMemory) else os.path.getsize(self.source)
            except OSError:
                pass
        if size and size % 188 and size % 192:  # MPEG-TS is whole 188-byte packets (M2TS: 192)
            return f"truncated: the MPEG-TS file ends inside a packet ({size:,} bytes), after {self.time:.2f} s"
        return None

    def decode(self) -> str | None:
        """Decode the open container to its end: None, or the error that stopped it."""
        self.t0 = time.perf_counter()  # busy time: demux + decode (inside the for), convert, crop; not queue waits
        try:
            for frame in self.container.decode(self.stream):
                if self.stop.is_set():
                    return None
                self.frame(frame)
            self.stats.decode_s += time.perf_counter() - self.t0
            return None
        except self.av.ExitError:  # the read timeout's interrupt
            error = f"stalled: no data for {self.stall_timeout:g} s"
        except (self.av.FFmpegError, OSError) as e:
            error = f"{getattr(e, 'strerror', None) or e}"
        # The input failed (a live HTTP stream ends with an I/O error): the frames still inside the decoder (its
        # frame threads hold a few) are decoded too, as FFmpeg does at a clean end.
        try:
            for frame in self.stream.codec_context.decode(None):
                if self.stop.is_set():
                    return None
                self.frame(frame)
        except (self.av.FFmpegError, OSError, ValueError):
            pass
        return error if error.startswith("stalled") else f"decoding stopped at frame {self.index}: {error}"

    def frame(self, frame: Any) -> None:
        """One decoded frame: its time, and when sampled its crop, queued."""
        t = self.frame_time(frame)
        self.time = t
        shown = getattr(frame, "duration", None)  # how long it is shown: a VFR clip's last frame may be long
        self.end = t + float(shown * self.stream.time_base) if shown and self.stream.time_base else t
        if self.budget is not None:  # the decode cost and length as decoded, not as the header says
            self.budget.charge(frame.width, frame.height, t)
        if frame.width * frame.height > self.max_pixels:  # the header's size can lie (a raw stream changes it)
            raise VideoLimitError(
                f"{self.source}: frame {self.index:,} is {frame.width}x{frame.height}, above the limit of "
                f"{self.max_pixels:,} pixels; decoding stopped there",
                "too_many_pixels",
            )
        if self.stats.decoded == 0 and round(getattr(frame, "rotation", 0) or 0) % 180 == 90:
            # the display matrix turns the picture: report the size a player shows (and --annotate writes)
            self.stats.width, self.stats.height = frame.height, frame.width
        if self.take(t):
            if self.budget is not None:
                self.budget.sampled(self.stats.sampled + 1)
            image = displayed(frame, self.preprocess if self.reduce else None)
            crop = np.array(resize_crop(image, self.preprocess))
            self.stats.sampled += 1
            self.stats.decode_s += time.perf_counter() - self.t0
            self.put(VideoFrame(self.index, round(t, 6), crop, image if self.keep_images else None))
            self.t0 = time.perf_counter()
        self.index += 1
        self.stats.decoded += 1

    def run(self) -> None:
        try:
            self._run()
        except VideoLimitError as e:  # a caller's bound: no error row, the consumer raises it
            self.failure = e
        except Exception as e:  # noqa: BLE001 - whatever FFmpeg raised: one error row, never a hung consumer
            self.put(VideoFrame(self.index, self.time, None, error=f"{self.source}: {type(e).__name__}: {e}"))
        finally:
            self.container.close()
            self.put(None)

    def _run(self) -> None:
        if self.budget is not None:  # what the header states, before the first frame is decoded
            ctx, stats = self.stream.codec_context, self.stats
            self.budget.check_header(ctx.width, ctx.height, stats.duration, self.stream.frames, stats.rate)
        failures = 0
        while not self.stop.is_set():
            decoded_before = self.index
            error = self.decode()
            if self.stop.is_set():
                return
            if not self.live or (error or "").startswith("stalled"):
                expected = self.stream.frames
                if error is None and expected and self.index < expected:  # the header counted more frames
                    error = f"truncated: {self.index} of {expected} frames could be decoded"
                if error is None and not self.live:
                    error = self.ended_early()
                if error is not None:
                    self.put(VideoFrame(self.index, self.time, None, error=f"{self.source}: {error}"))
                return
            failures = 0 if self.index > decoded_before else failures
            while True:  # a live source ended or failed: reconnect with bounded backoff
                if failures >= len(_BACKOFF):
                    why = (error or "the stream ended").removeprefix(f"{self.source}: ")
                    msg = f"{self.source}: lost: {why} ({len(_BACKOFF)} reconnects with backoff failed)"
                    self.put(VideoFrame(self.index, self.time, None, error=msg))
                    return
                if self.stop.wait(_BACKOFF[failures]):
                    return
                failures += 1
                self.container.close()
                try:
                    self.container = open_source(self.av, self.input, self.stall_timeout)
                    self.stream = video_stream(self.container, self.source, self.max_pixels)
                except VideoError as e:
                    error = str(e)
                    continue
                self.stats.reconnects += 1
                self.origin = None  # the new connection's timestamps continue from the last frame's time
                break


def read_frames(
    source: str | InMemory,
    preprocess: Preprocess,
    sampling: Sampling | None = None,
    *,
    keep_images: bool = False,
    stall_timeout: float = 10.0,
    stats: ReaderStats | None = None,
    queue_size: int = _QUEUE,
    max_pixels: int = MAX_IMAGE_PIXELS,
    reduce: bool = False,
    budget: DecodeBudget | None = None,
) -> Generator[VideoFrame, None, None]:
    """Yield the sampled frames of ``source`` (a video file, a stream URL, ``/dev/videoN``, an upload held
    :class:`InMemory`) in order.

    A source that cannot be opened raises :class:`VideoError` before the first frame; damage or a lost
    stream later ends the iteration with one :class:`VideoFrame` carrying ``error``. Closing the iterator
    stops the reader thread. ``stats`` is filled in as frames are read. ``reduce``: big frames are converted
    to RGB scaled down to no less than twice the resize target (:func:`displayed`). ``budget``: a video past
    its limits (by its header, or as decoded) raises :class:`VideoLimitError` where it is found.
    """
    reader = _Reader(
        source,
        preprocess,
        sampling or Sampling(),
        keep_images,
        stall_timeout,
        stats or ReaderStats(),
        queue_size,
        max_pixels,
        reduce,
        budget,
    )
    thread = threading.Thread(target=reader.run, name="effnet-video", daemon=True)
    thread.start()
    try:
        while True:
            item = reader.out.get()
            if item is None:
                if reader.failure is not None:
                    raise reader.failure
                return
            yield item
    finally:
        reader.stop.set()
        thread.join(timeout=5)
