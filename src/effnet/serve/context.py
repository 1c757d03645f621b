"""What every route of one server shares: the model, its limits, the batcher, the metrics and the thread
pools, and the steps every request goes through (admission, timeout, body limit, error answers)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from .config import PIXELS, TENSOR, ServeConfig
from .errors import ApiError
from .metrics import ServerMetrics
from .model import ModelEndpoint
from .validation import multipart_image

__all__ = ["Handler", "ServerContext", "error_response"]

log = logging.getLogger("effnet.serve")
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ServerContext:
    """The model, the config, the batcher, the metrics and the pools of one app, and the request steps."""

    def __init__(self, model: ModelEndpoint, config: ServeConfig, *, max_concurrent_batches: int = 1) -> None:
        self.model = model
        self.config = config
        self.info = model.info
        self.decode_pool = ThreadPoolExecutor(max_workers=config.decode_threads, thread_name_prefix="effnet-decode")
        self.batcher = DynamicBatcher(
            {PIXELS: model.probabilities, TENSOR: model.tensor_probabilities},
            max_batch=config.max_batch,
            max_wait_s=config.max_wait_ms / 1000,
            max_queue=config.max_queue,
            on_batch=lambda kind, rows, seconds: self.metrics.observe_batch(kind, rows, seconds),
            max_concurrent_batches=max_concurrent_batches,
        )
        batcher = self.batcher
        self.metrics = ServerMetrics(queue_depth=lambda: batcher.queue_depth, in_flight=lambda: batcher.in_flight)
        self.metrics.model_info.info({k: str(v) for k, v in self.info.to_dict().items()})

    def instrumented(self, name: str) -> Callable[[Handler], Handler]:
        """Count, time and turn every failure of a handler into a JSON error answer."""
        metrics = self.metrics

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

    async def in_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """A place among ``max_queue`` and the request timeout, around the work of one request."""
        timeout_s = self.config.timeout_s
        try:
            async with self.batcher.admit():
                self.metrics.sample()
                async with asyncio.timeout(timeout_s):
                    yield
        except QueueFullError as e:
            raise ApiError(503, "queue_full", f"server busy: {e}; retry later", {"retry-after": "1"}) from None
        except BatcherClosedError as e:
            raise ApiError(503, "shutting_down", str(e)) from None
        except TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {timeout_s:g} s (--timeout)") from None

    async def read_body(self, request: Request, limit_mb: float | None = None, option: str = "--max-body-mb") -> bytes:
        """The whole body, refusing more than ``max_body_mb`` (or ``limit_mb``, set by ``option``) by
        Content-Length and by counting the stream."""
        mb = self.config.max_body_mb if limit_mb is None else limit_mb
        limit = int(mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}")
            if int(declared) > limit:
                raise ApiError(
                    413,
                    "body_too_large",
                    f"request body of {int(declared):,} bytes is above the limit of {limit:,} bytes ({option} {mb:g})",
                )
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(
                    413,
                    "body_too_large",
                    f"request body is above the limit of {limit:,} bytes ({option} {mb:g})",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def image_bytes(self, request: Request, body: bytes) -> bytes:
        """Raw body, or the multipart field ``image``."""
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return body

        return await multipart_image(request.headers, body, "image", self.config.max_body_bytes)  # in memory only

    def check_model(self, request: Request, *, reveal: bool = True) -> None:
        """404 unless the path names this server's model (and version). ``reveal=False`` (the probes, which
        answer without a key): the answer does not say which model or version the server has."""
        name, info = request.path_params["name"], self.info
        if name != info.name:
            has = f"; this server has {info.name!r}" if reveal else ""
            raise ApiError(404, "unknown_model", f"unknown model {name[:80]!r}{has}")
        version = request.path_params.get("version")
        if version is not None and version != info.version:
            has = f"; available: {info.version!r}" if reveal else ""
            raise ApiError(404, "unknown_model", f"unknown version {version[:80]!r} of model {name!r}{has}")
