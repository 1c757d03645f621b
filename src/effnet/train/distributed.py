"""Data-parallel training under ``torchrun``: detected from its environment, one process per device.

``torchrun --nproc-per-node N -m effnet train ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``
(and the rendezvous address) for each process; :func:`setup` reads them, joins the process group
(NCCL on CUDA, Gloo on CPU) and pins CUDA processes to their local GPU. Without them, training runs
in one process and nothing here changes its result: the same sampler, the same per-sample seeds.
Only rank 0 writes files or prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import EffnetError

__all__ = ["DistributedError", "World", "detect", "setup", "teardown", "all_reduce_sum", "all_gather_cat"]


class DistributedError(EffnetError, RuntimeError):
    """A torchrun environment that cannot be used (bad variables, a device that is not there)."""


@dataclass(frozen=True)
class World:
    """This process's place in the job (``size`` 1, ``rank`` 0: no distribution)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def detect() -> World:
    """The world torchrun describes in the environment, or a one-process world."""
    size, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    if size is None or size <= 1:
        return World()
    if rank is None or not 0 <= rank < size:
        raise DistributedError(f"WORLD_SIZE={size} but RANK={rank}: launch with torchrun, which sets both")
    return World(size=size, rank=rank, local_rank=_env_int("LOCAL_RANK") or 0)


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when torchrun launched us; returns the world and this process's device."""
    world = detect()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} CUDA devices on this node"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Sum ``values`` over all processes (float64, so counts stay exact)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


def all_gather_cat(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every process's CPU ``tensor`` (sizes may differ) in rank order; the same on every rank."""
    if not world.distributed:
        return tensor
    parts: list[torch.Tensor | None] = [None] * world.size
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat([p for p in parts if p is not None and p.numel()] or [tensor])
