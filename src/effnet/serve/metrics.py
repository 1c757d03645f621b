"""Prometheus metrics of one server (its own registry, so several apps in one process do not clash)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: CPU inference of one image is milliseconds (Lite0) to a second (B5 on a small machine).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        Gauge("effnet_queue_depth", "Inputs waiting for a batch", registry=r).set_function(queue_depth)
        Gauge(
            "effnet_requests_in_flight",
            "Requests admitted and not yet answered (decoding, queued or running)",
            registry=r,
        ).set_function(in_flight)
        self.model_info = Info("effnet_model", "The model this server runs", registry=r)

    def observe_batch(self, kind: str, rows: int, seconds: float) -> None:
        self.batch_size.labels(kind).observe(rows)
        self.inference.labels(kind).observe(seconds)
        self.images.labels(kind).inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
