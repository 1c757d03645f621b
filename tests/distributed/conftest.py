"""The one Ray cluster of the test session (a conftest, so every module shares one instance)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.ray_fixtures import start_cluster


@pytest.fixture(scope="session")
def node_homes(tmp_path_factory) -> tuple[Path, Path]:
    """The EFFNET_HOME of the head node and of the worker node: neither is the driver's."""
    root = tmp_path_factory.mktemp("ray-node-homes")
    return root / "head", root / "node"


@pytest.fixture(scope="session")
def ray_cluster(node_homes) -> Iterator:
    """Head (with the dashboard, for the state API that finds actor PIDs) + one worker node; this process
    is a driver of it, and CLI subprocesses join it with --ray-address."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'effnet[ray]')")
    cluster = start_cluster((str(node_homes[0]), str(node_homes[1])))
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
