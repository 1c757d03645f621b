"""A benchmark loop in the manner of OpenVINO's ``benchmark_app``, for any callable or backend.

First inference (lazy initialisation, compilation) is timed on its own, then warm-up runs, then the
measured loop: a fixed number of iterations or a time budget. Latency statistics are per call
(one call = one batch); throughput is images over the wall time of the measured loop. With
``streams > 1`` that many calls run concurrently from threads (each stream is one in-flight request),
so throughput can rise while each call's latency does too.

The report carries the configuration and the precision that actually ran (a backend's ``precision``
attribute), never the requested one alone: OpenVINO silently runs bf16 on CPUs that have it.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EffnetError

LATENCY_KEYS = ("median", "mean", "min", "max", "p90", "p99")
_LABELS = {"median": "Median", "mean": "Average", "min": "Min", "max": "Max", "p90": "P90", "p99": "P99"}


def latency_stats(latencies_ms: list[float] | np.ndarray) -> dict[str, float]:
    """median / mean / min / max / p90 / p99 of per-call latencies in milliseconds."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        raise EffnetError("no latencies to summarize (0 iterations ran)")
    return {
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
    }


@dataclass
class BenchResult:
    """One benchmark run: timings plus everything needed to reproduce and interpret them."""

    first_inference_ms: float
    latencies_ms: list[float]
    wall_s: float
    batch_size: int
    streams: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return len(self.latencies_ms)

    @property
    def latency_ms(self) -> dict[str, float]:
        return latency_stats(self.latencies_ms)

    @property
    def throughput_img_s(self) -> float:
        return self.iterations * self.batch_size / self.wall_s if self.wall_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "throughput_img_s": self.throughput_img_s,
            "first_inference_ms": self.first_inference_ms,
            "iterations": self.iterations,
            "duration_s": self.wall_s,
            "batch_size": self.batch_size,
            "streams": self.streams,
            "config": self.config,
        }

    def summary(self) -> str:
        """Human-readable report, in benchmark_app's order."""
        lat = self.latency_ms
        cfg = self.config
        lines = [
            f"[config] {', '.join(f'{k}={v}' for k, v in cfg.items() if not isinstance(v, dict))}",
            f"First inference took {self.first_inference_ms:.2f} ms",
            f"Count:          {self.iterations} iterations",
            f"Duration:       {self.wall_s * 1e3:.2f} ms",
            "Latency:",
            *(f"   {_LABELS[k] + ':':<12}{lat[k]:.2f} ms" for k in LATENCY_KEYS),
            f"Throughput:     {self.throughput_img_s:.2f} FPS (images/s, batch {self.batch_size})",
        ]
        return "\n".join(lines)


def check_own_rows(stream: int, out: Any, references: Sequence[Any]) -> None:
    """Raise unless every row of ``out`` (stream ``stream``'s answer) is nearest that stream's own
    reference answer: a row nearer another stream's reference is another caller's row."""
    got = np.asarray(out, dtype=np.float64)
    own = np.asarray(references[stream], dtype=np.float64)
    if got.shape != own.shape:
        raise EffnetError(f"stream {stream}: a call returned shape {got.shape}, its first call {own.shape}")
    d_own = np.abs(got - own).reshape(len(got), -1).max(axis=1)
    for other, reference in enumerate(references):
        if other == stream:
            continue
        d_other = np.abs(got - np.asarray(reference, dtype=np.float64)).reshape(len(got), -1).max(axis=1)
        rows = np.flatnonzero(d_other < d_own)
        if rows.size:
            raise EffnetError(
                f"concurrent calls returned mixed rows: stream {stream}'s rows {rows.tolist()} are stream "
                f"{other}'s answers (max |delta| {d_other[rows].max():.3g} to those, "
                f"{d_own[rows].max():.3g} to its own)"
            )


def run_benchmark(
    fn: Callable[[], Any] | Sequence[Callable[[], Any]],
    *,
    batch_size: int = 1,
    iterations: int | None = None,
    time_s: float | None = None,
    warmup: int = 2,
    streams: int = 1,
    config: dict[str, Any] | None = None,
    check: Callable[[int, Any, Sequence[Any]], None] | None = None,
) -> BenchResult:
    """Time ``fn()`` (one call = one batch of ``batch_size`` images).

    Stops after ``iterations`` calls, or after ``time_s`` seconds of measured loop (at least one call),
    whichever is given; neither means 10 iterations. ``streams`` calls run concurrently; ``fn`` must
    then be thread-safe. ``fn`` may be one callable per stream (stream ``i`` calls ``fn[i % len(fn)]``).
    ``check(i, out, references)``, outside the timed calls, checks each output of stream ``i`` against
    the outputs of one call per callable made one at a time before the measured loop (``references``).
    """
    if iterations is not None and iterations < 1:
        raise EffnetError(f"iterations must be >= 1, got {iterations}")
    if time_s is not None and time_s <= 0:
        raise EffnetError(f"time must be > 0 seconds, got {time_s}")
    if streams < 1 or batch_size < 1 or warmup < 0:
        raise EffnetError(
            f"streams and batch size must be >= 1 and warm-up >= 0, got {streams}, {batch_size}, {warmup}"
        )
    if iterations is None and time_s is None:
        iterations = 10
    calls = [fn] if callable(fn) else list(fn)

    t0 = time.perf_counter()
    first = calls[0]()
    first_ms = (time.perf_counter() - t0) * 1e3
    references: list[Any] = [first]  # each callable's answer, from a call made alone
    for j in range(1, 1 + warmup):
        out = calls[j % len(calls)]()
        if j < len(calls):
            references.append(out)
    if check is not None:  # a reference per callable even when the warm-up was shorter
        references += [call() for call in calls[len(references) :]]

    latencies: list[float] = []
    lock = threading.Lock()
    started = 0
    start = time.perf_counter()
    deadline = None if time_s is None else start + time_s

    def claim() -> bool:
        # Iteration budget is shared by all streams: claim one before running it.
        nonlocal started
        with lock:
            if iterations is not None and started >= iterations:
                return False
            if deadline is not None and started > 0 and time.perf_counter() >= deadline:
                return False
            started += 1
            return True

    def worker(i: int) -> None:
        call = calls[i % len(calls)]
        while claim():
            t = time.perf_counter()
            out = call()
            dt = (time.perf_counter() - t) * 1e3
            with lock:
                latencies.append(dt)
            if check is not None:
                check(i % len(calls), out, references)

    if streams == 1:
        worker(0)
    else:
        with ThreadPoolExecutor(max_workers=streams) as pool:
            for f in [pool.submit(worker, i) for i in range(streams)]:
                f.result()
    wall = time.perf_counter() - start
    return BenchResult(first_ms, latencies, wall, batch_size, streams, dict(config or {}))


