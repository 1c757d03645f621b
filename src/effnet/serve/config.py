"""The limits and batching of one server process (the ``effnet serve`` options), and the API's constants."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["DEFAULT_TOP_K", "MAX_TOP_K", "MAX_VIDEO_TOP_K", "PIXELS", "TENSOR", "ServeConfig"]

DEFAULT_TOP_K = 5
MAX_TOP_K = 1_000_000  # a sanity bound on the query value; above the model's classes it is clamped (clamp_top_k)
MAX_VIDEO_TOP_K = 20  # /v1/video: classes per sampled frame; above it is clamped (the answer says top_k_requested)
_DAY = 86_400.0
# Upper bounds of the options (beyond them a value is a typo, or breaks a timer: threading.TIMEOUT_MAX). Each
# field is also > 0 (the queues: >= 0) and finite.
_UPPER = {
    "max_batch": 65_536, "max_wait_ms": 60_000.0, "max_queue": 1_000_000, "max_body_mb": 65_536.0,
    "timeout_s": _DAY, "decode_threads": 1024, "explain_concurrency": 1024, "explain_queue": 1_000_000,
    "explain_timeout_s": _DAY, "explain_memory_mb": 1_048_576.0, "max_video_mb": 65_536.0, "max_video_s": _DAY,
    "max_video_decode_mp": 1e9, "max_video_frames": 1_000_000, "video_concurrency": 1024,
    "video_queue": 1_000_000, "video_timeout_s": _DAY, "max_image_mp": 10_000.0,
}  # fmt: skip
_QUEUES = ("explain_queue", "video_queue")  # 0: no waiting, the computing places only
PIXELS, TENSOR = "pixels", "tensor"  # the batcher's two kinds of input


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of one server process (the ``effnet serve`` options)."""

    max_batch: int = 8  # rows per forward pass
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 64  # requests in flight (decoding, queued or running); 503 beyond
    max_body_mb: float = 16.0  # request body limit; 413 beyond
    timeout_s: float = 30.0  # per request, from admission to answer; 504 beyond
    decode_threads: int = 2  # image decoding / JSON parsing threads (Pillow releases the GIL)
    api_key: str | None = field(default=None, repr=False)  # when set, every non-health route needs it (auth.py)
    # /v1/explain is its own workload (explain_work.py): its own places, queue, timeout and memory budget.
    explain_concurrency: int = 1  # explanations computing at once per worker
    explain_queue: int = 4  # explanations waiting beyond those; 503 + Retry-After beyond
    explain_timeout_s: float = (
        300.0  # B5 gradcam and integrated gradients finish in it on 2 busy cores (docs/serving.md)
    )
    explain_memory_mb: float = 2048.0  # activations of one chunk of images with gradients (saliency_budget)
    # POST /v1/video is its own workload too (video_routes.py): its own places, queue and timeout, and bounds
    # on one clip, each checked before the work it bounds (docs/serving.md).
    max_video_mb: float = 32.0  # clip upload limit, MiB; 413 beyond
    max_video_s: float = 60.0  # video time; 422 beyond (the header's duration, then the frames' timestamps)
    max_video_decode_mp: float = 2000.0  # megapixels decoded, width x height summed over frames; 422 beyond
    video_concurrency: int = 1  # clips decoding and classifying at once per worker
    video_queue: int = 2  # clips waiting beyond those; 503 + Retry-After beyond
    video_timeout_s: float = 120.0  # per clip, from admission to answer; 504 beyond
    max_video_frames: int = 1000  # sampled (classified) frames of one clip: bounds the answer; 422 beyond
    max_image_mp: float = 40.0  # megapixels per uploaded image, read from its header before decoding; 413 beyond
    # Browser-facing guards (guard.py): None = any Host; launch.serve sets loopback names for a loopback bind.
    allowed_hosts: tuple[str, ...] | None = None
    allowed_origins: tuple[str, ...] = ()  # besides the server's own origin

    def __post_init__(self) -> None:
        # JSON (ServerOptions.from_json, for --workers) gives lists: keep the fields hashable tuples.
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        object.__setattr__(self, "allowed_origins", tuple(self.allowed_origins))
        skip = ("max_wait_ms", "api_key", "allowed_hosts", "allowed_origins")
        limits = {k: v for k, v in asdict(self).items() if k not in skip}
        problems = [
            f"{k} must be {'>= 0' if k in _QUEUES else '> 0'}, got {v}"
            for k, v in limits.items()
            if not (v >= 0 if k in _QUEUES else v > 0)
        ]
        problems += [
            f"{k} must be a finite number <= {_UPPER[k]:g}, got {v}"
            for k, v in asdict(self).items()
            if k in _UPPER and isinstance(v, (int, float)) and not (math.isfinite(v) and v <= _UPPER[k])
        ]
        if self.api_key is not None and not self.api_key.strip():
            problems.append("api_key must not be empty")
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_image_mp * 1_000_000)
