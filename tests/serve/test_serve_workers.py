"""`effnet serve --workers 2` as a real process: one coherent /metrics for all workers, --threads per worker,
and the metrics directory of the run removed when it ends."""

from __future__ import annotations

import glob
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.serve.serve_fixtures import lite0_classifier, metric_samples, start_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
PNG = (REPO / "examples" / "coffee.png").read_bytes()


def _metrics_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "effnet-serve-metrics-*")))


def test_two_workers_one_coherent_metrics(start_server, lite0_classifier):
    before = _metrics_dirs()
    server = start_server("--model", "efficientnet-lite0", "--backend", "torch", "--workers", "2", "--threads", "2")
    good, bad = 24, 16

    def send(i: int) -> int:
        # A new connection per request, from 8 threads at once: the kernel hands connections to both workers.
        body = PNG if i < good else b"not an image"
        return httpx.post(f"{server.url}/v1/classify", content=body, timeout=120).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, range(good + bad)))
    assert statuses.count(200) == good and statuses.count(400) == bad

    # Whichever worker answers /metrics, it reports every worker's counts.
    for _ in range(4):
        m = metric_samples(httpx.get(f"{server.url}/metrics", timeout=30).text)
        classify = {
            dict(k[1])["status"]: v
            for k, v in m.items()
            if k[0] == "effnet_requests_total" and k[1][0][1] == "classify"
        }
        assert classify == {"200": good, "400": bad}, classify
        assert m[("effnet_errors_total", (("kind", "bad_image"),))] == bad
        per_worker = {dict(k[1])["pid"]: v for k, v in m.items() if k[0] == "effnet_worker_requests"}
        threads = {dict(k[1])["pid"]: v for k, v in m.items() if k[0] == "effnet_worker_threads"}
        assert len(threads) == 2 and set(threads.values()) == {2.0}, threads  # --threads 2 in each worker
        assert sum(per_worker.values()) >= good + bad  # plus the readiness probes
        assert m[("effnet_requests_in_flight", ())] == 0
    assert all(v > 0 for v in per_worker.values()) and len(per_worker) == 2, per_worker  # both answered

    new_dirs = _metrics_dirs() - before
    assert len(new_dirs) == 1
    assert server.stop() == 0
    assert not any(Path(d).exists() for d in new_dirs)  # the run's metrics directory is gone