def machine_description() -> dict[str, Any]:
    """CPU model, core count and ISA features that decide which kernels run (AVX-512, VNNI, BF16, AMX)."""
    import os

    info: dict[str, Any] = {"machine": platform.machine(), "logical_cpus": os.cpu_count(), "cpu": platform.processor()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            info["cpu"] = value.strip()
        elif key == "flags":
            flags = set(value.split())
            info["isa"] = sorted(
                flags
                & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16"}
            )
            break
    return info


def random_pixels(batch_size: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 NHWC RGB crops, what a backend's ``__call__`` takes; random, since speed does not depend on content."""
    return np.random.default_rng(seed).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)


def benchmark_backend(
    backend: Any,
    *,
    input_size: int,
    batch_size: int = 1,
    iterations: int | None = None,
    time_s: float | None = None,
    warmup: int = 2,
    streams: int = 1,
    config: dict[str, Any] | None = None,
) -> BenchResult:
    """Benchmark an :mod:`effnet.backends` backend on random crops, preprocessing-free (crops are ready).

    Each call includes the backend's own normalization and softmax, as a user's call does. With
    ``streams > 1`` each stream sends crops of its own and checks every answer it gets against its own
    (:func:`check_own_rows`): a backend that hands one caller's rows to another fails the run.
    """
    inputs = [random_pixels(batch_size, input_size, seed=i) for i in range(streams)]
    cfg = {
        "backend": getattr(backend, "name", type(backend).__name__),
        "precision": getattr(backend, "precision", "unknown"),
        "batch_size": batch_size,
        "streams": streams,
        "input_size": input_size,
        "outputs_checked": streams > 1,  # every concurrent call's rows were its own
        **(config or {}),
    }
    details = getattr(backend, "describe", None)
    if callable(details):
        cfg["backend_details"] = details()
    return run_benchmark(
        [functools.partial(backend, x) for x in inputs],
        batch_size=batch_size,
        iterations=iterations,
        time_s=time_s,
        warmup=warmup,
        streams=streams,
        config=cfg,
        check=check_own_rows if streams > 1 else None,
    )


def fastest_path(precision: str = "fp32") -> tuple[str, dict[str, Any]]:
    """(backend name, options) of the fastest measured CPU path for ``precision`` that is installed here.

    The table lives with the backends (:data:`effnet.backends.FASTEST`), where ``--backend auto`` uses it.
    """
    from .backends import resolve_auto

    return resolve_auto(precision)


def plot_latencies(
    latencies_ms: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str = "latency per call"
) -> Path:
    """Draw the latency distribution of each named path (one row each: every call as a dot, the box of its
    quartiles, the median written beside it) and write it to ``path`` (.png or .svg, atomically).

    A log axis when the paths differ by more than 10x, so that the fast ones are not squeezed to a line.
    """
    from .figures import figure_bytes, pyplot, write_bytes

    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise EffnetError(f"--plot {target}: the file name must end in .png or .svg")
    rows = [(name, np.asarray(v, np.float64)) for name, v in latencies_ms.items() if len(v)]
    if not rows:
        raise EffnetError("no latencies to plot (0 iterations ran)")
    plt = pyplot("a latency plot")
    rows.sort(key=lambda r: float(np.median(r[1])), reverse=True)  # fastest at the top
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    import matplotlib

    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecated vert in 3.11)
    sideways = {"orientation": "horizontal"} if _version(matplotlib.__version__) >= (3, 10) else {"vert": False}
    ax.boxplot([v for _, v in rows], widths=0.55, showfliers=False, medianprops={"color": "#d62728"}, **sideways)
    jitter = np.random.default_rng(0)
    for i, (_, v) in enumerate(rows, start=1):
        ax.scatter(v, i + jitter.uniform(-0.18, 0.18, len(v)), s=8, alpha=0.5, color="#2f6fde", zorder=3)
        ax.text(float(v.max()), i, f"  {np.median(v):.1f} ms (n={len(v)})", va="center", fontsize=8)
    ax.set_yticks(range(1, len(rows) + 1), [name for name, _ in rows], fontsize=8)
    lows, highs = min(float(v.min()) for _, v in rows), max(float(v.max()) for _, v in rows)
    if highs > 10 * lows:
        ax.set_xscale("log")
    ax.set_xlim(right=highs * (3 if highs > 10 * lows else 1.35))
    ax.set_xlabel("milliseconds per call (each dot one call; box: quartiles; red: median)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return write_bytes(target, figure_bytes(fig, fmt, dpi=110), "latency plot")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")[:2] if x.isdigit())
