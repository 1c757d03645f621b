"""EfficientNet's building blocks: conv-BN-activation, squeeze-excite, stochastic depth and the MBConv block.

Split out of :mod:`effnet.model`, which assembles them into the network from an :class:`~effnet.specs.ArchPlan`.
This module imports torch only: no I/O, no downloads, no preprocessing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .padding import PaddingMode, make_conv, same_output_size
from .specs import BlockSpec

__all__ = ["ConvBnAct", "SqueezeExcite", "MBConv", "drop_path", "activation", "size_after"]


def activation(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected 'silu' or 'relu6'")


def size_after(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """(H, W) after a SAME convolution of ``stride``."""
    return same_output_size(size[0], stride), same_output_size(size[1], stride)


class ConvBnAct(nn.Module):
    """Convolution, batch norm and an optional activation (``act=None``: linear, as in project)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        *,
        groups: int = 1,
        act: str | None,
        padding: PaddingMode,
        input_size: tuple[int, int] | None,
        bn_eps: float,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        self.conv = make_conv(
            in_channels, out_channels, kernel_size, stride, groups=groups, padding=padding, input_size=input_size
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = activation(act) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as used by EfficientNet: mean, reduce, act, expand, sigmoid gate.

    The reduced width is a fraction of the *block input* channels (TF reference), not of the expanded ones.
    """

    def __init__(self, channels: int, reduced_channels: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act = activation(act)
        self.expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(self.act(self.reduce(s)))
        return x * torch.sigmoid(s)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop the residual branch per sample while training."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) with optional squeeze-excite.

    expand (1x1, skipped when the expand ratio is 1) -> depthwise (kxk, strided) ->
    squeeze-excite -> project (1x1, linear) -> + input when shapes allow.
    """

    def __init__(
        self,
        spec: BlockSpec,
        *,
        act: str,
        padding: PaddingMode,
        input_size: tuple[int, int] | None,
        bn_eps: float,
        bn_momentum: float,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm: dict[str, Any] = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
        mid = spec.mid_channels
        self.spec = spec
        self.expand = (
            ConvBnAct(spec.in_channels, mid, 1, 1, act=act, input_size=input_size, **norm) if spec.has_expand else None
        )
        self.depthwise = ConvBnAct(
            mid, mid, spec.kernel_size, spec.stride, groups=mid, act=act, input_size=input_size, **norm
        )
        self.se = SqueezeExcite(mid, spec.se_channels, act) if spec.se_channels else None
        out_size = None if input_size is None else size_after(input_size, spec.stride)
        self.project = ConvBnAct(mid, spec.out_channels, 1, 1, act=None, input_size=out_size, **norm)
        self.has_residual = spec.has_residual
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.expand is not None:
            x = self.expand(x)
        x = self.depthwise(x)
        if self.se is not None:
            x = self.se(x)
        x = self.project(x)
        if self.has_residual:
            x = drop_path(x, self.drop_path_rate, self.training) + shortcut
        return x
