"""The ASGI app: KServe v2 REST, ``/v1/classify``, ``/v1/explain``, ``/v1/video``, a web page and Prometheus metrics.

Every request is admitted against a bounded number of places (``max_queue``:
503 beyond it), read with a body limit (413), decoded in a small thread pool,
batched with other requests (:class:`~effnet.serve.batcher.DynamicBatcher`) and
answered within ``timeout_s`` (504). Every problem with a request is a 4xx with
``{"error": ...}``; nothing a client sends stops the server.

The routes live by concern: :mod:`.classify_routes` (classify and v2 infer), :mod:`.explain_routes`,
:mod:`.video_routes`, :mod:`.info_routes` (page, probes, metadata, metrics); what they share is
:class:`.context.ServerContext`.
"""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from .auth import BearerAuth
from .classify_routes import classify_routes
from .config import ServeConfig
from .context import ServerContext, error_response
from .explain_routes import explain_routes
from .explain_work import ExplainGate
from .guard import BrowserGuard
from .info_routes import info_routes
from .model import ModelEndpoint
from .video_routes import video_gate, video_routes

__all__ = ["ServeConfig", "create_app", "error_response"]

log = logging.getLogger("effnet.serve")


def create_app(
    model: ModelEndpoint, config: ServeConfig | None = None, *, max_concurrent_batches: int = 1
) -> Starlette:
    """A Starlette app serving ``model``. The batcher starts and stops with the app's lifespan.

    ``max_concurrent_batches`` > 1 is for a model whose inference runs elsewhere (awaitable calls to
    several replicas): that many batches are in flight at once."""
    config = config or ServeConfig()
    ctx = ServerContext(model, config, max_concurrent_batches=max_concurrent_batches)
    info, batcher, metrics = ctx.info, ctx.batcher, ctx.metrics
    gate = ExplainGate(config.explain_concurrency, config.explain_queue)  # never one of classify's places
    clips = video_gate(config.video_concurrency, config.video_queue)  # nor of explain's

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
        gate.warm_up(model, config)  # the explainer's cost, measured in the background on its own thread
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
            ctx.decode_pool.shutdown(wait=False, cancel_futures=True)
            gate.shutdown()
            clips.shutdown()
            metrics.worker_exit()

    routes = [*info_routes(ctx), *classify_routes(ctx), *explain_routes(ctx, gate), *video_routes(ctx, clips)]

    def unauthorized(path: str) -> None:
        metrics.errors.labels("unauthorized").inc()
        metrics.requests.labels("unauthorized", "401").inc()

    def forbidden(kind: str) -> None:
        metrics.errors.labels(kind).inc()
        metrics.requests.labels(kind, "403").inc()

    # The guard runs first: a foreign page is refused whether or not a key is set (guard.py).
    guard = Middleware(
        BrowserGuard,
        allowed_hosts=config.allowed_hosts,
        allowed_origins=config.allowed_origins,
        on_reject=forbidden,
    )
    middleware = [guard]
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
