"""Videos made in the tests from the sample photos with PyAV (H.264), and a real HTTP stream server."""

from __future__ import annotations

import http.server
import io
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

SIZE = (256, 192)  # small frames: fast to encode and decode; still above Lite0's 224 crop after the resize


def photo(path: Path, size: tuple[int, int] = SIZE) -> Image.Image:
    return Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC)


def write_clip(
    path: Path,
    images: list[Image.Image],
    times: list[float],
    *,
    rotation: int = 0,
    fmt: str | None = None,
    faststart: bool = False,
    audio: bool = False,
) -> Path:
    """``images[i]`` shown from ``times[i]`` (seconds; any spacing: variable frame rate), H.264 near-lossless."""
    options = {"movflags": "+faststart"} if faststart else {}
    out = av.open(str(path), "w", format=fmt, options=options)
    stream = out.add_stream("libx264", rate=25, options={"crf": "12", "preset": "ultrafast"})
    stream.width, stream.height, stream.pix_fmt = images[0].width, images[0].height, "yuv420p"
    stream.codec_context.time_base = Fraction(1, 1000)
    if rotation:
        stream.set_display_rotation(rotation)
    a_stream = out.add_stream("aac", rate=48000) if audio else None
    # each frame lasts until the next one (the last: as long as the one before), so the file's duration is
    # where the last frame ends, as a camera's would be (not the encoder's guess from its nominal rate)
    ends = [*times[1:], times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0.04)]
    lasts: dict[int, int] = {}  # pts -> duration, ms: the encoder's packets come out later than their frames
    for image, t, end in zip(images, times, ends, strict=True):
        frame = av.VideoFrame.from_image(image)
        frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
        lasts[frame.pts] = int(round(end * 1000)) - frame.pts
        for packet in stream.encode(frame):
            _mux(out, packet, lasts)
    for packet in stream.encode():
        _mux(out, packet, lasts)
    if a_stream is not None:
        _silence(out, a_stream, times[-1])
    out.close()
    return path


def _mux(out: av.container.OutputContainer, packet: av.Packet, lasts: dict[int, int]) -> None:
    if packet.pts is not None and packet.pts in lasts:
        packet.duration = lasts.pop(packet.pts)
    out.mux(packet)


def _silence(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    samples = 1024
    for i in range(int(seconds * 48000 / samples) + 1):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * samples
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def held(images: list[Image.Image], seconds: float, fps: int = 10) -> tuple[list[Image.Image], list[float]]:
    """Each image held for ``seconds`` at ``fps``: the frames and their times."""
    per = int(seconds * fps)
    frames = [im for im in images for _ in range(per)]
    return frames, [i / fps for i in range(len(frames))]


class _Pipe(io.RawIOBase):
    """A write-only sink that cannot seek, like a pipe: a muxer cannot go back to fill in its header."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:  # noqa: ANN001 - io's buffer protocol
        self.data += b
        return len(b)


def unstated_clip(images: list[Image.Image], fps: int = 10) -> bytes:
    """Matroska written to a pipe: its header states no duration and no frame count (nothing to check before
    decoding), a video whose length and cost are known only once it is decoded."""
    sink = _Pipe()
    out = av.open(sink, "w", format="matroska")
    stream = out.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "ultrafast"})
    stream.width, stream.height, stream.pix_fmt = images[0].width, images[0].height, "yuv420p"
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_image(image)
        frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return bytes(sink.data)


def raw_h264(images: list[Image.Image], fps: int = 10) -> bytes:
    """A raw H.264 elementary stream (no container: its only "header" is the first SPS) of ``images``, which
    may change size: each size is encoded on its own and the streams are joined, as a splice would."""
    data = bytearray()
    start = 0
    while start < len(images):
        size = images[start].size
        run = [im for im in images[start:] if im.size == size]
        run = run[: next((i for i, im in enumerate(images[start:]) if im.size != size), len(run))]
        sink = _Pipe()
        out = av.open(sink, "w", format="h264")
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i, image in enumerate(run):
            frame = av.VideoFrame.from_image(image)
            frame.pts = start + i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        out.close()
        data += sink.data
        start += len(run)
    return bytes(data)


def audio_only(path: Path) -> Path:
    out = av.open(str(path), "w")
    _silence(out, out.add_stream("aac", rate=48000), 0.5)
    out.close()
    return path


class StreamServer:
    """Serves ``data`` (an MPEG-TS file) over HTTP on 127.0.0.1, paced at ``rate`` bytes/s like a live
    stream, to the first ``connections`` clients; later clients get 404 (the stream is gone). With
    ``stall_after`` bytes, it sends that much and then holds the connection open, sending nothing."""

    def __init__(
        self, data: bytes, *, seconds: float, connections: int = 1, stall_after: int | None = None, file: bool = False
    ) -> None:
        self.data, self.rate, self.file = data, len(data) / seconds, file
        self.left, self.stall_after = connections, stall_after
        self.finished = threading.Event()  # the (first) stream was sent whole
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if server.left <= 0:
                    self.send_error(404)
                    return
                server.left -= 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4" if server.file else "video/mp2t")
                if server.file:  # a file on a web server: its length is known
                    self.send_header("Content-Length", str(len(server.data)))
                self.end_headers()  # a live stream: no Content-Length, no end the client knows of
                chunk, sent, start = 4096, 0, time.monotonic()
                try:
                    while sent < len(server.data):
                        if server.stall_after is not None and sent >= server.stall_after:
                            server.release.wait(60)
                            return
                        self.wfile.write(server.data[sent : sent + chunk])
                        self.wfile.flush()
                        sent += chunk
                        delay = start + sent / server.rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    return
                finally:
                    server.finished.set()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/live.ts"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StreamServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
