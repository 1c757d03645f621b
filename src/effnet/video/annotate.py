"""``--annotate OUT``: the sampled frames with their top-k, FPS and latency drawn, as an H.264 MP4.

H.264 (libx264), yuv420p, even dimensions and ``+faststart`` (the index at the front): what every browser's
``<video>`` plays, progressively. Each classified frame is written at its own timestamp, so the file keeps
the video's timing (variable frame rate included) at the sampling rate. The source's audio is dropped, and
said so: at a sampling rate the picture no longer plays every frame, so copied audio could not stay in step.
The file is written to a temporary name next to OUT and renamed when whole (:func:`effnet.fileio.atomic_write`
semantics); OUT's folder is checked before any frame is decoded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .._optional import require
from ..errors import EffnetError
from ..fileio import writable_dir, write_error
from ..labels import Prediction

__all__ = ["AnnotatedWriter", "check_destination", "draw"]

_TIME_BASE = Fraction(1, 1000)  # milliseconds: any sampling rate's timestamps, exactly enough


def check_destination(out: str | os.PathLike, sources: Sequence[str | os.PathLike] = ()) -> Path:
    """Before decoding: OUT ends in .mp4, is not a folder, is none of ``sources`` (the inputs; symlinks
    followed), does not exist yet (an output never replaces a file silently), and its folder is writable."""
    path = Path(out)
    if path.suffix.lower() != ".mp4":
        raise EffnetError(f"--annotate writes an H.264 MP4: name it *.mp4, got {path}")
    if path.is_dir():
        raise EffnetError(f"--annotate {path}: is a folder; give a file name ending in .mp4")
    if path.exists():
        for source in sources:
            with contextlib.suppress(OSError):  # a stream URL, a camera: not a file OUT could be
                if os.path.samefile(path, source):
                    raise EffnetError(f"--annotate {path}: is the input video {source}; give another file name")
        raise EffnetError(f"--annotate {path}: exists; remove it or give another name (it is never replaced)")
    writable_dir(path.parent if str(path.parent) else Path("."), "the annotated video")
    return path


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw(image: Image.Image, predictions: list[Prediction], status: str) -> Image.Image:
    """The frame with a dark box in its top-left corner: ``status`` (FPS, latency), then the top-k.

    Text is drawn literally by Pillow (no markup), whatever the class names contain.
    """
    image = image.copy()
    size = max(12, image.height // 30)
    font = _font(size)
    lines = [status] + [f"{p.probability:6.1%}  {p.label}" for p in predictions]
    pen = ImageDraw.Draw(image, "RGBA")
    width = max(pen.textlength(line, font=font) for line in lines)
    pad = size // 3
    pen.rectangle((0, 0, width + 2 * pad, len(lines) * (size + pad) + pad), fill=(0, 0, 0, 160))
    for i, line in enumerate(lines):
        pen.text((pad, pad + i * (size + pad)), line, font=font, fill=(255, 255, 80) if i == 0 else (255, 255, 255))
    return image


class AnnotatedWriter:
    """An H.264 MP4 written to a temporary file and renamed to ``target`` by :meth:`close` (or removed by
    :meth:`abort`)."""

    def __init__(self, target: Path, width: int, height: int) -> None:
        self.av = require("av", "video", "--annotate")
        self.target = target
        self.tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part.mp4"
        self.width, self.height = width - width % 2, height - height % 2  # yuv420p needs even dimensions
        self.frames = 0
        self.last_pts = -1
        try:
            self.container = self.av.open(str(self.tmp), "w", format="mp4", options={"movflags": "+faststart"})
        except (self.av.FFmpegError, OSError) as e:
            raise write_error(e if isinstance(e, OSError) else OSError(str(e)), target, "the annotated video") from None
        self.stream = self.container.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "23"})
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.time_base = _TIME_BASE

    def write(self, image: Image.Image, seconds: float) -> None:
        if image.size != (self.width, self.height):  # an odd size, or a live source's new resolution
            image = (
                image.resize((self.width, self.height))
                if abs(image.width - self.width) > 1
                else image.crop((0, 0, self.width, self.height))
            )
        frame = self.av.VideoFrame.from_image(image)
        pts = max(int(round(seconds / float(_TIME_BASE))), self.last_pts + 1)  # strictly increasing
        frame.pts, frame.time_base, self.last_pts = pts, _TIME_BASE, pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            os.replace(self.tmp, self.target)
        except (self.av.FFmpegError, OSError) as e:
            self.abort()
            raise write_error(
                e if isinstance(e, OSError) else OSError(str(e)), self.target, "the annotated video"
            ) from None
        return self.target

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
