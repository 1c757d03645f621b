"""``POST /v1/video``: a short clip in, per-sampled-frame top-k and the merged timeline out.

The clip goes through :mod:`effnet.video` as ``effnet classify clip.mp4`` does (the record's preprocessing,
reduced conversion of big frames, ``fps=2`` unless asked otherwise, :func:`effnet.video.segments`), held in
memory (never written to disk). It is a workload of its own (:class:`.jobs.JobGate`): ``video_concurrency``
clips at once and ``video_queue`` waiting, 503 with Retry-After beyond, ``video_timeout_s`` each (a place
is taken before the body is read, so the places bound the uploads held in memory too). Its bounds
are checked before the work they bound: the body's size while it is read (413), its container format
(400 unless one of :data:`effnet.video.UPLOAD_FORMATS`: FFmpeg opens nothing else), then the container's
header (422: longer than ``max_video_s``, or more than ``max_video_decode_mp`` megapixels to decode; 413:
frames above ``max_image_mp``), then every decoded frame (a header can lie: decoding stops at the first
frame past a bound, and a frame above ``max_image_mp``: 413; more than ``max_video_frames`` sampled: 422).
Sampled frames are classified through the server's batcher one batch at a time, so
image requests queue between a clip's batches instead of behind the whole clip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import re
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import EffnetError
from ..predict import clamp_top_k
from ..saliency_budget import ExplainStopped
from .batcher import BatcherClosedError
from .config import DEFAULT_TOP_K, MAX_TOP_K, MAX_VIDEO_TOP_K, PIXELS
from .context import ServerContext
from .errors import ApiError
from .jobs import JobGate
from .validation import check_query, multipart_image, parse_int_param

__all__ = ["VIDEO_FIELD", "video_gate", "video_routes"]

VIDEO_FIELD = "video"  # the multipart field of a clip (a raw body is taken too)
_STATUS = {"too_long": 422, "too_costly": 422, "too_many_frames": 422, "too_many_pixels": 413}  # kind -> HTTP
_OPTION = {
    "too_long": "--max-video-seconds",
    "too_costly": "--max-video-decode-mp",
    "too_many_frames": "--max-video-frames",
}
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")  # fps: plain decimal digits (no sign, exponent, "_", inf)


def video_gate(concurrency: int, queue: int) -> JobGate:
    return JobGate(concurrency, queue, name="video", busy="with video clips", noun="clips")


@dataclass(frozen=True)
class ClipRequest:
    data: bytes
    fps: float | None
    every: int | None
    top_k: int
    window: int


class _Batched:
    """What :class:`effnet.video.VideoClassification` needs of a classifier (``labels``, ``iter_probabilities``),
    with inference through the server's batcher: each batch of sampled frames is queued with the image
    requests and awaited before the next one is sent."""

    def __init__(
        self, ctx: ServerContext, loop: asyncio.AbstractEventLoop, labels: Any, stop: threading.Event, deadline: float
    ) -> None:
        self.ctx, self.loop, self.labels, self.stop, self.deadline = ctx, loop, labels, stop, deadline
        self.classified = 0

    def iter_probabilities(self, batches: Iterable[Any]) -> Generator[tuple[Any, np.ndarray], None, None]:
        from ..video import VideoLimitError

        for batch in batches:
            crops = batch.crops()
            probs = np.empty((0, len(self.labels)), np.float32)
            if len(crops):
                if self.stop.is_set():
                    raise VideoLimitError("stopped", "stopped")
                future = asyncio.run_coroutine_threadsafe(self.ctx.batcher.submit(PIXELS, crops), self.loop)
                try:  # never wait past the clip's deadline (+1 s: the gate answers 504 first)
                    probs = future.result(timeout=max(0.0, self.deadline - time.monotonic()) + 1.0)
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    raise VideoLimitError("stopped", "stopped") from None
                self.classified += len(crops)
                self.ctx.metrics.video_frames.labels("classified").inc(len(crops))
            yield batch, probs


def run_clip(
    ctx: ServerContext,
    clip: ClipRequest,
    loop: asyncio.AbstractEventLoop,
    deadline: float,
    stop: threading.Event,
) -> dict[str, Any]:
    """The whole job of one clip, on the video thread: decode, classify, segment. Raises VideoError (a body
    that is not a video), VideoLimitError (a bound crossed, or stopped) or BatcherClosedError."""
    from ..video import DecodeBudget, InMemory, Sampling, VideoClassification, VideoLimits

    config, model = ctx.config, ctx.model
    clf: Any = getattr(model, "classifier", model)  # a ServedModel's Classifier, or a Ray RemoteModel itself
    budget = DecodeBudget(
        VideoLimits(
            max_seconds=config.max_video_s,
            max_decode_mp=config.max_video_decode_mp,
            max_frames=config.max_video_frames,
        ),
        stop.is_set,
    )
    sampling = Sampling(fps=None, every=clip.every) if clip.every is not None else Sampling(fps=clip.fps)
    batched = _Batched(ctx, loop, clf.labels, stop, deadline)
    video = VideoClassification(
        batched,
        InMemory(clip.data, "clip"),
        preprocess=clf.preprocess,
        sampling=sampling,
        top_k=clip.top_k,
        batch_size=config.max_batch,
        budget=budget,
        max_pixels=config.max_pixels,
        reduce=True,  # the server's decode is "reduced", as for JPEG uploads (launch.load_model)
    )
    try:
        rows = [r.to_dict() for r in video]
    finally:
        ctx.metrics.video_frames.labels("decoded").inc(budget.frames)
    for row in rows:
        row.pop("path", None)  # always "clip": the upload has no path
    stats = video.stats
    answer: dict[str, Any] = {
        "sampling": {"every": clip.every} if clip.every is not None else {"fps": sampling.fps},
        "video": {
            "width": stats.width,
            "height": stats.height,
            "duration": None if stats.duration is None else round(stats.duration, 3),
            "frame_rate": None if not stats.rate else round(float(stats.rate), 3),
            "frames_decoded": stats.decoded,
            "frames_classified": batched.classified,
            "audio": stats.audio,
        },
        "frames": rows,
        "segments": [s.to_dict() for s in video.segments(clip.window)],
    }
    errors = [r["error"] for r in rows if "error" in r]
    if errors:
        answer["error"] = errors[-1]  # the damage that ended the clip: the rows before it stand
    return answer


def _sampling(query: Any) -> tuple[float | None, int | None]:
    """``fps`` (decimal digits with at most one dot, > 0 and <= 1000) or ``every`` (an integer >= 1); neither:
    the CLI's default."""
    from ..video import DEFAULT_FPS

    if "fps" in query and "every" in query:
        raise ApiError(400, "bad_request", "give fps or every, not both")
    if "every" in query:
        return None, parse_int_param(query, "every", 1, 1, 1_000_000)
    raw = query.get("fps")
    if raw is None:
        return DEFAULT_FPS, None
    fps = float(raw) if _NUMBER.fullmatch(raw) else math.nan
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise ApiError(
            400, "bad_request", f"fps must be a decimal number (like 2 or 0.5) > 0 and <= 1000, got {raw[:40]!r}"
        )
    return fps, None


