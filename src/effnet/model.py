"""EfficientNet in PyTorch: stem, MBConv blocks (expand, depthwise, squeeze-excite, project), head.

One class builds every variant from :mod:`effnet.specs`. TensorFlow compatibility
is two constructor parameters: ``padding="same"`` (TF SAME, see :mod:`effnet.padding`)
and ``bn_eps=1e-3`` (TF's BatchNormalization default; PyTorch's is 1e-5, and using
it with TF-trained statistics costs accuracy without any error).

This module imports torch only: no I/O, no downloads, no preprocessing.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from .padding import PaddingMode, make_conv, same_output_size
from .specs import STEM_KERNEL, STEM_STRIDE, ArchPlan, BlockSpec, Variant, build_plan, get_variant

TF_BN_EPS = 1e-3
# TF uses momentum 0.99 for the moving averages, i.e. PyTorch momentum 0.01.
TF_BN_MOMENTUM = 0.01


def _activation(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected 'silu' or 'relu6'")


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
        self.act = _activation(act) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as used by EfficientNet: mean, reduce, act, expand, sigmoid gate.

    The reduced width is a fraction of the *block input* channels (TF reference), not of the expanded ones.
    """

    def __init__(self, channels: int, reduced_channels: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act = _activation(act)
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
        norm = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
        mid = spec.mid_channels
        self.spec = spec
        self.expand = (
            ConvBnAct(spec.in_channels, mid, 1, 1, act=act, input_size=input_size, **norm) if spec.has_expand else None
        )
        self.depthwise = ConvBnAct(
            mid, mid, spec.kernel_size, spec.stride, groups=mid, act=act, input_size=input_size, **norm
        )
        self.se = SqueezeExcite(mid, spec.se_channels, act) if spec.se_channels else None
        out_size = None if input_size is None else tuple(same_output_size(s, spec.stride) for s in input_size)
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


class EfficientNet(nn.Module):
    """EfficientNet / EfficientNet-Lite for any variant of :mod:`effnet.specs`.

    ``forward`` takes a normalized NCHW float batch and returns logits.
    ``input_size`` declares the size SAME pads are precomputed for: ``"default"``
    is the variant's resolution, ``None`` declares none (every conv pads
    dynamically). Other sizes always work, through the dynamic SAME path.
    """

    # timm's dict of the eval preprocessing the loaded weights need; set by effnet.create_model
    # (effnet.weights.preprocessing.pretrained_cfg), empty for a model built directly.
    pretrained_cfg: dict[str, Any]

    def __init__(
        self,
        variant: Variant | str,
        num_classes: int = 1000,
        *,
        padding: PaddingMode = "same",
        bn_eps: float = TF_BN_EPS,
        bn_momentum: float = TF_BN_MOMENTUM,
        input_size: int | tuple[int, int] | Literal["default"] | None = "default",
        drop_path_rate: float | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.pretrained_cfg = {}
        if isinstance(variant, str):
            variant = get_variant(variant)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no classifier), got {num_classes}")
        if padding not in ("same", "symmetric"):
            raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")
        if input_size == "default":
            input_size = variant.resolution
        size: tuple[int, int] | None = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.variant = variant
        self.plan: ArchPlan = build_plan(variant)
        self.num_classes = num_classes
        self.padding_mode = padding
        self.input_size = size
        self.num_features = self.plan.head_channels
        act = variant.activation
        norm = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)

        self.stem = ConvBnAct(
            in_channels, self.plan.stem_channels, STEM_KERNEL, STEM_STRIDE, act=act, input_size=size, **norm
        )
        size = None if size is None else tuple(same_output_size(s, STEM_STRIDE) for s in size)

        rate = variant.drop_path_rate if drop_path_rate is None else drop_path_rate
        total = len(self.plan.blocks)
        stages: list[list[MBConv]] = []
        for n, spec in enumerate(self.plan.blocks):
            if spec.index == 0:
                stages.append([])
            stages[-1].append(MBConv(spec, act=act, input_size=size, drop_path_rate=rate * n / total, **norm))
            if size is not None:
                size = tuple(same_output_size(s, spec.stride) for s in size)
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))

        self.head = ConvBnAct(
            self.plan.stem_channels if not stages else self.plan.blocks[-1].out_channels,
            self.plan.head_channels,
            1,
            1,
            act=act,
            input_size=size,
            **norm,
        )
        self.feature_size = size
        self.dropout = nn.Dropout(variant.dropout)
        self.classifier: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # TF reference initializers (efficientnet_model.py: conv_kernel_initializer, dense_kernel_initializer).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.shape[0])
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialized one (0 = none)."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.classifier, nn.Linear):
            bound = 1.0 / math.sqrt(num_classes)
            nn.init.uniform_(self.classifier.weight, -bound, bound)
            nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, after the head convolution: [N, head_channels, H/32, W/32]."""
        if x.ndim != 4 or x.shape[1] != self.stem.conv.in_channels:
            raise ValueError(
                f"expected an NCHW batch with {self.stem.conv.in_channels} channels, got shape {tuple(x.shape)}"
            )
        return self.head(self.stages(self.stem(x)))

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding fed to the classifier: [N, head_channels]."""
        return self.forward_features(x).mean((2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pool, dropout and classify a feature map from :meth:`forward_features`."""
        return self.classifier(self.dropout(features.mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
