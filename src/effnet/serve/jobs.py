"""A workload of its own beside classify's: long jobs (an explanation, a video clip) admitted to a bounded
number of places, run on a thread pool of their own, stopped when their client leaves or their time is up.

Such a job costs hundreds of classifications, so it never takes one of classify's places (``max_queue``).
A :class:`JobGate` has ``concurrency`` jobs computing and ``queue`` waiting; beyond that, 503 with
``Retry-After``. A place is freed when the *work* ends, not when the request does, so a client that hangs
up cannot stack work behind the server's back. While a job runs, its request polls the client every
``POLL_S``; when the client is gone or the deadline has passed, the job's stop flag is set (the job checks
it: an explanation at the model's next module, a clip at its next decoded frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ..saliency_budget import ExplainStopped
from .errors import ApiError

__all__ = ["POLL_S", "JobGate"]

POLL_S = 0.25  # how often a waiting request checks that its client is still there
T = TypeVar("T")


class JobGate:
    """``concurrency`` jobs computing and ``queue`` waiting, on a pool of its own; 503 beyond.

    ``busy`` and ``noun`` name the work in the 503 answer ("explaining", "explanations"); ``{name}_busy`` is
    its error kind (metrics) and ``effnet-{name}`` its threads' name."""

    def __init__(
        self,
        concurrency: int,
        queue: int,
        *,
        name: str,
        busy: str,
        noun: str,
    ) -> None:
        self.concurrency, self.capacity = concurrency, concurrency + queue
        self.kind, self.busy, self.noun = f"{name}_busy", busy, noun
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"effnet-{name}")
        self._admitted = 0  # waiting + computing; changed on the event loop only
        # Compute time of the last job (not its wait in the queue): a place frees when a computing job ends,
        # so this is the Retry-After hint. Written on the job's thread; a float assignment is atomic.
        self._compute_s = 1.0

    @property
    def admitted(self) -> int:
        return self._admitted

    def check(self) -> None:
        """503 with Retry-After when every place is taken (:meth:`run` checks again when it is called)."""
        if self._admitted >= self.capacity:
            wait = math.ceil(self._compute_s)
            raise ApiError(
                503,
                self.kind,
                f"server busy {self.busy} ({self._admitted} {self.noun} admitted, the limit); retry later",
                {"retry-after": str(max(1, wait))},
            )

    def reserve(self) -> None:
        """Take a place now (503 when none is free), before the job's upload is read: then the bodies held in
        memory are bounded by the places too. Hand it to :meth:`run` (``reserved=True``), or give it back
        with :meth:`release` when the request ends before that (a bad body, a client gone)."""
        self.check()
        self._admitted += 1

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` and never handed to :meth:`run`."""
        self._release()

    async def run(
        self,
        job: Callable[[threading.Event], T],
        deadline: float,
        client_gone: Callable[[], Any],
        *,
        reserved: bool = False,
    ) -> T:
        """Run ``job(stop)`` when a place is free (``reserved``: in the place :meth:`reserve` took); set
        ``stop`` when the client is gone or ``deadline`` passes (then raise TimeoutError, or ExplainStopped
        for a client gone). From here the place is freed when the job ends."""
        if not reserved:
            self.check()
            self._admitted += 1
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def timed(stop: threading.Event) -> T:
            started = time.monotonic()
            try:
                return job(stop)
            finally:
                self._compute_s = time.monotonic() - started

        def finished(_: Future) -> None:  # on the job's thread, or here when cancelled before it started
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
                future.cancel()  # still queued: never starts; running: it stops at its next check
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

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
