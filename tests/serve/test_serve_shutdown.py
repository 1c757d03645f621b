"""Overload and shutdown with a real server whose batches wait long enough to hold requests in flight:
beyond --max-queue a request gets 503 at once; SIGTERM lets the requests in flight finish."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serve.serve_fixtures import lite0_classifier, start_server, wait_in_flight  # noqa: F401 - pytest fixtures

CHELSEA = Path(__file__).resolve().parents[2] / "examples" / "chelsea.png"


def post_image(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/classify?top_k=1", content=CHELSEA.read_bytes(), timeout=120)


@pytest.mark.slow
def test_queue_full_503_then_sigterm_finishes_in_flight_requests(start_server, wait_in_flight, lite0_classifier):
    # A batch waits up to 3 s for company (max batch 64 is never reached), so requests stay in flight.
    server = start_server(
        "--model",
        "efficientnet-lite0",
        "--max-batch",
        "64",
        "--max-wait-ms",
        "3000",
        "--max-queue",
        "3",
        "--timeout",
        "60",
    )
    expected = lite0_classifier.classify([CHELSEA], top_k=1)[0].predictions[0].label
    with ThreadPoolExecutor(3) as pool:
        # Overload: 3 requests in flight fill --max-queue 3, the 4th is refused at once.
        first = [pool.submit(post_image, server.url) for _ in range(3)]
        wait_in_flight(server.url, 3)
        refused = post_image(server.url)
        assert refused.status_code == 503, refused.text
        assert "busy" in refused.json()["error"] and refused.headers["retry-after"] == "1"
        assert [f.result().status_code for f in first] == [200] * 3

        # Shutdown: SIGTERM while 3 requests wait in the batcher; they all get their answers.
        second = [pool.submit(post_image, server.url) for _ in range(3)]
        wait_in_flight(server.url, 3)
        server.proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in second]
    assert [r.status_code for r in answers] == [200] * 3, [r.text for r in answers]
    assert {r.json()["predictions"][0]["label"] for r in answers} == {expected}
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status says how it ended.
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM), server.log()
    with pytest.raises(httpx.TransportError):  # and then it is gone
        httpx.get(f"{server.url}/v2/health/live", timeout=5)
    log = server.log()
    assert "Application shutdown complete" in log and "Traceback" not in log, log
