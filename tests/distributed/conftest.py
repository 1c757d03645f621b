"""The one Ray cluster of the test session (a conftest, so every module shares one instance)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.distributed.ray_fixtures import start_cluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator:
    """Head (with the dashboard, for the state API that finds actor PIDs) + one worker node; this process
    is a driver of it, and CLI subprocesses join it with --ray-address."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")
    cluster = start_cluster()
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
