"""TensorFlow "SAME" padding: pure math plus one convolution module that uses it.

TF pads a strided convolution so that ``out = ceil(in / stride)`` and puts the
odd pixel, if any, *after* the image (bottom / right). PyTorch's ``padding=k//2``
is symmetric, so at stride 2 on an even size it shifts the sampling grid by one
pixel relative to TF. Weights trained in TF silently lose accuracy under that
shift; EfficientNet-B5 at 456 px hits it three times (456, 228, 114 are even).

Reference: TF ``tf.nn.convolution`` docs ("SAME" padding) and
gen-efficientnet-pytorch ``conv2d_same.py`` / ``padding.py``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PaddingMode = Literal["same", "symmetric"]


def same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one spatial dimension under TF SAME.

    ``out = ceil(size / stride)``; ``total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)``;
    ``before = total // 2``, ``after = total - before``.
    """
    if size < 1 or kernel < 1 or stride < 1 or dilation < 1:
        raise ValueError(
            f"same_pad needs positive integers, got size={size}, kernel={kernel}, stride={stride}, dilation={dilation}"
        )
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def same_output_size(size: int, stride: int) -> int:
    """Spatial size after a SAME convolution: ``ceil(size / stride)``."""
    return -(-size // stride)


def is_size_independent(kernel: int, stride: int, dilation: int = 1) -> bool:
    """True when SAME padding is the same symmetric ``k//2`` at every input size.

    At stride 1 the total pad is ``(k - 1) * d`` whatever the size, so an odd
    kernel pads symmetrically and needs no per-size logic.
    """
    return stride == 1 and ((kernel - 1) * dilation) % 2 == 0


class SameConv2d(nn.Conv2d):
    """Conv2d with TF SAME padding, static at a declared input size, dynamic elsewhere.

    With ``input_size`` declared, the pads are computed here, at construction:
    symmetric ones go into the convolution's own ``padding``, asymmetric ones
    into ``static_pad`` applied with ``F.pad`` (one extra op). An input of any
    other size takes the dynamic path, which computes the same formula from the
    input's shape; both paths give identical results at the declared size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias, padding=0)
        self.input_size = input_size
        # (left, right, top, bottom) in F.pad order, or None when the conv's own padding covers it.
        self.static_pad: tuple[int, int, int, int] | None = None
        if input_size is not None:
            top, bottom = same_pad(input_size[0], kernel_size, stride)
            left, right = same_pad(input_size[1], kernel_size, stride)
            if top == bottom and left == right:
                self.padding = (top, left)
            else:
                self.static_pad = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) == self.input_size:
            if self.static_pad is not None:
                x = F.pad(x, self.static_pad)
            return self._conv_forward(x, self.weight, self.bias)
        return self.forward_dynamic(x)

    def forward_dynamic(self, x: torch.Tensor) -> torch.Tensor:
        """SAME padding computed from the input's shape (any size)."""
        kh, kw = self.kernel_size
        sh, sw = self.stride
        top, bottom = same_pad(int(x.shape[-2]), kh, sh)
        left, right = same_pad(int(x.shape[-1]), kw, sw)
        if left or right or top or bottom:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", same_pad_at={self.input_size}, static_pad={self.static_pad}"


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: PaddingMode = "same",
    input_size: tuple[int, int] | None = None,
) -> nn.Conv2d:
    """A convolution padded as ``padding`` says.

    ``symmetric`` is PyTorch's ``k//2`` on both sides (torchvision's EfficientNet).
    ``same`` is TF SAME; where it does not depend on the input size (stride 1, odd
    kernel) it is exactly ``k//2`` too, so a plain ``nn.Conv2d`` is used.
    """
    if padding == "symmetric" or (padding == "same" and is_size_independent(kernel_size, stride)):
        return nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
    if padding == "same":
        return SameConv2d(in_channels, out_channels, kernel_size, stride, groups, bias, input_size)
    raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")
