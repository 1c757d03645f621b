"""Where Ray work runs, decided from the request and the cluster's resources, never the driver's hardware."""

from __future__ import annotations

import pytest

from effnet.distributed.placement import PoolSize, batch_default, device_kind_on_ray, node_device, size_pool
from effnet.errors import EffnetError


def node(cpus: float, gpus: float = 0.0, alive: bool = True) -> dict:
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return {"Alive": alive, "Resources": resources}


def test_gpus_imply_cuda_and_cuda_implies_a_gpu_while_auto_stays_auto():
    assert node_device("cpu", 0) == ("cpu", 0)
    assert node_device("cpu", 1) == ("cuda", 1)  # --gpus-per-worker 1 without --device: CUDA there
    assert node_device("cuda", 0) == ("cuda", 1.0)  # a GPU reserved, or Ray hides every GPU from the actor
    assert node_device("cuda", 0.5) == ("cuda", 0.5)
    assert node_device("auto", 0) == ("auto", 0) and node_device("auto", 1) == ("auto", 1)
    with pytest.raises(EffnetError, match="use --device cuda"):
        node_device("cuda:1", 1)
    with pytest.raises(EffnetError, match="--gpus-per-replica must be >= 0"):
        node_device("cpu", -1, "--gpus-per-replica")


def test_the_device_kind_and_batch_follow_the_request_not_this_machine():
    # This machine has no GPU: a request for CUDA is still a CUDA request (a CPU-only head).
    assert device_kind_on_ray("cuda", 0) == "cuda" and batch_default("cuda", 0) == 64
    assert device_kind_on_ray("auto", 0) == "cpu" and batch_default("auto", 0) == 8
    assert device_kind_on_ray("auto", 1) == "cuda" and batch_default(None, 0.25) == 64


def test_pool_follows_the_cluster_gpus_and_never_waits_for_gpus_that_are_not_there():
    two_gpu_nodes = [node(8, 1), node(8, 1), node(16)]
    # Default: start at what fits now (one actor per GPU), no upper bound (grows with the cluster).
    assert size_pool(None, two_gpu_nodes, gpus_per_worker=1) == PoolSize(1, 2, None)
    assert size_pool(None, two_gpu_nodes, gpus_per_worker=0.5) == PoolSize(1, 4, None)
    with pytest.raises(EffnetError, match=r"--workers 3 needs 3 inference actors, but 2 fit"):
        size_pool(3, two_gpu_nodes, gpus_per_worker=1)
    with pytest.raises(EffnetError, match="none of the inference actors fits"):
        size_pool(None, [node(8)], gpus_per_worker=1)  # no GPU at all: an error, not a pending job
    assert size_pool((1, 8), two_gpu_nodes, gpus_per_worker=1) == PoolSize(1, 2, 8)
    with pytest.raises(EffnetError, match="MIN"):
        size_pool((3, 8), two_gpu_nodes, gpus_per_worker=1)
    # A GPU on a node without the CPUs an actor asks for does not count; dead nodes do not count.
    assert size_pool(None, [node(1, 1), node(4, 1), node(4, 4, alive=False)], cpus_per_worker=2, gpus_per_worker=1) == (
        PoolSize(1, 1, None)
    )


def test_cpu_pool_leaves_a_decode_cpu_and_fixed_sizes_stay_fixed():
    nodes = [node(2), node(2)]
    # Uncapped CPU actors use their whole node: one per node, not more (that would oversubscribe it).
    assert size_pool(None, nodes) == PoolSize(1, 2, 2)
    # Capped at 1 CPU each: 3 fit (4 CPUs, one kept for decoding), and the pool may grow with the cluster.
    assert size_pool(None, nodes, cpus_per_worker=1) == PoolSize(1, 3, None)
    assert size_pool(2, nodes) == PoolSize(2, 2, 2) and size_pool(2, nodes).describe() == "2"
    assert size_pool((1, 3), nodes).describe() == "1-3 (started 3)"  # asked for: what Ray can place counts
    assert size_pool(3, nodes) == PoolSize(3, 3, 3)
    with pytest.raises(EffnetError, match="--workers 2 needs 2 inference actors, but 1 fit"):
        size_pool(2, nodes, cpus_per_worker=2)
