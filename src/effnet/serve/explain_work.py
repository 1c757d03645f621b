"""``/v1/explain`` as a workload of its own: admission, a cost bound, one job per request, and stopping.

An explanation costs hundreds of classifications (occlusion on B5: ~170 forward passes), so it never takes
one of classify's places (``max_queue``). It has its own: ``explain_concurrency`` computing per worker and
``explain_queue`` waiting; beyond that, 503 with ``Retry-After``. A place is freed when the *work* ends,
not when the request does, so a client that hangs up cannot stack work behind the server's back.

Each request is one job on the explain thread: decode, attribution, overlay and heatmap together. Before
the attribution the job compares the method's estimated time (:meth:`effnet.saliency.Explainer.estimate_s`:
passes x measured time per pass) with the time left, and refuses with the estimate (422) what cannot finish.
While it runs, the request polls its client every ``POLL_S``; when the client is gone or ``explain_timeout_s``
has passed, the job's stop flag is set and the model's next module raises
:class:`~effnet.saliency_budget.ExplainStopped`: the work stops within one module's forward or one chunk's
backward pass (a chunk is bounded to about 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import ImageError
from ..saliency_budget import REMEASURE_S, ExplainStopped, passes
from .config import ServeConfig
from .errors import ApiError

__all__ = ["POLL_S", "ExplainGate", "ExplainResult", "run_explain"]

log = logging.getLogger("effnet.serve")
POLL_S = 0.25  # how often a waiting request checks that its client is still there


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


class ExplainGate:
    """``concurrency`` jobs computing and ``queue`` waiting, on a pool of its own; 503 beyond."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency, self.capacity = concurrency, concurrency + queue
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="effnet-explain")
        self._admitted = 0  # waiting + computing; changed on the event loop only
        # Compute time of the last job (not its wait in the queue): a place frees when a computing job ends,
        # so this is the Retry-After hint. Written on the explain thread; a float assignment is atomic.
        self._compute_s = 1.0

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(
        self, job: Callable[[threading.Event], ExplainResult], deadline: float, client_gone: Callable[[], Any]
    ) -> ExplainResult:
        """Run ``job(stop)`` when a place is free; set ``stop`` when the client is gone or ``deadline`` passes."""
        if self._admitted >= self.capacity:
            wait = math.ceil(self._compute_s)
            raise ApiError(
                503,
                "explain_busy",
                f"server busy explaining ({self._admitted} explanations admitted, the limit); retry later",
                {"retry-after": str(max(1, wait))},
            )
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        self._admitted += 1

        def timed(stop: threading.Event) -> ExplainResult:
            started = time.monotonic()
            try:
                return job(stop)
            finally:
                self._compute_s = time.monotonic() - started

        def finished(_: Future) -> None:  # on the explain thread, or here when cancelled before it started
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown: nothing left to count
                loop.call_soon_threadsafe(self._release)

        future = self.pool.submit(timed, stop)
        future.add_done_callback(finished)
        waiting = asyncio.wrap_future(future)
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=POLL_S)
            if done:
                break
            if time.monotonic() > deadline or await client_gone():
                stop.set()
                future.cancel()  # still queued: never starts; running: its next module stops it
                if time.monotonic() > deadline:
                    raise TimeoutError
                raise ExplainStopped("client went away")
        try:
            return waiting.result()
        except ExplainStopped:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            raise

    def _release(self) -> None:
        self._admitted -= 1

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

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