def video_routes(ctx: ServerContext, gate: JobGate) -> list[Route]:
    model, info, config = ctx.model, ctx.info, ctx.config

    async def _read_and_run(
        request: Request, deadline: float, fps: float | None, every: int | None, top_k: int, window: int
    ) -> dict[str, Any]:
        """The body, read in the place :meth:`JobGate.reserve` took (given back here on any failure before the
        job starts: a bad or slow body, a client gone), then the clip's job in that place."""
        started = False
        try:
            try:  # a body that trickles in holds its place: it must arrive within the clip's time
                body = await asyncio.wait_for(
                    ctx.read_body(request, config.max_video_mb, "--max-video-mb"), deadline - time.monotonic()
                )
            except TimeoutError:
                raise ApiError(
                    408,
                    "request_timeout",
                    f"the clip did not arrive within {config.video_timeout_s:g} s (--video-timeout)",
                ) from None
            if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
                body = await multipart_image(request.headers, body, VIDEO_FIELD, config.max_video_bytes)
            if not body:
                raise ApiError(
                    400,
                    "empty_body",
                    f"empty request body: send a video clip (raw, or multipart field {VIDEO_FIELD!r})",
                )
            clip = ClipRequest(body, fps, every, top_k, window)
            job = functools.partial(run_clip, ctx, clip, asyncio.get_running_loop(), deadline)
            started = True  # from here the gate frees the place when the job ends
            return await gate.run(job, deadline, request.is_disconnected, reserved=True)
        finally:
            if not started:
                gate.release()

    @ctx.instrumented("video")
    async def video(request: Request) -> Response:
        """Sampled frames of a clip with their top-k, and the timeline (segments)."""
        from ..video import DEFAULT_WINDOW, NotAVideoError, VideoError, VideoLimitError

        started = time.perf_counter()
        query = request.query_params
        check_query(query, ("fps", "every", "top_k", "window"), "/v1/video")
        fps, every = _sampling(query)
        requested = parse_int_param(query, "top_k", DEFAULT_TOP_K, 1, MAX_TOP_K)
        top_k = clamp_top_k(min(requested, MAX_VIDEO_TOP_K), info.num_classes)  # bounds the answer per frame
        window = parse_int_param(query, "window", DEFAULT_WINDOW, 1, 999)
        clf: Any = getattr(model, "classifier", model)
        if getattr(clf, "preprocess", None) is None or getattr(clf, "labels", None) is None:
            raise ApiError(501, "unsupported", "this server cannot classify clips: its model has no preprocessing here")
        try:
            from .._optional import require

            require("av", "video", "classifying video clips")
        except EffnetError as e:
            raise ApiError(501, "unsupported", str(e)) from None
        gate.reserve()  # busy: 503 before the upload is read; else its place holds the body from here
        deadline = time.monotonic() + config.video_timeout_s
        try:
            answer = await _read_and_run(request, deadline, fps, every, top_k, window)
        except VideoLimitError as e:
            if e.kind == "stopped":
                if time.monotonic() >= deadline:
                    raise ApiError(
                        504, "timeout", f"no answer within {config.video_timeout_s:g} s (--video-timeout)"
                    ) from None
                raise ClientDisconnect() from None
            option = _OPTION.get(e.kind, "--max-image-mp")
            kind = e.kind if e.kind == "too_many_pixels" else f"video_{e.kind}"  # pixels: the images' kind
            raise ApiError(_STATUS.get(e.kind, 422), kind, f"clip refused: {e} ({option})") from None
        except NotAVideoError as e:
            raise ApiError(400, "bad_video", f"{e}: send still images to /v1/classify") from None
        except VideoError as e:
            raise ApiError(400, "bad_video", str(e)) from None
        except TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {config.video_timeout_s:g} s (--video-timeout)") from None
        except ExplainStopped:
            raise ClientDisconnect() from None
        except BatcherClosedError as e:
            raise ApiError(503, "shutting_down", str(e)) from None
        if not any("predictions" in r for r in answer["frames"]) and "error" in answer:
            raise ApiError(400, "bad_video", answer["error"])  # not one frame could be decoded
        answer = {"model": info.name, "weights": info.weights, "top_k": top_k, **answer}
        if top_k != requested:
            answer["top_k_requested"] = requested
        answer["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return JSONResponse(answer)

    return [Route("/v1/video", video, methods=["POST"])]
