"""Count parameters and multiply-accumulates of a built model by running it once.

Convention (stated because published figures differ): ``macs`` counts every
multiply-accumulate of convolutions and fully connected layers at the given
input size; ``flops = 2 * macs``. Element-wise work (batch norm, activations,
squeeze-excite gating, residual adds, pooling) is reported separately as element
counts, because tools disagree on how many FLOPs each of those costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    params: int  # as in PyTorch: conv/linear weights and biases + BN gamma/beta
    params_bn_folded: int  # BN folded into the preceding conv: gamma/beta become one bias per channel
    macs: int
    elementwise: int  # output elements of BN + activations + SE gates + residual adds

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count_complexity(model: nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> Complexity:
    macs = 0
    elementwise = 0

    def on_conv(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def on_linear(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    def on_elementwise(_m, _inp, out: torch.Tensor) -> None:
        nonlocal elementwise
        elementwise += out.numel()

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(on_linear))
        elif isinstance(m, (nn.BatchNorm2d, nn.SiLU, nn.ReLU6)):
            hooks.append(m.register_forward_hook(on_elementwise))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, in_channels, *input_size))
    finally:
        for h in hooks:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    return Complexity(params=params, params_bn_folded=params - bn_channels, macs=macs, elementwise=elementwise)
