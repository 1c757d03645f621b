"""Opening a video source with PyAV and choosing its video stream, with the checks made from its header
before any frame is decoded, and the bounds a caller may put on one video's cost (:class:`VideoLimits`,
enforced by :class:`DecodeBudget`): the server's clip uploads.

A header can lie or say nothing (a fragmented MP4, a Matroska file written to a pipe, an MPEG-TS stream),
so the bounds are checked twice: against what the header states, before decoding (a refusal that costs
nothing), and on every decoded frame, against what was actually decoded (decoding stops at the first frame
past a bound).
"""

from __future__ import annotations

import errno
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import EffnetError
from ..files import is_live

__all__ = [
    "DecodeBudget",
    "InMemory",
    "NotAVideoError",
    "UPLOAD_FORMATS",
    "VideoError",
    "VideoLimitError",
    "VideoLimits",
    "open_source",
    "video_stream",
]


class VideoError(EffnetError):
    """A video that cannot be opened or decoded (no video stream, unsupported codec, damage, a lost stream)."""


class NotAVideoError(VideoError):
    """An upload that is a still image (JPEG, PNG...), not a video: the server points it to /v1/classify."""


# The containers an upload (:class:`InMemory`) may be, as FFmpeg's demuxers name them. FFmpeg picks its
# demuxer from the body's content, and some demuxers open other files or URLs named in the body (concat,
# HLS, DASH, image sequences...): an upload is opened with these alone allowed (FFmpeg refuses any other
# before it reads the header) and with no protocol allowed for a nested open. A local file (the CLI) keeps
# every format FFmpeg has.
UPLOAD_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "gif", "h264", "hevc")
_STILLS = {"JPEG", "PNG", "BMP", "TIFF", "JPEG2000", "PPM", "ICO"}  # Pillow's names of still images


class VideoLimitError(VideoError):
    """A video past one of a caller's :class:`VideoLimits` (``kind``: ``too_long``, ``too_costly``), frames above
    the pixel limit (``too_many_pixels``), more sampled frames than ``max_frames`` (``too_many_frames``), or a
    read its caller stopped (``stopped``: a timeout, a client gone).
    Raised by :func:`effnet.video.read_frames`."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class InMemory:
    """A video held in memory (an upload; never written to disk). ``name`` is what messages call it."""

    data: bytes
    name: str = "<upload>"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on one video: its length (s of video time) and its decode work (megapixels: width x height
    summed over every decoded frame, sampled or not: H.264 decodes them all)."""

    max_seconds: float | None = None
    max_decode_mp: float | None = None
    max_frames: int | None = None  # sampled (classified) frames: bounds the answer's size


class DecodeBudget:
    """:class:`VideoLimits` applied to one read: :meth:`check_header` before decoding, :meth:`charge` on every
    decoded frame; ``should_stop()`` (checked per frame) ends the read early with kind ``stopped``."""

    def __init__(self, limits: VideoLimits, should_stop: Callable[[], bool] | None = None) -> None:
        self.limits, self.should_stop = limits, should_stop
        self.frames, self.pixels = 0, 0

    def check_header(self, width: int, height: int, duration: float | None, frames: int, rate: Any) -> None:
        """Refuse what the header states: a duration past the limit; a decode cost past it (its frame count,
        else its duration x frame rate). A header that states neither is left to :meth:`charge`."""
        seconds, mp = self.limits.max_seconds, self.limits.max_decode_mp
        if seconds is not None and duration is not None and duration > seconds:
            raise VideoLimitError(
                f"the video is {duration:.1f} s long (its header), above the limit of {seconds:g} s", "too_long"
            )
        count = frames or (round(duration * float(rate)) if duration and rate else 0)
        if mp is not None and count and width * height * count > mp * 1e6:
            raise VideoLimitError(
                f"decoding {count:,} frames of {width}x{height} (its header) is {width * height * count / 1e6:.4g} "
                f"megapixels, above the limit of {mp:g}",
                "too_costly",
            )

    def sampled(self, count: int) -> None:
        """The ``count``-th frame is about to be sampled: raise past ``max_frames``."""
        if self.limits.max_frames is not None and count > self.limits.max_frames:
            raise VideoLimitError(
                f"more than {self.limits.max_frames:,} frames would be classified (sample fewer: a lower fps, "
                "a higher every); decoding stopped there",
                "too_many_frames",
            )

    def charge(self, width: int, height: int, t: float) -> None:
        """One decoded frame of ``width`` x ``height`` at ``t`` s: raise once past a bound, whatever the header said."""
        if self.should_stop is not None and self.should_stop():
            raise VideoLimitError("stopped", "stopped")
        self.frames += 1
        self.pixels += width * height
        seconds, mp = self.limits.max_seconds, self.limits.max_decode_mp
        if seconds is not None and t > seconds:
            raise VideoLimitError(
                f"the video goes on past the limit of {seconds:g} s (a frame at {t:.1f} s; decoding stopped there)",
                "too_long",
            )
        if mp is not None and self.pixels > mp * 1e6:
            raise VideoLimitError(
                f"decoding went past the limit of {mp:g} megapixels at frame {self.frames:,} ({width}x{height}); "
                "decoding stopped there",
                "too_costly",
            )


