"""The device-agnostic half of the GPU path (effnet.backends.staging), run on the CPU.

Batch planning and padding for fixed-shape runners (CUDA graphs), and the runner's owner thread. The
CUDA-only parts (graph capture, the shared pool, streams, pinned memory) are tested in tests/perf/test_gpu.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from effnet.backends.staging import Chunk, FixedShapeRunner, OwnerThread, graph_sizes, pad_rows, plan_batches
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
    assert seen == [4, 1]  # one warm-up call per prepared size, at construction, largest first
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


def test_runner_prepares_and_runs_on_its_owner_thread_whoever_calls():
    """Inductor's CUDA-graph trees are thread-local and the staging buffers are one set per runner: every
    call, from any thread, must run on the thread that prepared the runner."""
    threads: list[threading.Thread] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        threads.append(threading.current_thread())
        return x.float() * 2

    runner = FixedShapeRunner(fn, sizes=(2, 4), row_shape=(3,), dtype=torch.uint8, device="cpu", warmup=1)
    owner = runner.owner.thread
    assert owner is not threading.current_thread() and owner.name.startswith("effnet-runner")
    assert threads == [owner, owner]  # the warm-up (on CUDA: the captures) ran there

    def caller(i: int) -> bool:
        x = torch.full((3, 3), i, dtype=torch.uint8)  # each caller's own rows
        return all(torch.equal(runner(x), x.float() * 2) for _ in range(20))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(caller, range(4)))
    assert set(threads) == {owner} and len(threads) == 2 + 4 * 20 * 1  # 3 rows: one padded chunk of 4


def test_owner_thread_runs_a_call_from_itself_directly_and_raises_in_the_caller():
    owner = OwnerThread("effnet-test")
    assert owner.run(lambda: owner.run(threading.current_thread)) is owner.thread  # nested: no deadlock

    def boom() -> None:
        raise ValueError("from the owner")

    with pytest.raises(ValueError, match="from the owner"):
        owner.run(boom)
    owner.close()


def test_runner_checks_the_row_shape():
    runner = FixedShapeRunner(lambda x: x, sizes=(2,), row_shape=(3,), dtype=torch.uint8, device="cpu", warmup=0)
    with pytest.raises(EffnetError, match=r"expected rows of shape \[3\], got \[2, 4\]"):
        runner(torch.zeros((2, 4), dtype=torch.uint8))
