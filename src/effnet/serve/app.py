"""The ASGI app: KServe v2 REST, ``/v1/classify``, ``/v1/explain``, a web page and Prometheus metrics.

Every request is admitted against a bounded number of places (``max_queue``:
503 beyond it), read with a body limit (413), decoded in a small thread pool,
batched with other requests (:class:`~effnet.serve.batcher.DynamicBatcher`) and
answered within ``timeout_s`` (504). Every problem with a request is a 4xx with
``{"error": ...}``; nothing a client sends stops the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import TypeVar

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .._version import __version__
from ..errors import EffnetError, ImageError
from ..predict import clamp_top_k
from .auth import BearerAuth
from .batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from .errors import ApiError
from .kserve import EXTENSIONS, HEADER_LENGTH, encode_infer_response, parse_infer_request
from .kserve import model_metadata as v2_model_metadata
from .metrics import ServerMetrics
from .model import ModelEndpoint
from .openapi import openapi_spec
from .validation import check_query, multipart_image, parse_int_param

log = logging.getLogger("effnet.serve")
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

DEFAULT_TOP_K = 5
MAX_TOP_K = 1_000_000  # a sanity bound on the query value; above the model's classes it is clamped (clamp_top_k)
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

    def __post_init__(self) -> None:
        limits = {k: v for k, v in asdict(self).items() if k not in ("max_wait_ms", "api_key")}
        problems = [f"{k} must be > 0, got {v}" for k, v in limits.items() if not v > 0]
        if self.api_key is not None and not self.api_key.strip():
            problems.append("api_key must not be empty")
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _index_html() -> str:
    return resources.files("effnet.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    model: ModelEndpoint, config: ServeConfig | None = None, *, max_concurrent_batches: int = 1
) -> Starlette:
    """A Starlette app serving ``model``. The batcher starts and stops with the app's lifespan.

    ``max_concurrent_batches`` > 1 is for a model whose inference runs elsewhere (awaitable calls to
    several replicas): that many batches are in flight at once."""
    config = config or ServeConfig()
    info = model.info
    decode_pool = ThreadPoolExecutor(max_workers=config.decode_threads, thread_name_prefix="effnet-decode")
    metrics: ServerMetrics
    batcher = DynamicBatcher(
        {PIXELS: model.probabilities, TENSOR: model.tensor_probabilities},
        max_batch=config.max_batch,
        max_wait_s=config.max_wait_ms / 1000,
        max_queue=config.max_queue,
        on_batch=lambda kind, rows, seconds: metrics.observe_batch(kind, rows, seconds),
        max_concurrent_batches=max_concurrent_batches,
    )
    metrics = ServerMetrics(queue_depth=lambda: batcher.queue_depth, in_flight=lambda: batcher.in_flight)
    metrics.model_info.info({k: str(v) for k, v in info.to_dict().items()})
    index_html = _index_html()

    # -- helpers -------------------------------------------------------------------------------
    def instrumented(name: str) -> Callable[[Handler], Handler]:
        """Count, time and turn every failure of a handler into a JSON error answer."""

        def wrap(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def endpoint(request: Request) -> Response:
                started = time.perf_counter()
                try:
                    response = await handler(request)
                except ApiError as e:
                    metrics.errors.labels(e.kind).inc()
                    response = error_response(e.status, e.message, e.headers)
                except ClientDisconnect:
                    metrics.errors.labels("client_disconnect").inc()
                    response = Response(status_code=499)  # nobody is listening; nginx's code, for the logs
                except Exception:  # a bug or a model failure: log it, answer 500, keep serving
                    log.exception("internal error while answering %s %s", request.method, request.url.path)
                    metrics.errors.labels("internal").inc()
                    response = error_response(500, "internal server error (see the server log)")
                metrics.requests.labels(name, str(response.status_code)).inc()
                metrics.latency.labels(name).observe(time.perf_counter() - started)
                metrics.sample(answered=1)
                return response

            return endpoint

        return wrap

    async def in_thread(fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(decode_pool, fn, *args)

    @contextlib.asynccontextmanager
    async def admitted():
        """A place among ``max_queue`` and the request timeout, around the work of one request."""
        try:
            async with batcher.admit():
                metrics.sample()
                async with asyncio.timeout(config.timeout_s):
                    yield
        except QueueFullError as e:
            raise ApiError(503, "queue_full", f"server busy: {e}; retry later", {"retry-after": "1"}) from None
        except BatcherClosedError as e:
            raise ApiError(503, "shutting_down", str(e)) from None
        except TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {config.timeout_s:g} s (--timeout)") from None

    async def read_body(request: Request) -> bytes:
        """The whole body, refusing more than ``max_body_mb`` by Content-Length and by counting the stream."""
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}")
            if int(declared) > limit:
                raise ApiError(
                    413,
                    "body_too_large",
                    f"request body of {int(declared):,} bytes is above the limit of {limit:,} bytes "
                    f"(--max-body-mb {config.max_body_mb:g})",
                )
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(
                    413,
                    "body_too_large",
                    f"request body is above the limit of {limit:,} bytes (--max-body-mb {config.max_body_mb:g})",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def image_bytes(request: Request, body: bytes) -> bytes:
        """Raw body, or the multipart field ``image``."""
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return body

        return await multipart_image(request.headers, body, "image", config.max_body_bytes)  # in memory only

    def check_model(request: Request) -> None:
        name = request.path_params["name"]
        if name != info.name:
            raise ApiError(404, "unknown_model", f"unknown model {name!r}; this server has {info.name!r}")
        version = request.path_params.get("version")
        if version is not None and version != info.version:
            raise ApiError(
                404, "unknown_model", f"unknown version {version!r} of model {name!r}; available: {info.version!r}"
            )

    # -- endpoints -----------------------------------------------------------------------------
    @instrumented("classify")
    async def classify(request: Request) -> Response:
        started = time.perf_counter()
        check_query(request.query_params, ("top_k",), "/v1/classify")
        requested = parse_int_param(request.query_params, "top_k", DEFAULT_TOP_K, 1, MAX_TOP_K)
        top_k = clamp_top_k(requested, info.num_classes)  # the CLI's rule; the answer says when it clamped
        async with admitted():
            data = await image_bytes(request, await read_body(request))
            if not data:
                raise ApiError(
                    400, "empty_body", "empty request body: send image bytes (raw, or multipart field 'image')"
                )
            try:
                crop = await in_thread(model.crop, data)
            except ImageError as e:
                raise ApiError(400, "bad_image", str(e)) from None
            probs = await batcher.submit(PIXELS, crop[np.newaxis])
        predictions = [p.to_dict() for p in model.top_k(probs[0], top_k)]
        answer = {
            "predictions": predictions,
            "model": info.name,
            "weights": info.weights,
            "top_k": top_k,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if top_k != requested:
            answer["top_k_requested"] = requested  # clamped to the model's number of classes
        return JSONResponse(answer)

    explain_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="effnet-explain")

    @instrumented("explain")
    async def explain(request: Request) -> Response:
        """An attribution map (effnet.saliency) of one image: PNG, or JSON with base64 PNGs and the summary."""
        from ..saliency import METHODS, resolve_target

        started = time.perf_counter()
        check_query(request.query_params, ("method", "target", "format"), "/v1/explain")
        method = request.query_params.get("method", "gradcam")
        if method not in METHODS:
            raise ApiError(400, "bad_request", f"method must be one of {', '.join(METHODS)}, got {method[:40]!r}")
        fmt = request.query_params.get("format", "png")
        if fmt not in ("png", "json"):
            raise ApiError(400, "bad_request", f"format must be png or json, got {fmt[:40]!r}")
        target = request.query_params.get("target", "top1")
        run = getattr(model, "explain", None)
        if run is None:
            raise ApiError(501, "unsupported", "this server cannot explain: its model runs in other processes")
        labels = getattr(getattr(model, "classifier", None), "labels", ())
        try:
            resolve_target(target, labels)
        except EffnetError as err:
            raise ApiError(400, "bad_request", str(err)) from None
        async with admitted():
            data = await image_bytes(request, await read_body(request))
            if not data:
                raise ApiError(
                    400, "empty_body", "empty request body: send image bytes (raw, or multipart field 'image')"
                )
            loop = asyncio.get_running_loop()
            try:
                exp = await loop.run_in_executor(explain_pool, run, data, method, target)
            except ImageError as err:
                raise ApiError(400, "bad_image", str(err)) from None
            overlay = await loop.run_in_executor(explain_pool, exp.overlay_png)
            if fmt == "png":
                return Response(overlay, media_type="image/png")
            heatmap = await loop.run_in_executor(explain_pool, exp.heatmap_png)
        return JSONResponse(
            {
                **exp.summary(),
                "path": None,
                "model": info.name,
                "weights": info.weights,
                "overlay_png": base64.b64encode(overlay).decode("ascii"),
                "heatmap_png": base64.b64encode(heatmap).decode("ascii"),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    @instrumented("infer")
    async def infer(request: Request) -> Response:
        check_model(request)
        check_query(request.query_params, (), "the v2 infer endpoint")
        if not model.accepts_tensors:
            raise ApiError(
                501,
                "unsupported",
                f"the {info.backend} backend takes image pixels, not normalized "
                "tensors: serve with --backend torch, onnxruntime or openvino for the v2 tensor API",
            )
        async with admitted():
            body = await read_body(request)
            parsed = await in_thread(parse_infer_request, body, request.headers.get(HEADER_LENGTH), info)
            probs = await batcher.submit(TENSOR, parsed.data)
        content, headers = encode_infer_response(info, parsed, probs)
        return Response(content, headers=headers)

    @instrumented("metadata")
    async def model_metadata(request: Request) -> Response:
        check_model(request)
        return JSONResponse(v2_model_metadata(info))

    @instrumented("health")
    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({"name": info.name, "ready": batcher.running}, status_code=200 if batcher.running else 503)

    @instrumented("metadata")
    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "effnet", "version": __version__, "extensions": list(EXTENSIONS)})

    @instrumented("health")
    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    @instrumented("health")
    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": batcher.running}, status_code=200 if batcher.running else 503)

    @instrumented("metadata")
    async def model_summary(request: Request) -> Response:
        return JSONResponse({**info.to_dict(), "max_batch": config.max_batch, "max_body_mb": config.max_body_mb})

    @instrumented("page")
    async def page(request: Request) -> Response:
        return HTMLResponse(index_html)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    spec = openapi_spec(info, max_body_mb=config.max_body_mb, auth=config.api_key is not None)

    @instrumented("metadata")
    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Unknown paths and wrong methods: JSON like every other error."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
        metrics.errors.labels(kind).inc()
        metrics.requests.labels("unmatched", str(status)).inc()
        detail = exc.detail if isinstance(exc, HTTPException) else "internal server error"
        message = f"{detail}: {request.method} {request.url.path}"
        return error_response(status, message, getattr(exc, "headers", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await batcher.start()
        log.info(
            "serving %s (%s, %s) with max batch %d, max wait %g ms",
            info.name,
            info.backend,
            info.precision,
            config.max_batch,
            config.max_wait_ms,
        )
        try:
            yield
        finally:
            # uvicorn has already let in-flight requests finish (graceful shutdown) before this runs.
            await batcher.stop()
            decode_pool.shutdown(wait=False, cancel_futures=True)
            explain_pool.shutdown(wait=False, cancel_futures=True)
            metrics.worker_exit()

    post, get = ["POST"], ["GET"]
    routes = [
        Route("/", page, methods=get),
        Route("/metrics", prometheus, methods=get),
        Route("/openapi.json", openapi, methods=get),
        Route("/v1/classify", classify, methods=post),
        Route("/v1/explain", explain, methods=post),
        Route("/v1/model", model_summary, methods=get),
        Route("/v2", server_metadata, methods=get),
        Route("/v2/health/live", live, methods=get),
        Route("/v2/health/ready", ready, methods=get),
        Route("/v2/models/{name}", model_metadata, methods=get),
        Route("/v2/models/{name}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/infer", infer, methods=post),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=get),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=post),
    ]

    def unauthorized(path: str) -> None:
        metrics.errors.labels("unauthorized").inc()
        metrics.requests.labels("unauthorized", "401").inc()

    middleware = []
    if config.api_key is not None:
        middleware.append(Middleware(BearerAuth, api_key=config.api_key, on_reject=unauthorized))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: http_error, 405: http_error},
    )
    app.state.model = model
    app.state.config = config
    app.state.batcher = batcher
    app.state.metrics = metrics
    return app
