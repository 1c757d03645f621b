"""Dynamic batching: many concurrent requests, one forward pass.

Requests put their inputs on a bounded queue; one loop takes the first waiting
item and gathers more of the same kind until the batch holds ``max_batch`` rows
or the first item has waited ``max_wait_s``. The batch runs in a worker thread
(never on the event loop, so the server keeps accepting and answering while the
model computes), and each request gets its own rows back. Items queued while a
batch runs are gathered at once, so under load batches fill without waiting.

A runner may also be a coroutine function (a call to a model elsewhere, e.g. a
Ray Serve model deployment): it is awaited on the loop, and up to
``max_concurrent_batches`` batches are in flight at once, one per remote replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import numpy as np

SyncRunner = Callable[[np.ndarray], np.ndarray]
Runner = Callable[[np.ndarray], np.ndarray | Awaitable[np.ndarray]]  # plain: in a thread; async: awaited
BatchHook = Callable[[str, int, float], None]  # (kind, rows, seconds)


class QueueFullError(RuntimeError):
    """More requests are in flight than ``max_queue`` allows; the caller should answer 503."""


class BatcherClosedError(RuntimeError):
    """The batcher is stopped (the server is shutting down)."""


@dataclass
class _Item:
    kind: str
    array: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Batch inputs from concurrent coroutines into calls of ``runners[kind]``.

    ``runners`` maps a kind of input (e.g. ``"pixels"``, ``"tensor"``) to a
    function ``[N, ...] -> [N, ...]`` that runs in ``executor`` (one thread by
    default: the model's own intra-op threads already use the cores). Items of
    different kinds never share a batch.

    ``max_queue`` bounds the requests *admitted* (decoding, queued or running),
    so memory stays bounded under overload: :meth:`admit` raises
    :class:`QueueFullError` beyond it. ``max_concurrent_batches`` batches may run
    at once (1 for a local model, whose threads already use the cores).
    """

    def __init__(
        self,
        runners: Mapping[str, Runner],
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        executor: Executor | None = None,
        on_batch: BatchHook | None = None,
        max_concurrent_batches: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}")
        self.runners = dict(runners)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.max_concurrent_batches = max_concurrent_batches
        self._running: set[asyncio.Task] = set()  # batches in flight
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="effnet-infer")
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()  # binds to the running loop on first use (Python >= 3.10)
        self._task: asyncio.Task | None = None
        self._admitted = 0
        self._closed = False

    # -- state -------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished (decoding, queued or running)."""
        return self._admitted

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closed

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._loop(), name="effnet-batcher")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Finish what is queued (up to ``drain_timeout_s``), then stop the loop."""
        self._closed = True
        if self._task is not None:
            deadline = time.monotonic() + drain_timeout_s
            while self._queue and not self._task.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            if self._running:  # batches already running get the rest of the drain time to answer
                await asyncio.wait(list(self._running), timeout=max(0.0, deadline - time.monotonic()))
                for task in list(self._running):
                    task.cancel()  # _run answers their requests with BatcherClosedError
                await asyncio.gather(*self._running, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(BatcherClosedError("the server is shutting down"))
        self._queue.clear()
        if self._own_executor:
            self._executor.shutdown(wait=True)

    # -- requests ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one of ``max_queue`` places for the whole life of a request."""
        if self._closed:
            raise BatcherClosedError("the server is shutting down")
        if self._admitted >= self.max_queue:
            raise QueueFullError(f"{self._admitted} requests in flight, the limit is {self.max_queue} (--max-queue)")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def submit(self, kind: str, array: np.ndarray) -> np.ndarray:
        """Queue ``array`` (``[n, ...]`` rows) and wait for its ``[n, ...]`` outputs.

        Cancelling the caller (e.g. a request timeout) drops the item if its batch
        has not started yet.
        """
        if kind not in self.runners:
            raise KeyError(f"no runner for input kind {kind!r}; known: {', '.join(self.runners)}")
        if self._task is None or self._closed:
            raise BatcherClosedError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(kind, array, future))
        self._wakeup.set()
        try:
            return await future
        finally:
            if not future.done():
                future.cancel()

    # -- the loop ------------------------------------------------------------------------------
    async def _next_item(self) -> _Item:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self._queue.popleft()
            if not item.future.done():  # skip requests that timed out while queued
                return item

    async def _gather(self, first: _Item) -> list[_Item]:
        batch, rows = [first], len(first.array)
        deadline = first.enqueued + self.max_wait_s
        while rows < self.max_batch:
            if self._queue:
                nxt = self._queue[0]
                if nxt.future.done():
                    self._queue.popleft()
                    continue
                if nxt.kind != first.kind or rows + len(nxt.array) > self.max_batch:
                    break
                batch.append(self._queue.popleft())
                rows += len(nxt.array)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return [item for item in batch if not item.future.done()]

    async def _loop(self) -> None:
        slots = asyncio.Semaphore(self.max_concurrent_batches)
        while True:
            await slots.acquire()  # gather only when a batch can start: queued items then fill it
            try:
                batch = await self._gather(await self._next_item())
            except BaseException:
                slots.release()
                raise
            if not batch:
                slots.release()
                continue
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)

            def done(t: asyncio.Task) -> None:
                self._running.discard(t)
                slots.release()

            task.add_done_callback(done)
            if self.max_concurrent_batches == 1:
                await asyncio.wait([task])  # one at a time: the next batch gathers what queued meanwhile

    async def _run(self, batch: list[_Item]) -> None:
        kind = batch[0].kind
        x = batch[0].array if len(batch) == 1 else np.concatenate([item.array for item in batch])
        started = time.monotonic()
        runner = self.runners[kind]
        try:
            if inspect.iscoroutinefunction(runner):
                out = await cast(Awaitable[np.ndarray], runner(x))
            else:
                out = await asyncio.get_running_loop().run_in_executor(self._executor, cast(SyncRunner, runner), x)
        except asyncio.CancelledError:  # stop(): the server is going away
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BatcherClosedError("the server is shutting down"))
            raise
        except Exception as e:  # the model failed: every request of this batch gets the error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        if self._on_batch is not None:
            self._on_batch(kind, len(x), time.monotonic() - started)
        offset = 0
        for item in batch:
            n = len(item.array)
            if not item.future.done():
                item.future.set_result(out[offset : offset + n])
            offset += n