def open_source(av: Any, source: str | InMemory, timeout: float) -> Any:
    """The PyAV input container of ``source`` (a file, a stream URL, ``/dev/videoN``, bytes in memory)."""
    if isinstance(source, InMemory):
        return _open_upload(av, source, timeout)
    options = {"rtsp_transport": "tcp"} if source.lower().startswith("rtsp") else {}
    if is_live(source):  # latency: probe 1 s of a stream for its format (FFmpeg's default reads up to 5 s)
        options.update(analyzeduration="1000000", probesize="1000000")
    fmt = "v4l2" if source.startswith("/dev/video") else None
    try:
        return av.open(source, format=fmt, options=options, timeout=(timeout, timeout))
    except FileNotFoundError:
        raise VideoError(f"{source}: no such file") from None
    except av.FFmpegError as e:
        raise VideoError(f"{source}: cannot open video: {e.strerror or e}") from None


def _open_upload(av: Any, source: InMemory, timeout: float) -> Any:
    """An upload, opened as one of :data:`UPLOAD_FORMATS` only, nothing else opened from it."""
    options = {"format_whitelist": ",".join(UPLOAD_FORMATS), "protocol_whitelist": "none"}
    try:
        container = av.open(io.BytesIO(source.data), options=options, timeout=(timeout, timeout))
    except av.FFmpegError as e:
        if getattr(e, "errno", None) != errno.EINVAL:  # EINVAL: probed as a format not in the allow-list
            raise VideoError(f"{source}: cannot open video: {e.strerror or e}") from None
        still = _still_image(source.data)
        if still is not None and still != "WEBP":
            raise NotAVideoError(f"{source}: cannot open video: a still image ({still}), not a video") from None
        what = "animated WebP is not supported" if still == "WEBP" else "not a supported container format"
        raise VideoError(
            f"{source}: cannot open video: {what} (accepted: MP4/MOV, Matroska/WebM, AVI, MPEG-TS, GIF, raw H.264/HEVC)"
        ) from None
    name = container.format.name or ""
    if not set(name.split(",")) <= set(UPLOAD_FORMATS):  # FFmpeg refused the others; checked again here
        container.close()
        raise VideoError(f"{source}: cannot open video: its format {name!r} is not accepted")
    return container


def _still_image(data: bytes) -> str | None:
    """Pillow's name of ``data``'s image format when it is a still image or WebP (its header only), else None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format if image.format in _STILLS | {"WEBP"} else None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def video_stream(container: Any, source: str | InMemory, max_pixels: int) -> Any:
    """The container's first video stream, its frame threads on; closes the container and raises
    :class:`VideoError` when there is none, its codec is unknown, or its frames are above ``max_pixels``."""
    if not container.streams.video:
        kinds = ", ".join(f"{s.type} {getattr(s.codec_context, 'name', '?')}" for s in container.streams) or "none"
        container.close()
        raise VideoError(f"{source}: no video stream (streams: {kinds})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or not getattr(ctx, "name", None):
        container.close()
        raise VideoError(f"{source}: the video codec is not supported by this FFmpeg build")
    if ctx.width * ctx.height > max_pixels:  # the stills' bomb guard, from the header: before any frame is decoded
        container.close()
        raise VideoLimitError(
            f"{source}: {ctx.width}x{ctx.height} frames are above the limit of {max_pixels:,} pixels", "too_many_pixels"
        )
    stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads: decoding is the reader's main cost
    return stream
