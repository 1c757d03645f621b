"""Getting batches onto a device and through fixed-shape executables: the device-agnostic half of the GPU path.

- :func:`plan_batches` / :func:`pad_rows`: a batch of any size as chunks of the sizes a runner was
  prepared for (CUDA graphs and ``torch.compile`` replay one shape each): full chunks of the largest
  size, the remainder padded up to the smallest size that holds it, the padding sliced off again.
  EfficientNet in eval mode treats every row on its own, so what the padding rows hold does not
  change the real rows' answers.
- :class:`FixedShapeRunner`: runs a function on those chunks; on CUDA it captures one CUDA graph per
  size at construction (``graphs=True``), so a call is a copy into the graph's static input and a replay.
- :class:`Prefetcher`: host batches -> device tensors, ``depth`` uploads ahead of the consumer. On CUDA
  the uint8 crops are copied into pinned buffers and uploaded asynchronously on a second stream, so
  the next batch's copy overlaps this batch's compute (double buffering); on the CPU the same ring of
  buffers runs without pinning or streams, which is what the tests exercise.

Only the capture itself (``torch.cuda.graph``) and the streams are CUDA-specific; they are tested by
``pytest -m gpu`` on a machine that has one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import EffnetError

__all__ = ["Chunk", "plan_batches", "pad_rows", "graph_sizes", "FixedShapeRunner", "Prefetcher"]


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


class FixedShapeRunner:
    """``fn`` over batches of any size, executed only at the prepared ``sizes`` (see :func:`plan_batches`).

    ``fn`` maps a ``[size, *row_shape]`` tensor of ``dtype`` on ``device`` to a ``[size, ...]`` tensor.
    ``graphs=True`` (CUDA only) captures ``fn`` once per size into a CUDA graph at construction, after
    ``warmup`` eager calls on a side stream (cuDNN picks its algorithms then, and lazy state is built
    outside the capture). Otherwise ``fn`` is called on the padded chunk: that is how a
    ``torch.compile``d function with static shapes sees only the prepared sizes; construction then runs
    ``warmup`` calls per size so that compilation happens here, not in the first request.
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
    ) -> None:
        import time

        self.fn = fn
        self.sizes = _check_sizes(sizes)
        self.device = torch.device(device)
        self.graphs = graphs
        # torch.compile(mode="reduce-overhead") wants to be told where an inference step begins, so that
        # it may overwrite the previous step's outputs (torch.compiler.cudagraph_mark_step_begin).
        self._step = step_marker
        if graphs and self.device.type != "cuda":
            raise EffnetError(f"CUDA graphs need a CUDA device, got {self.device}")
        start = time.perf_counter()
        self._static: dict[int, tuple[torch.Tensor, torch.Tensor, object]] = {}
        # inference_mode throughout, as the backend calls it: a function compiled under another grad
        # mode would compile again at the first real call.
        with torch.inference_mode():
            for size in self.sizes:
                example = torch.zeros((size, *row_shape), dtype=dtype, device=self.device)
                if graphs:
                    self._static[size] = self._capture(example, warmup)
                else:
                    for _ in range(warmup):
                        self._call(example)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.setup_s = time.perf_counter() - start

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self._step is not None:
            self._step()
        return self.fn(x)

    def _capture(self, static_in: torch.Tensor, warmup: int) -> tuple[torch.Tensor, torch.Tensor, object]:
        # The recipe of the CUDA graphs documentation: warm up on a side stream, then capture.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                self.fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return static_in, static_out, graph

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        with torch.inference_mode():
            for chunk in plan_batches(x.shape[0], self.sizes):
                part = x[chunk.start : chunk.stop]
                if self.graphs:
                    static_in, static_out, graph = self._static[chunk.size]
                    static_in[: chunk.rows].copy_(part)  # the padding rows keep stale inputs: rows are independent
                    graph.replay()  # type: ignore[attr-defined]
                    # A clone: the next replay of this graph overwrites static_out.
                    outs.append(static_out[: chunk.rows].clone())
                else:
                    out = self._call(pad_rows(part, chunk.size))[: chunk.rows]
                    outs.append(out.clone() if self._step is not None else out)
        if not outs:
            raise EffnetError("an empty batch (0 images) has nothing to run")
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class Prefetcher:
    """Iterate host batches (uint8 numpy arrays, any leading size) as tensors on ``device``, ``depth`` ahead.

    Each batch is copied into one of ``depth + 1`` reusable staging buffers (pinned host memory when
    the device is CUDA) and from there to the device: on CUDA asynchronously on a side stream, whose
    event the consuming stream waits for, so copies of the next batches overlap the work queued on
    the current one. A buffer is refilled only after its previous copy has finished. Every yielded
    tensor is the consumer's own (a device copy), valid after later batches arrive. ``staging=False``
    (the CPU default) skips the buffers: the array is wrapped without a copy.
    """

    def __init__(
        self,
        batches: Iterable[np.ndarray],
        device: torch.device | str,
        *,
        depth: int = 2,
        staging: bool | None = None,
    ) -> None:
        if depth < 1:
            raise EffnetError(f"prefetch depth must be >= 1, got {depth}")
        self.batches = batches
        self.device = torch.device(device)
        self.depth = depth
        self.cuda = self.device.type == "cuda"
        self.staging = self.cuda if staging is None else staging
        self._buffers: list[torch.Tensor | None] = [None] * (depth + 1)
        self._events: list[torch.cuda.Event | None] = [None] * (depth + 1)
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.pulled = 0  # host batches taken from ``batches`` so far (lookahead is observable in tests)

    def _buffer(self, slot: int, like: np.ndarray) -> torch.Tensor:
        event = self._events[slot]
        if event is not None:
            event.synchronize()  # its last upload has left the buffer
        buf = self._buffers[slot]
        need = like.size
        if buf is None or buf.numel() < need:
            buf = torch.empty(need, dtype=torch.from_numpy(like[:0]).dtype, pin_memory=self.cuda)
            self._buffers[slot] = buf
        return buf[:need].view(like.shape)

    def _upload(self, host: np.ndarray, slot: int) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        if not self.staging:
            return torch.from_numpy(np.ascontiguousarray(host)).to(self.device), None
        buf = self._buffer(slot, host)
        buf.numpy()[...] = host
        if not self.cuda:
            return buf.clone(), None
        with torch.cuda.stream(self._stream):
            out = buf.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        self._events[slot] = event
        return out, event

    def __iter__(self) -> Iterator[torch.Tensor]:
        ahead: deque[tuple[torch.Tensor, torch.cuda.Event | None]] = deque()
        source = iter(self.batches)
        slot = 0
        exhausted = False
        while True:
            while not exhausted and len(ahead) < self.depth:
                try:
                    host = next(source)
                except StopIteration:
                    exhausted = True
                    break
                self.pulled += 1
                ahead.append(self._upload(np.ascontiguousarray(host), slot))
                slot = (slot + 1) % len(self._buffers)
            if not ahead:
                return
            tensor, event = ahead.popleft()
            if event is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                # Made on the side stream, used on this one: keep the allocator from reusing it early.
                tensor.record_stream(current)
            yield tensor
