"""``/v1/explain`` as a workload of its own: admission, a cost bound, one job per request, and stopping.

An explanation costs hundreds of classifications (occlusion on B5: ~170 forward passes), so it never takes
one of classify's places (``max_queue``). It has its own (:class:`.jobs.JobGate`): ``explain_concurrency``
computing per worker and ``explain_queue`` waiting; beyond that, 503 with ``Retry-After``.

Each request is one job on the explain thread: decode, attribution, overlay and heatmap together. Before
the attribution the job compares the method's estimated time (:meth:`effnet.saliency.Explainer.estimate_s`:
passes x measured time per pass) with the time left, and refuses with the estimate (422) what cannot finish.
While it runs, the request polls its client every ``POLL_S``; when the client is gone or ``explain_timeout_s``
has passed, the job's stop flag is set and the model's next module raises
:class:`~effnet.saliency_budget.ExplainStopped`: the work stops within one module's forward or one chunk's
backward pass (a chunk is bounded to about 2 s).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ImageError
from ..saliency_budget import REMEASURE_S, ExplainStopped, passes
from .config import ServeConfig
from .errors import ApiError
from .jobs import POLL_S, JobGate

__all__ = ["POLL_S", "ExplainGate", "ExplainResult", "run_explain"]

log = logging.getLogger("effnet.serve")


@dataclass
class ExplainResult:
    summary: dict[str, Any]
    overlay: bytes
    heatmap: bytes | None


def run_explain(
    served: Any,
    config: ServeConfig,
    data: bytes,
    method: str,
    target: str,
    fmt: str,
    deadline: float,
    stop: threading.Event,
) -> ExplainResult:
    """The whole job of one request, on the explain thread. Raises ApiError (422: cannot finish in time;
    400: bad image; 504: timed out) or ExplainStopped (its client went away)."""

    def should_stop() -> bool:
        return stop.is_set() or time.monotonic() > deadline

    with served.explain_lock:
        if should_stop():  # waited in the queue past its time, or its client left meanwhile
            raise ExplainStopped("explanation stopped before it started")
        explainer = served.explainer(config.explain_memory_mb)
        cost = explainer.measure_cost(should_stop)  # measured here when the warm-up has not (or was stopped)
        estimate = explainer.estimate_s(method)
        left = deadline - time.monotonic()
        if estimate > left and cost.age_s() > REMEASURE_S:
            # The estimate may date from a load spike: look again (a few passes, at most once per REMEASURE_S)
            # before refusing, so that one slow moment never refuses a method for good.
            explainer.measure_cost(should_stop, again=True)
            estimate, left = explainer.estimate_s(method), deadline - time.monotonic()
        if estimate > left:
            forward, backward = passes(method, explainer.input_size)
            cost = explainer.cost
            raise ApiError(
                422,
                "too_costly",
                f"{method} on {served.info.name} is estimated at {estimate:.0f} s here ({forward} forward passes x "
                f"{cost.forward_s:.2f} s + {backward} forward+backward x {cost.backward_s:.2f} s), more than the "
                f"{left:.0f} s left of the explain timeout ({config.explain_timeout_s:g} s, --explain-timeout)",
            )
        (e,) = explainer.explain(
            [data], method=method, target=target, should_stop=should_stop, max_pixels=config.max_pixels
        )
        if e.error is not None:
            raise ImageError(e.error)
        overlay = e.overlay_png()
        heatmap = e.heatmap_png() if fmt == "json" else None
        return ExplainResult(e.summary(), overlay, heatmap)


class ExplainGate(JobGate):
    """``concurrency`` explanations computing and ``queue`` waiting (:class:`.jobs.JobGate`), and the warm-up
    that measures their cost."""

    def __init__(self, concurrency: int, queue: int) -> None:
        super().__init__(concurrency, queue, name="explain", busy="explaining", noun="explanations")

    def warm_up(self, served: Any, config: ServeConfig) -> None:
        """Build the explainer and measure its cost on the explain thread, in the background, so that the first
        request is estimated (and refused up front when it cannot finish) like every later one. The measurement
        gives way to work: once a request is admitted it stops at the next module (B5: seconds of passes), and
        that request measures the cost itself, under its own stop flag and deadline."""

        def admitted() -> bool:
            return self._admitted > 0  # read on the explain thread: an int read needs no lock

        def warm() -> None:
            try:
                with served.explain_lock:
                    if not admitted():
                        served.explainer(config.explain_memory_mb).measure_cost(admitted)
            except ExplainStopped:
                log.info("explanation cost not measured at start: a request came first and measures it")
            except Exception as e:  # noqa: BLE001 - e.g. the explain extra is missing: /v1/explain will say so
                log.info("explanations not prepared: %s", e)

        if callable(getattr(served, "explainer", None)):
            self.pool.submit(warm)
