"""effnet serve — an HTTP inference server: KServe v2 REST, /v1/classify, a web page at /, /metrics.

Binds 127.0.0.1 unless --host says otherwise. Concurrent requests are batched
(--max-batch, --max-wait-ms); more than --max-queue requests in flight get 503,
bodies above --max-body-mb get 413, requests slower than --timeout get 504.
SIGTERM or Ctrl-C stops accepting and lets in-flight requests finish.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re

# --max-batch / --max-queue defaults per device kind. On the CPU a forward pass costs about the same per
# image at any batch size, so a small batch keeps latency low. A GPU's throughput keeps rising with the
# batch far beyond 8 (issue 11's H200 run of B5: about 80 img/s eager at batch 1, 1,600 img/s at batch
# 256), so under load it gets batches of up to 64, and room in the queue for four such batches.
BATCHING_DEFAULTS: dict[str, dict[str, int]] = {
    "cpu": {"max_batch": 8, "max_queue": 64},
    "cuda": {"max_batch": 64, "max_queue": 256},
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_backend_arguments, add_device_argument, add_model_arguments, add_model_path_argument

    p = sub.add_parser(
        "serve",
        help="run an HTTP inference server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p)
    add_backend_arguments(p)
    add_model_path_argument(p)
    add_device_argument(p)
    p.add_argument("--name", default=None, help="model name in the v2 API (default: the --model name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every endpoint but health (default: $EFFNET_API_KEY; "
        "without a key, a non-loopback --host prints a warning)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    p.add_argument(
        "--allowed-hosts",
        nargs="+",
        default=None,
        metavar="NAME",
        help="Host names to answer besides localhost/127.0.0.1/::1 on a loopback bind (on another bind: the only ones)",
    )
    p.add_argument(
        "--allowed-origins",
        nargs="+",
        default=(),
        metavar="URL",
        help="web origins (scheme://host[:port]) allowed besides the server's own; others get 403",
    )
    p.add_argument(
        "--max-image-mp",
        type=float,
        default=40.0,
        help="megapixels per uploaded image, read from its header before decoding; 413 beyond (default: %(default)s)",
    )
    p.add_argument(
        "--explain-timeout",
        type=float,
        default=300.0,
        help="per /v1/explain request, s; what cannot finish in it is refused up front (default: %(default)s)",
    )
    p.add_argument(
        "--explain-queue",
        type=int,
        default=4,
        help="explanations waiting beyond the one computing, 0: none; 503 beyond (default: %(default)s)",
    )
    p.add_argument(
        "--explain-memory-mb",
        type=float,
        default=2048.0,
        help="activation memory of one chunk of an explanation, MB (default: %(default)s)",
    )
    p.add_argument(
        "--max-video-mb",
        type=float,
        default=32.0,
        help="/v1/video: clip upload limit, MiB; 413 beyond (default: %(default)s)",
    )
    p.add_argument(
        "--max-video-seconds",
        type=float,
        default=60.0,
        help="/v1/video: clip length, s, from its header and then as decoded; 422 beyond (default: %(default)s)",
    )
    p.add_argument(
        "--max-video-decode-mp",
        type=float,
        default=2000.0,
        help="/v1/video: megapixels to decode (width x height summed over every frame; 1080p30 for 30 s is 1866), "
        "from the header and then as decoded; 422 beyond (default: %(default)s)",
    )
    p.add_argument(
        "--max-video-frames",
        type=int,
        default=1000,
        help="/v1/video: sampled (classified) frames per clip, which bound the answer's size; 422 beyond "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--video-concurrency", type=int, default=1, help="/v1/video: clips computing at once (default: %(default)s)"
    )
    p.add_argument(
        "--video-queue",
        type=int,
        default=2,
        help="/v1/video: clips waiting (or uploading) beyond those, 0: none; 503 beyond (default: %(default)s)",
    )
    p.add_argument(
        "--video-timeout", type=float, default=120.0, help="/v1/video: per clip, s; 504 beyond (default: %(default)s)"
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="images per forward pass (default: 8 on the CPU, 64 on CUDA)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to fill a batch (default: %(default)s)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=None,
        help="requests in flight before answering 503 (default: 64 on the CPU, 256 on CUDA)",
    )
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit, MiB (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (default: %(default)s)")
    p.add_argument(
        "--workers", type=int, default=1, help="server processes, each with its own model copy (default: %(default)s)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="inference threads per worker (default: the cores divided among the workers)",
    )
    p.add_argument(
        "--decode-threads", type=int, default=2, help="image decoding threads per worker (default: %(default)s)"
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default): this machine; ray: a Ray Serve deployment on a Ray cluster (pip install 'effnet[ray]')",
    )
    p.add_argument("--ray-address", metavar="ADDR", default=None, help="--engine ray: cluster to join (see classify)")
    p.add_argument("--replicas", type=int, default=None, metavar="N", help="--engine ray: model replicas (default: 1)")
    p.add_argument(
        "--autoscale", default=None, metavar="MIN:MAX", help="--engine ray: autoscale model replicas in MIN..MAX"
    )
    p.add_argument(
        "--cpus-per-replica", type=float, default=None, metavar="F", help="--engine ray: CPUs per model replica (1)"
    )
    p.add_argument(
        "--gpus-per-replica", type=float, default=None, metavar="F", help="--engine ray: GPUs per model replica (0)"
    )
    p.add_argument(
        "--ingress-replicas",
        type=int,
        default=None,
        metavar="N",
        help="--engine ray: HTTP/decode replicas, which hold no model (default: 1)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", action="store_true", help="no line per request on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import EffnetError
    from . import UsageError, model_path_options

    missing = [
        m for m in ("starlette", "uvicorn", "multipart", "prometheus_client") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise EffnetError(
            f"effnet serve needs the serve extra (missing: {', '.join(missing)}): pip install 'effnet[serve]'"
        )
    from ..serve.app import ServeConfig
    from ..serve.auth import API_KEY_ENV
    from ..serve.launch import ServerOptions, serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise UsageError("--workers and --threads must be >= 1")
    if args.engine == "ray":
        # Decided by the request, not by this machine (a CPU-only head may serve GPU replicas): the
        # replicas see a GPU exactly when they reserve one (effnet.distributed.placement).
        from ..distributed.placement import device_kind_on_ray
        from ..errors import EffnetError

        try:
            kind = device_kind_on_ray(args.device, args.gpus_per_replica or 0.0)
        except EffnetError as e:
            raise UsageError(str(e)) from None
    else:
        from ..device import resolve_device

        kind = resolve_device(args.device).type
    defaults = BATCHING_DEFAULTS[kind]
    try:
        config = ServeConfig(
            max_batch=defaults["max_batch"] if args.max_batch is None else args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_queue=defaults["max_queue"] if args.max_queue is None else args.max_queue,
            max_body_mb=args.max_body_mb,
            timeout_s=args.timeout,
            decode_threads=args.decode_threads,
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
            explain_timeout_s=args.explain_timeout,
            explain_queue=args.explain_queue,
            explain_memory_mb=args.explain_memory_mb,
            max_image_mp=args.max_image_mp,
            max_video_mb=args.max_video_mb,
            max_video_s=args.max_video_seconds,
            max_video_decode_mp=args.max_video_decode_mp,
            video_concurrency=args.video_concurrency,
            video_queue=args.video_queue,
            video_timeout_s=args.video_timeout,
            max_video_frames=args.max_video_frames,
            allowed_hosts=tuple(args.allowed_hosts) if args.allowed_hosts else None,
            allowed_origins=tuple(args.allowed_origins),
        )
    except ValueError as e:  # name the options, not the config fields
        message = str(e)
        for field, option in (
            ("timeout_s", "--timeout"),
            ("max_batch", "--max-batch"),
            ("max_wait_ms", "--max-wait-ms"),
            ("max_queue", "--max-queue"),
            ("max_body_mb", "--max-body-mb"),
            ("decode_threads", "--decode-threads"),
            ("api_key", "--api-key"),
            ("explain_timeout_s", "--explain-timeout"),
            ("explain_queue", "--explain-queue"),
            ("explain_memory_mb", "--explain-memory-mb"),
            ("max_image_mp", "--max-image-mp"),
            ("max_video_mb", "--max-video-mb"),
            ("max_video_s", "--max-video-seconds"),
            ("max_video_decode_mp", "--max-video-decode-mp"),
            ("video_concurrency", "--video-concurrency"),
            ("video_queue", "--video-queue"),
            ("video_timeout_s", "--video-timeout"),
            ("max_video_frames", "--max-video-frames"),
        ):
            message = re.sub(rf"\b{field}\b", option, message)  # whole names: timeout_s is inside video_timeout_s
        raise UsageError(message) from None
    file_options = model_path_options(args)
    model_path = file_options.get("model_path")
    options = ServerOptions(
        model=args.model,
        weights=args.weights,
        backend=args.backend,
        model_path=model_path,
        output_kind=file_options.get("output_kind"),
        precision=args.precision,
        device=args.device,
        name=args.name,
        threads=args.threads,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        config=config,
    )
    if args.engine == "ray":
        return _serve_on_ray(args, options)
    ray_only = ("replicas", "autoscale", "cpus_per_replica", "gpus_per_replica", "ingress_replicas")
    given = [f"--{name.replace('_', '-')}" for name in ray_only if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: for --engine ray only")
    serve(options)
    return 0


def _serve_on_ray(args: argparse.Namespace, options) -> int:
    from ..distributed import check_installed
    from ..errors import EffnetError
    from . import UsageError

    check_installed("effnet serve --engine ray")
    from ..distributed.serve import RayServeOptions, run

    if args.replicas is not None and args.autoscale is not None:
        raise UsageError("give --replicas N or --autoscale MIN:MAX, not both")
    replicas: int | tuple[int, int] = args.replicas or 1
    if args.autoscale is not None:
        try:
            low, high = (int(x) for x in args.autoscale.split(":", 1))
        except ValueError:
            raise UsageError(f"--autoscale is MIN:MAX, got {args.autoscale!r}") from None
        replicas = (low, high)
    resources = {
        name: getattr(args, name)
        for name in ("cpus_per_replica", "gpus_per_replica", "ingress_replicas")
        if getattr(args, name) is not None
    }
    ray_options = RayServeOptions(replicas=replicas, address=args.ray_address, **resources)
    try:
        ray_options.check()
    except EffnetError as e:
        raise UsageError(str(e)) from None
    run(options, ray_options)
    return 0
