"""The device-agnostic half of the GPU path (effnet.backends.staging), run on the CPU.

Batch planning and padding for fixed-shape runners (CUDA graphs), and the prefetcher's ring of staging
buffers. The CUDA-only parts (graph capture, streams, pinned memory) are tested in tests/perf/test_gpu.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effnet.backends.staging import Chunk, FixedShapeRunner, Prefetcher, graph_sizes, pad_rows, plan_batches
from effnet.errors import EffnetError


def test_plan_batches_examples():
    # Worked by hand: 13 rows with sizes 1/2/4 -> three full 4s, then the lone row at its own size.
    assert plan_batches(13, (1, 2, 4)) == [Chunk(0, 4, 4), Chunk(4, 8, 4), Chunk(8, 12, 4), Chunk(12, 13, 1)]
    assert plan_batches(3, (4,)) == [Chunk(0, 3, 4)]  # one padded chunk
    assert plan_batches(3, (1, 2, 4)) == [Chunk(0, 3, 4)]
    assert plan_batches(8, (8, 1)) == [Chunk(0, 8, 8)]
    assert plan_batches(0, (4,)) == []
    assert Chunk(0, 3, 4).padding == 1 and Chunk(0, 3, 4).rows == 3


@pytest.mark.parametrize("sizes", [(1,), (4,), (1, 2, 4, 8), (3, 5), (1, 2, 4, 6)])
def test_plan_batches_covers_each_row_once_at_prepared_sizes(sizes):
    for n in range(0, 30):
        chunks = plan_batches(n, sizes)
        rows = [r for c in chunks for r in range(c.start, c.stop)]
        assert rows == list(range(n))
        assert all(c.size in sizes and c.size >= c.rows >= 1 for c in chunks)
        # Only the last chunk may be padded, and to the smallest prepared size that holds it.
        assert all(c.padding == 0 for c in chunks[:-1])
        if chunks:
            last = chunks[-1]
            assert last.size == min(s for s in sizes if s >= last.rows)


def test_plan_batches_rejects_bad_sizes():
    for bad in ((), (0,), (4, -1)):
        with pytest.raises(EffnetError, match="prepared batch sizes"):
            plan_batches(3, bad)
    with pytest.raises(EffnetError):
        plan_batches(-1, (4,))


def test_graph_sizes_are_powers_of_two_up_to_the_batch():
    assert graph_sizes(1) == (1,)
    assert graph_sizes(2) == (1, 2)
    assert graph_sizes(6) == (1, 2, 4, 6)
    assert graph_sizes(64) == (1, 2, 4, 8, 16, 32, 64)
    for b in range(1, 300):
        sizes = graph_sizes(b)
        # A padded remainder never costs twice its rows (beyond batch 1).
        assert all(min(s for s in sizes if s >= r) < 2 * r for r in range(2, b + 1))
    with pytest.raises(EffnetError):
        graph_sizes(0)


def test_pad_rows_repeats_the_last_row_and_keeps_the_layout():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    out = pad_rows(x, 5)
    assert out.shape == (5, 3, 2, 2)
    assert torch.equal(out[:2], x) and all(torch.equal(out[i], x[1]) for i in range(2, 5))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert pad_rows(x, 2) is x
    with pytest.raises(EffnetError, match="cannot pad"):
        pad_rows(x, 1)


def test_fixed_shape_runner_runs_only_prepared_shapes_and_slices_the_padding():
    seen: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return x.float().sum(dim=1) * torch.arange(1, 4)  # [N, 3], row-wise

    runner = FixedShapeRunner(fn, sizes=(1, 4), row_shape=(2, 3), dtype=torch.uint8, device="cpu", warmup=1)
    assert seen == [1, 4]  # one warm-up call per prepared size, at construction
    assert runner.setup_s >= 0
    seen.clear()
    x = torch.randint(0, 256, (7, 2, 3), dtype=torch.uint8)
    out = runner(x)
    assert seen == [4, 4]  # 7 rows: one full chunk, then 3 padded to 4
    expected = x.float().sum(dim=1) * torch.arange(1, 4)
    assert torch.equal(out, expected)
    assert torch.equal(runner(x[:1]), expected[:1]) and seen[-1] == 1


def test_fixed_shape_runner_refuses_graphs_off_cuda():
    with pytest.raises(EffnetError, match="CUDA graphs need a CUDA device"):
        FixedShapeRunner(lambda x: x, sizes=(1,), row_shape=(1,), dtype=torch.uint8, device="cpu", graphs=True)


def _batches(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8) for n in sizes]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_prefetcher_ring_yields_every_batch_in_order_as_independent_tensors(depth):
    batches = _batches([2, 5, 1, 5, 3, 8, 2])  # growing and shrinking: buffers are reused and regrown
    pre = Prefetcher(batches, "cpu", depth=depth, staging=True)
    out = []
    for i, t in enumerate(pre):
        # The consumer holds batch i while batches up to i + depth - 1 are staged, never more.
        assert pre.pulled == min(len(batches), i + depth)
        out.append(t)
    assert len(out) == len(batches)
    # Earlier tensors survive later batches passing through the same buffers.
    for t, b in zip(out, batches, strict=True):
        assert t.dtype == torch.uint8 and t.device.type == "cpu"
        assert np.array_equal(t.numpy(), b)
    assert len({t.data_ptr() for t in out}) == len(out)


def test_prefetcher_without_staging_wraps_without_copying():
    batches = _batches([3, 2])
    out = list(Prefetcher(batches, "cpu"))  # CPU default: no staging
    assert all(np.shares_memory(t.numpy(), b) for t, b in zip(out, batches, strict=True))


def test_prefetcher_checks_depth():
    with pytest.raises(EffnetError, match="depth"):
        Prefetcher([], "cpu", depth=0)
    assert list(Prefetcher(iter([]), "cpu")) == []
