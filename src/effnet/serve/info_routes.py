"""The routes that run no model: the web page, health probes, metadata, OpenAPI and Prometheus metrics."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .._version import __version__
from .context import ServerContext
from .kserve import EXTENSIONS
from .kserve import model_metadata as v2_model_metadata
from .openapi import openapi_spec

__all__ = ["info_routes"]


def _index_html() -> str:
    return resources.files("effnet.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def info_routes(ctx: ServerContext) -> list[Route]:
    info, config, batcher, metrics = ctx.info, ctx.config, ctx.batcher, ctx.metrics
    index_html = _index_html()

    @ctx.instrumented("metadata")
    async def model_metadata(request: Request) -> Response:
        ctx.check_model(request)
        return JSONResponse(v2_model_metadata(info))

    @ctx.instrumented("health")
    async def model_ready(request: Request) -> Response:
        ctx.check_model(request, reveal=False)  # a probe answers without a key: it names nothing
        return JSONResponse({"name": info.name, "ready": batcher.running}, status_code=200 if batcher.running else 503)

    @ctx.instrumented("metadata")
    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "effnet", "version": __version__, "extensions": list(EXTENSIONS)})

    @ctx.instrumented("health")
    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    @ctx.instrumented("health")
    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": batcher.running}, status_code=200 if batcher.running else 503)

    @ctx.instrumented("metadata")
    async def model_summary(request: Request) -> Response:
        limits = {"max_batch": config.max_batch, "max_body_mb": config.max_body_mb, **video}
        return JSONResponse({**info.to_dict(), **limits})

    @ctx.instrumented("page")
    async def page(request: Request) -> Response:
        return HTMLResponse(index_html)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    video = {k: getattr(config, k) for k in ("max_video_mb", "max_video_s", "max_video_decode_mp")}
    spec = openapi_spec(info, max_body_mb=config.max_body_mb, auth=config.api_key is not None, video=video)

    @ctx.instrumented("metadata")
    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    get = ["GET"]
    return [
        Route("/", page, methods=get),
        Route("/metrics", prometheus, methods=get),
        Route("/openapi.json", openapi, methods=get),
        Route("/v1/model", model_summary, methods=get),
        Route("/v2", server_metadata, methods=get),
        Route("/v2/health/live", live, methods=get),
        Route("/v2/health/ready", ready, methods=get),
        Route("/v2/models/{name}", model_metadata, methods=get),
        Route("/v2/models/{name}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=get),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=get),
    ]
