"""Prometheus metrics of one server (its own registry, so several apps in one process do not clash).

With ``serve --workers N`` each request is answered by one of N processes, so one process's counters
are not the server's. There, ``$PROMETHEUS_MULTIPROC_DIR`` is set (by :func:`effnet.serve.launch.serve`,
a fresh directory per run) before any worker imports prometheus_client: every worker then writes its
values to files in that directory, and ``/metrics``, whichever worker answers, adds them all up
(prometheus_client's multiprocess mode). The two gauges read from the batcher are then sampled at
request boundaries and summed over live workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when this process runs in it."""
    return os.environ.get(MULTIPROC_ENV) or None


# Seconds: CPU inference of one image is milliseconds (Lite0) to a second (B5 on a small machine).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        # Multiprocess mode: values live in the shared directory, read back by a MultiProcessCollector at
        # render time; registering them here too would count this process twice. Info has no multiprocess
        # form: it stays in this registry (every worker serves the same model).
        r = None if self.multiprocess else self.registry
        self.requests = Counter(
            "effnet_requests", "HTTP requests answered, by endpoint and status code", ("endpoint", "status"), registry=r
        )
        self.errors = Counter("effnet_errors", "Requests answered with an error, by kind", ("kind",), registry=r)
        self.latency = Histogram(
            "effnet_request_latency_seconds",
            "Time from request to answer, by endpoint",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "effnet_batch_size",
            "Rows per forward pass (dynamic batching)",
            ("kind",),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "effnet_inference_seconds", "Time of one forward pass", ("kind",), buckets=LATENCY_BUCKETS, registry=r
        )
        self.images = Counter("effnet_inputs", "Images or tensor rows classified", ("kind",), registry=r)
        self.video_frames = Counter(
            "effnet_video_frames",
            "Frames of uploaded clips (/v1/video), by stage: decoded, classified",
            ("stage",),
            registry=r,
        )
        gauges = (
            ("effnet_queue_depth", "Inputs waiting for a batch", queue_depth),
            (
                "effnet_requests_in_flight",
                "Requests admitted and not yet answered (decoding, queued or running)",
                in_flight,
            ),
        )
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []
        for name, doc, read in gauges:
            if self.multiprocess:  # a function gauge would only ever show the answering worker
                self._sampled.append((Gauge(name, doc, registry=None, multiprocess_mode="livesum"), read))
            else:
                Gauge(name, doc, registry=r).set_function(read)
        self.model_info = Info("effnet_model", "The model this server runs", registry=self.registry)
        # Per worker process (one sample per pid): which worker answered how much, with how many threads.
        self._worker_requests = self._worker_threads = None
        if self.multiprocess:
            self._worker_requests = Gauge(
                "effnet_worker_requests", "Requests answered by this worker", registry=None, multiprocess_mode="all"
            )
            self._worker_threads = Gauge(
                "effnet_worker_threads", "Inference threads of this worker", registry=None, multiprocess_mode="all"
            )

    def set_worker_threads(self, threads: int) -> None:
        if self._worker_threads is not None:
            self._worker_threads.set(threads)

    def sample(self, answered: int = 0) -> None:
        """Multiprocess mode: store this worker's current queue depth and in-flight count (and answers)."""
        for gauge, read in self._sampled:
            gauge.set(read())
        if answered and self._worker_requests is not None:
            self._worker_requests.inc(answered)

    def worker_exit(self) -> None:
        """Multiprocess mode: drop this worker's live gauges (its counters stay in the totals)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    def observe_batch(self, kind: str, rows: int, seconds: float) -> None:
        self.batch_size.labels(kind).observe(rows)
        self.inference.labels(kind).observe(seconds)
        self.images.labels(kind).inc(rows)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        self.sample()
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged) + generate_latest(self.registry)
