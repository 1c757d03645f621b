"""Time and peak resident memory of each stage of `effnet.audit.audit`, for benchmarks/audit_benchmark.py.

The stages are the functions `audit` calls (wrapped in its module's namespace, so nothing in src/ changes):
hashing (from the call to the first embedding), the embedding pass, the near-duplicate groups, the label
check's cross-validated probes, cleanlab's ranking, the outlier scores, and every faiss search (`nearest`).
The peak of a stage is exact, not sampled: the kernel's high-water mark (VmHWM) is read when a stage starts
or ends, folded into every stage open at that moment, and reset (`/proc/self/clear_refs`, value 5), so each
stage sees only the peak reached while it was open. A heartbeat line on stderr every minute says where a
long run is.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MIB = 2**20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class StageTracker:
    """Per stage: calls, seconds, the peak RSS while open, the RSS when it was first entered."""

    def __init__(self) -> None:
        self.open: list[str] = []
        self.stats: dict[str, dict[str, float]] = {}
        self.started: dict[str, float] = {}
        self.resets = True
        self.process_peak = 0.0  # MiB: the largest high-water mark read (getrusage's would be reset too)
        self.embedded = 0  # images through the embedding pass so far (the heartbeat's progress)
        self.lock = threading.Lock()

    def _fold(self) -> None:
        peak = _status("VmHWM")
        self.process_peak = max(self.process_peak, peak / MIB)
        for name in self.open:
            s = self.stats[name]
            s["peak_rss_mib"] = max(s["peak_rss_mib"], peak / MIB)
        if self.resets:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:  # no reset: each stage then reports the process's peak so far (said in the JSON)
                self.resets = False

    def peak(self) -> float:
        with self.lock:
            self._fold()
            return self.process_peak

    def enter(self, name: str) -> None:
        with self.lock:
            self._fold()
            s = self.stats.setdefault(name, {"calls": 0, "seconds": 0.0, "peak_rss_mib": 0.0})
            s.setdefault("rss_at_start_mib", _status("VmRSS") / MIB)
            s["calls"] += 1
            self.open.append(name)
            self.started[name] = time.perf_counter()
            s["peak_rss_mib"] = max(s["peak_rss_mib"], _status("VmRSS") / MIB)

    def leave(self, name: str) -> None:
        with self.lock:
            self._fold()
            self.stats[name]["seconds"] += time.perf_counter() - self.started.pop(name)
            self.open.remove(name)

    def wrap(self, module: Any, attr: str, name: str, before: Callable[[], None] | None = None) -> None:
        inner = getattr(module, attr)

        @functools.wraps(inner)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before()
            self.enter(name)
            try:
                return inner(*args, **kwargs)
            finally:
                self.leave(name)

        setattr(module, attr, wrapped)

    def count_embedded(self, module: Any) -> None:
        """Count the images the embedding pass decodes (its `iter_batches`), for the heartbeat."""
        inner = module.iter_batches

        def counted(*args: Any, **kwargs: Any) -> Any:
            for batch in inner(*args, **kwargs):
                self.embedded += len(batch.images)
                yield batch

        module.iter_batches = counted

    def heartbeat(self, every: float = 60.0) -> threading.Event:
        stop = threading.Event()
        t0 = time.perf_counter()

        def beat() -> None:
            while not stop.wait(every):
                print(
                    f"[{time.perf_counter() - t0:7.0f} s] stage {'/'.join(self.open) or '-'}, "
                    f"{self.embedded} embedded, RSS {_status('VmRSS') / MIB:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )

        threading.Thread(target=beat, daemon=True).start()
        return stop

    def rounded(self) -> dict[str, dict[str, float]]:
        return {k: {f: round(v, 1) for f, v in s.items()} for k, s in self.stats.items()}


def instrument(tracker: StageTracker) -> None:
    """Wrap the audit's stages. `nearest` is wrapped both where `audit` calls it (leakage) and where the
    duplicate and outlier checks call it (`effnet.train.datacheck`)."""
    import effnet.audit.embed as embed
    import effnet.audit.run as run
    import effnet.train.datacheck as datacheck

    def end_hash() -> None:
        if "hash" in tracker.open:
            tracker.leave("hash")

    tracker.wrap(run, "embed_images", "embed", before=end_hash)
    tracker.wrap(run, "duplicate_groups", "duplicates")
    tracker.wrap(run, "ensemble_probs", "label_probes")
    tracker.wrap(run, "label_issues", "cleanlab")
    tracker.wrap(run, "outlier_scores", "outliers")
    tracker.wrap(run, "nearest", "faiss_search")
    tracker.wrap(datacheck, "nearest", "faiss_search")
    tracker.count_embedded(embed)


def index_memory(rows: Any) -> dict[str, float]:
    """Measured size of the two faiss indexes the audit may build on these unit rows (exact inner product,
    used up to 50,000 images, and HNSW above): serialized bytes per vector, and the RSS growth of building
    each (a fresh index on the same rows), with the build time of the HNSW one."""
    import faiss
    import numpy as np

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n, d = rows.shape
    out: dict[str, float] = {"vectors": n, "dim": d}
    for name, make in (
        ("flat", lambda: faiss.IndexFlatIP(d)),
        ("hnsw32", lambda: faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)),
    ):
        before = _status("VmRSS")
        t0 = time.perf_counter()
        index = make()
        index.add(rows)
        out[f"{name}_build_s"] = round(time.perf_counter() - t0, 2)
        out[f"{name}_rss_growth_mib"] = round((_status("VmRSS") - before) / MIB, 1)
        size = len(faiss.serialize_index(index))
        out[f"{name}_bytes_per_vector"] = round(size / n, 1)
        del index
    return out
