"""Opening a video source with PyAV and choosing its video stream, with the checks made from its header
before any frame is decoded."""

from __future__ import annotations

from typing import Any

from ..errors import EffnetError
from ..files import is_live

__all__ = ["VideoError", "open_source", "video_stream"]


class VideoError(EffnetError):
    """A video that cannot be opened or decoded (no video stream, unsupported codec, damage, a lost stream)."""


def open_source(av: Any, source: str, timeout: float) -> Any:
    """The PyAV input container of ``source`` (a file, a stream URL, ``/dev/videoN``)."""
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


def video_stream(container: Any, source: str, max_pixels: int) -> Any:
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
        raise VideoError(f"{source}: {ctx.width}x{ctx.height} frames are above the limit of {max_pixels:,} pixels")
    stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads: decoding is the reader's main cost
    return stream
