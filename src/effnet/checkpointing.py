"""Activation checkpointing for EfficientNet's blocks, with BN statistics updated once per batch.

Split out of :mod:`effnet.model`: :mod:`effnet.features` and the model's ``set_grad_checkpointing`` use it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.utils.checkpoint
from torch import nn

__all__ = ["checkpoint_blocks"]


@contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BN running statistics left untouched inside (momentum 0): a checkpointed block's forward runs
    again during backward, and without this the same batch would update the statistics twice."""
    # _BatchNorm: BatchNorm2d and the SyncBatchNorm that convert_sync_batchnorm puts in its place.
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def checkpoint_blocks(stages: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``x`` through every block of ``stages`` (a sequence of stages), each under activation checkpointing.

    The RNG state is restored for the recomputation (``preserve_rng_state``), so stochastic depth drops
    the same samples twice; BN statistics are updated by the first forward only.
    """
    for stage in stages:
        for block in stage.children():
            x = torch.utils.checkpoint.checkpoint(
                block, x, use_reentrant=False, context_fn=functools.partial(_checkpoint_contexts, block)
            )
    return x


def _checkpoint_contexts(block: nn.Module) -> tuple[nullcontext[None], AbstractContextManager[None]]:
    """(forward context, recomputation context) for ``torch.utils.checkpoint``'s ``context_fn``."""
    return nullcontext(), _frozen_bn_stats(block)
