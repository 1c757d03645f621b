"""Getting batches onto a device and through fixed-shape executables: the device-agnostic half of the GPU path.

- :func:`plan_batches` / :func:`pad_rows`: a batch of any size as chunks of the sizes a runner was
  prepared for (CUDA graphs and ``torch.compile`` replay one shape each): full chunks of the largest
  size, the remainder padded up to the smallest size that holds it, the padding sliced off again.
  EfficientNet in eval mode treats every row on its own, so what the padding rows hold does not
  change the real rows' answers.
- :class:`OwnerThread`: one thread that owns a device's runner; a call from any other thread is handed
  to it and waited for. CUDA graphs, inductor's CUDA-graph trees (thread-local) and the staging
  buffers are made and used on that thread only, so concurrent callers never share them mid-call.
- :class:`FixedShapeRunner`: runs a function on those chunks, on its owner thread; on CUDA it captures
  one CUDA graph per size at construction (``graphs=True``), all in one memory pool, on its own stream
  and under its own device, so a call is a copy into the graph's static input and a replay.

Only the capture itself (``torch.cuda.graph``), the stream and the pool are CUDA-specific; they are
tested by ``pytest -m gpu`` on a machine that has one. The rest (chunking, padding, the owner thread,
warm-up at load) runs, and is tested, on the CPU.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..errors import EffnetError

__all__ = ["Chunk", "plan_batches", "pad_rows", "graph_sizes", "OwnerThread", "FixedShapeRunner"]

R = TypeVar("R")


@dataclass(frozen=True)
class Chunk:
    """Rows ``start:stop`` of a batch, run at the prepared batch size ``size`` (``size >= stop - start``)."""

    start: int
    stop: int
    size: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def padding(self) -> int:
        return self.size - self.rows


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    if not sizes or any(int(s) < 1 for s in sizes):
        raise EffnetError(f"prepared batch sizes must be >= 1 and at least one, got {tuple(sizes)}")
    return tuple(sorted(set(int(s) for s in sizes)))


def plan_batches(n: int, sizes: Sequence[int]) -> list[Chunk]:
    """Split ``n`` rows into chunks of the prepared ``sizes``: as many of the largest as fit, then the
    remainder padded to the smallest size that holds it. ``n == 0`` gives no chunks.

    >>> plan_batches(5, [4])
    [Chunk(start=0, stop=4, size=4), Chunk(start=4, stop=5, size=4)]
    >>> plan_batches(5, [1, 8])
    [Chunk(start=0, stop=5, size=8)]
    """
    if n < 0:
        raise EffnetError(f"a batch has >= 0 rows, got {n}")
    ordered = _check_sizes(sizes)
    largest = ordered[-1]
    chunks = [Chunk(s, s + largest, largest) for s in range(0, n - n % largest, largest)]
    rest = n % largest
    if rest:
        start = n - rest
        chunks.append(Chunk(start, n, next(s for s in ordered if s >= rest)))
    return chunks


def graph_sizes(batch_size: int) -> tuple[int, ...]:
    """The batch sizes a fixed-shape runner prepares for a configured ``batch_size``: the powers of two
    below it, and it. A partial batch (the last one of a run, a server's batch under light load) is then
    padded to less than twice its size instead of to ``batch_size``: a lone request does not pay for
    a whole batch of 64. Each size costs one capture (or compile) at load and its own graph memory.

    >>> graph_sizes(1), graph_sizes(6), graph_sizes(64)
    ((1,), (1, 2, 4, 6), (1, 2, 4, 8, 16, 32, 64))
    """
    if batch_size < 1:
        raise EffnetError(f"batch size must be >= 1, got {batch_size}")
    return (*(1 << i for i in range(batch_size.bit_length()) if 1 << i < batch_size), batch_size)


def pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with rows appended (copies of its last row) up to ``size`` rows; ``x`` itself when it has them.

    Copies of a real row rather than zeros: values the network sees anyway, so a padded batch cannot
    overflow where the real one would not (fp16).
    """
    n = x.shape[0]
    if n == size:
        return x
    if n == 0 or n > size:
        raise EffnetError(f"cannot pad a batch of {n} rows to {size}")
    out = torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class OwnerThread:
    """One thread that runs everything a device runner does; other threads hand it their calls.

    CUDA graphs replay safely from any thread, but what feeds them does not: the static inputs and
    outputs and the pinned staging buffer are one set per runner, and inductor's CUDA-graph trees
    (``torch.compile(mode="reduce-overhead")``) are thread-local, so a graph recorded on one thread is
    recorded again, in memory of its own, on the first call from another. Running every call on the
    thread that prepared the runner removes both problems; calls are serialized, as they are on the
    GPU's one stream anyway. A call made on the owner thread itself runs directly (no deadlock).
    """

    def __init__(self, name: str = "effnet-runner") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.thread: threading.Thread = self._pool.submit(threading.current_thread).result()
        # The thread ends when the runner is collected (or at exit), without waiting for queued work.
        self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False)

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` on the owner thread; its exception, if any, is raised here."""
        if threading.current_thread() is self.thread:
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._finalizer()


class FixedShapeRunner:
    """``fn`` over batches of any size, executed only at the prepared ``sizes`` (see :func:`plan_batches`).

    ``fn`` maps a ``[size, *row_shape]`` tensor of ``dtype`` on ``device`` (in ``memory_format``) to a
    ``[size, ...]`` tensor. Everything happens on ``owner`` (an :class:`OwnerThread`, made here if not
    given): preparation at construction and every call, whichever thread makes it.

    ``graphs=True`` (CUDA only) captures ``fn`` once per size into a CUDA graph at construction, after
    ``warmup`` eager calls (cuDNN picks its algorithms then, and lazy state is built outside the
    capture). Every capture and replay runs on the runner's own stream, under ``torch.cuda.device``
    of its device (so ``cuda:1`` captures on ``cuda:1``, whatever the current device), and all sizes
    share one graph memory pool (``torch.cuda.graph_pool_handle``), captured largest first so the
    smaller graphs reuse the larger one's intermediate memory; that is safe because replays are
    serialized on one stream by the owner thread. Otherwise ``fn`` is called on the padded chunk: that
    is how a ``torch.compile``d function with static shapes sees only the prepared sizes; construction
    then runs ``warmup`` calls per size so that compilation happens here, not in the first request.
    ``setup_s`` is the time construction took.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        sizes: Sequence[int],
        row_shape: Sequence[int],
        dtype: torch.dtype,
        device: torch.device | str,
        graphs: bool = False,
        warmup: int = 2,
        step_marker: Callable[[], None] | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
        owner: OwnerThread | None = None,
    ) -> None:
        self.fn = fn
        self.sizes = _check_sizes(sizes)
        self.device = torch.device(device)
        self.graphs = graphs
        self.row_shape = tuple(int(d) for d in row_shape)
        self.dtype = dtype
        self.memory_format = memory_format
        # torch.compile(mode="reduce-overhead") wants to be told where an inference step begins, so that
        # it may overwrite the previous step's outputs (torch.compiler.cudagraph_mark_step_begin).
        self._step = step_marker
        if graphs and self.device.type != "cuda":
            raise EffnetError(f"CUDA graphs need a CUDA device, got {self.device}")
        self.owner = owner or OwnerThread()
        self.stream: Any = None  # torch.cuda.Stream on CUDA, made on the owner thread under the device
        self.pool: Any = None  # the one graph memory pool of all sizes
        self._static: dict[int, tuple[torch.Tensor, torch.Tensor, Any]] = {}
        start = time.perf_counter()
        self.owner.run(self._prepare, warmup)
        self.setup_s = time.perf_counter() - start

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        """The runner's device and stream made current (CUDA), in inference mode: wrap every use in it."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.device.type == "cuda":
                stack.enter_context(torch.cuda.device(self.device))
                stack.enter_context(torch.cuda.stream(self.stream))
            yield

    def _example(self, size: int) -> torch.Tensor:
        x = torch.zeros((size, *self.row_shape), dtype=self.dtype, device=self.device)
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def _prepare(self, warmup: int) -> None:
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                # The weights were copied and folded by kernels queued on the default stream; the runner's
                # stream does not wait for that stream by itself.
                torch.cuda.synchronize(self.device)
                self.stream = torch.cuda.Stream(self.device)
                if self.graphs:
                    self.pool = torch.cuda.graph_pool_handle()
        # inference_mode throughout, as calls run: a function compiled under another grad mode would
        # compile again at the first real call.
        with self.on_device():
            for size in sorted(self.sizes, reverse=True):  # largest first: the pool's memory is reused
                example = self._example(size)
                if self.graphs:
                    self._static[size] = self._capture(example, warmup)
                else:
                    for _ in range(warmup):
                        self._call(example)
            if self.stream is not None:
                self.stream.synchronize()

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self._step is not None:
            self._step()
        return self.fn(x)

    def _capture(self, static_in: torch.Tensor, warmup: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        # The recipe of the CUDA graphs documentation: warm up on a side stream (ours: never the default
        # stream), then capture on that same stream, into the shared pool.
        for _ in range(max(1, warmup)):
            self.fn(static_in)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            static_out = self.fn(static_in)
        return static_in, static_out, graph

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``fn`` of every row of ``x`` (on the runner's device, its row shape), on the owner thread."""
        return self.owner.run(self._run, x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.row_shape:
            raise EffnetError(f"expected rows of shape {list(self.row_shape)}, got {list(x.shape)}")
        outs = []
        with self.on_device():
            for chunk in plan_batches(x.shape[0], self.sizes):
                part = x[chunk.start : chunk.stop]
                if self.graphs:
                    static_in, static_out, graph = self._static[chunk.size]
                    static_in[: chunk.rows].copy_(part)  # the padding rows keep stale inputs: rows are independent
                    graph.replay()  # on the current stream: the runner's
                    # A clone: the next replay of this graph overwrites static_out.
                    outs.append(static_out[: chunk.rows].clone())
                else:
                    padded = pad_rows(part, chunk.size)
                    if padded.dim() == 4:  # the layout the sizes were prepared in (a compiled fn guards on it)
                        padded = padded.contiguous(memory_format=self.memory_format)
                    out = self._call(padded)[: chunk.rows]
                    outs.append(out.clone() if self._step is not None else out)
            if not outs:
                raise EffnetError("an empty batch (0 images) has nothing to run")
            return outs[0] if len(outs) == 1 else torch.cat(outs)  # on the runner's stream too
