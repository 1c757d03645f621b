"""The optimizer's side of a run: the device, per-epoch seeds, AdamW's parameter groups, the learning-rate
schedule and the weight EMA (used by :mod:`effnet.train.loop`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import TrainError

__all__ = ["lr_at", "resolve_device", "epoch_seed", "param_groups", "ema_update", "is_bn"]


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup over ``warmup`` steps from 0, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: no CUDA device is available")
    return device


def epoch_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def param_groups(params: Sequence[nn.Parameter], weight_decay: float, lr_scale: float) -> list[dict[str, Any]]:
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]  # BN weights/biases and conv/linear biases
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale},
    ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.is_floating_point():
            e.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
        else:
            e.copy_(m)


def is_bn(m: nn.Module) -> bool:
    # BatchNorm2d and SyncBatchNorm (what convert_sync_batchnorm puts in BatchNorm2d's place) alike.
    return isinstance(m, nn.modules.batchnorm._BatchNorm)
