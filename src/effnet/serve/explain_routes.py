"""``POST /v1/explain``: an attribution map (:mod:`effnet.saliency`) of one image, PNG or JSON.

Its own workload (:mod:`.explain_work`): its own places, queue, timeout and cost bound, never classify's.
"""

from __future__ import annotations

import base64
import functools
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import EffnetError, ImageError
from ..saliency_budget import ExplainStopped
from .context import ServerContext
from .errors import ApiError
from .explain_work import ExplainGate, run_explain
from .validation import check_pixels, check_query

__all__ = ["explain_routes"]


def explain_routes(ctx: ServerContext, gate: ExplainGate) -> list[Route]:
    model, info, config = ctx.model, ctx.info, ctx.config

    @ctx.instrumented("explain")
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
        if getattr(model, "explainer", None) is None:
            raise ApiError(501, "unsupported", "this server cannot explain: its model runs in other processes")
        labels = getattr(getattr(model, "classifier", None), "labels", ())
        try:
            resolve_target(target, labels)
        except EffnetError as err:
            raise ApiError(400, "bad_request", str(err)) from None
        data = await ctx.image_bytes(request, await ctx.read_body(request))
        if not data:
            raise ApiError(400, "empty_body", "empty request body: send image bytes (raw, or multipart field 'image')")
        check_pixels(data, config.max_pixels, config.max_image_mp)
        estimate = model.explain_estimate_s(method) if hasattr(model, "explain_estimate_s") else None
        if estimate is not None and estimate > config.explain_timeout_s:  # known already: refused before queueing
            raise ApiError(
                422,
                "too_costly",
                f"{method} on {info.name} is estimated at {estimate:.0f} s here, more than the explain timeout of "
                f"{config.explain_timeout_s:g} s (--explain-timeout)",
            )
        deadline = time.monotonic() + config.explain_timeout_s
        job = functools.partial(run_explain, model, config, data, method, target, fmt, deadline)
        try:
            result = await gate.run(job, deadline, request.is_disconnected)
        except ImageError as err:
            raise ApiError(400, "bad_image", str(err)) from None
        except TimeoutError:
            raise ApiError(
                504, "timeout", f"no explanation within {config.explain_timeout_s:g} s (--explain-timeout)"
            ) from None
        except ExplainStopped:
            raise ClientDisconnect() from None
        if fmt == "png":
            return Response(result.overlay, media_type="image/png")
        return JSONResponse(
            {
                **result.summary,
                "path": None,
                "model": info.name,
                "weights": info.weights,
                "overlay_png": base64.b64encode(result.overlay).decode("ascii"),
                "heatmap_png": base64.b64encode(result.heatmap or b"").decode("ascii"),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    return [Route("/v1/explain", explain, methods=["POST"])]
