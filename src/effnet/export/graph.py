"""The export copy of the network: batch norm folded, TF SAME convolutions as ONNX-friendly ones.

Why a custom ONNX symbolic: ``torch.onnx.export`` cannot express asymmetric conv
padding, so ``F.pad`` + conv exports as a Pad node fed by a chain of shape ops
that its constant folding does not remove. In the export copy of the model each
size-dependent SAME convolution is replaced by one whose ONNX symbolic emits the
final graph directly (Conv with explicit pads, or Shape arithmetic + Pad + Conv
when dynamic). Its PyTorch forward computes the same thing, so tracing still
checks shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EffnetError
from ..model import EfficientNet
from ..optimize import fold_batchnorm
from ..padding import SameConv2d, same_pad

__all__ = ["prepare_for_export"]


class _StaticSameConv(torch.autograd.Function):
    """Conv with fixed, possibly asymmetric pads; exports as one ONNX Conv with ``pads``."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel, stride, pads, dilation, groups):
        top, left, bottom, right = pads
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, kernel, stride, pads, dilation, groups):
        # ONNX Conv pads: [top, left, bottom, right] (all begins, then all ends).
        return g.op(
            "Conv",
            x,
            weight,
            bias,
            kernel_shape_i=list(kernel),
            strides_i=list(stride),
            pads_i=list(pads),
            dilations_i=list(dilation),
            group_i=groups,
        )


class _DynamicSameConv(torch.autograd.Function):
    """TF SAME conv at any input size; exports as Shape arithmetic -> Pad -> Conv."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel, stride, dilation, groups):
        kh, kw = kernel
        top, bottom = same_pad(int(x.shape[-2]), kh, stride[0], dilation[0])
        left, right = same_pad(int(x.shape[-1]), kw, stride[1], dilation[1])
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, kernel, stride, dilation, groups):
        def const(values: list[int]):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]  # dilated kernel extent
        hw = g.op("Slice", g.op("Shape", x), const([2]), const([4]))
        s = const(list(stride))
        # out = ceil(in / s); total = max((out - 1) * s + span - in, 0); before = total // 2.
        out = g.op("Div", g.op("Add", hw, const([v - 1 for v in stride])), s)
        total = g.op(
            "Max",
            g.op("Sub", g.op("Add", g.op("Mul", g.op("Sub", out, const([1, 1])), s), const(span)), hw),
            const([0, 0]),
        )
        before = g.op("Div", total, const([2, 2]))
        after = g.op("Sub", total, before)
        pads = g.op("Concat", const([0, 0]), before, const([0, 0]), after, axis_i=0)
        padded = g.op("Pad", x, pads, mode_s="constant")
        return g.op(
            "Conv",
            padded,
            weight,
            bias,
            kernel_shape_i=list(kernel),
            strides_i=list(stride),
            dilations_i=list(dilation),
            group_i=groups,
        )


class _ExportSameConv(nn.Conv2d):
    """Stand-in for a :class:`SameConv2d` in an export copy: same weights, ONNX-friendly SAME padding.

    ``pads`` = (top, left, bottom, right) fixes the padding (static export); ``None``
    computes it from the input's shape (dynamic export).
    """

    def __init__(self, conv: SameConv2d, pads: tuple[int, int, int, int] | None) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]  # a 2-tuple for Conv2d
            stride=conv.stride,  # type: ignore[arg-type]
            padding=0,
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=True,
        )
        self.weight = conv.weight
        self.bias = (
            conv.bias
            if conv.bias is not None
            else nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype), requires_grad=False)
        )
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is None:
            return _DynamicSameConv.apply(
                x, self.weight, self.bias, self.kernel_size, self.stride, self.dilation, self.groups
            )
        return _StaticSameConv.apply(
            x, self.weight, self.bias, self.kernel_size, self.stride, self.pads, self.dilation, self.groups
        )


def _swap_same_convs(module: nn.Module, dynamic: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, SameConv2d):
            if dynamic:
                setattr(module, name, _ExportSameConv(child, None))
            elif child.input_size is None:
                raise EffnetError(f"{name}: SAME conv without a declared input size cannot be exported statically")
            elif child.static_pad is not None:
                left, right, top, bottom = child.static_pad
                setattr(module, name, _ExportSameConv(child, (top, left, bottom, right)))
            # else: symmetric SAME pads already sit in the conv's own ``padding``.
        else:
            _swap_same_convs(child, dynamic)


class _Exportable(nn.Module):
    """The graph that is exported: model, then softmax unless logits are wanted."""

    def __init__(self, model: nn.Module, logits: bool) -> None:
        super().__init__()
        self.model = model
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.logits else torch.softmax(y, dim=1)


def prepare_for_export(model: EfficientNet, *, dynamic: bool = False, logits: bool = False) -> nn.Module:
    """An export copy of ``model``: BN folded, SAME convs swapped, softmax appended (unless ``logits``).

    Static export needs the model built for its input size (``model.input_size``),
    since that is where the SAME pads are frozen.
    """
    if not dynamic and model.input_size is None:
        raise EffnetError("static export needs a model built with an input size (create_model(..., input_size=N))")
    folded = fold_batchnorm(model)
    _swap_same_convs(folded, dynamic)
    return _Exportable(folded, logits).eval()
