"""The one Ray cluster of the test session: a head and a second node on this machine (ray.cluster_utils).

The fixture itself is in conftest.py (one instance for every module). Each node gets 2 logical CPUs, so
one inference actor and one decode task fit on each. The agents' ports are given, so a raylet waits for
fewer port files from its agents (slow to appear on a loaded 2-core machine).

Each node has its own ``EFFNET_HOME`` (``node_homes``), none of them the driver's: as on real nodes,
weights and exports a node needs reach it through the object store and land in its own cache.
"""

from __future__ import annotations

import socket
from typing import Any

LITE0 = "efficientnet-lite0"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_args(**extra) -> dict:
    ports = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port", "runtime_env_agent_port")
    return {"num_cpus": 2, "object_store_memory": 256 * 2**20, **{p: free_port() for p in ports}, **extra}


def start_cluster(node_homes: tuple[str, str], attempts: int = 3) -> Any:
    """A head and a worker node, each with its own EFFNET_HOME (the raylet's environment, which the
    node's worker processes inherit)."""
    from ray.cluster_utils import Cluster

    head_home, node_home = node_homes

    # A raylet gives its agents 15 s to start (fixed in Ray 2.60); on a 2-core machine shared with other
    # test runs that can pass, so a failed start is retried on fresh ports before the session gives up.
    for attempt in range(attempts):
        cluster = None
        try:
            cluster = Cluster(
                initialize_head=True,
                head_node_args=_node_args(
                    include_dashboard=True, dashboard_port=free_port(), env_vars={"EFFNET_HOME": head_home}
                ),
            )
            cluster.add_node(**_node_args(env_vars={"EFFNET_HOME": node_home}))
            cluster.wait_for_nodes()
            return cluster
        except Exception:
            if cluster is not None:
                cluster.shutdown()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
