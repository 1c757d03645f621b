"""EfficientNet in PyTorch: stem, MBConv blocks (expand, depthwise, squeeze-excite, project), head.

One class builds every variant from :mod:`effnet.specs`, out of the blocks in :mod:`effnet.layers`. TF compatibility
is two constructor parameters: ``padding="same"`` (TF SAME, see :mod:`effnet.padding`)
and ``bn_eps=1e-3`` (TF's BatchNormalization default; PyTorch's is 1e-5, and using
it with TF-trained statistics costs accuracy without any error).

This module imports torch only: no I/O, no downloads, no preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from .checkpointing import checkpoint_blocks
from .layers import ConvBnAct, MBConv, size_after
from .padding import PaddingMode, make_conv
from .specs import STEM_KERNEL, STEM_STRIDE, ArchPlan, Variant, build_plan, get_variant

__all__ = ["EfficientNet", "adapt_input_conv", "check_input", "TF_BN_EPS", "TF_BN_MOMENTUM"]

TF_BN_EPS = 1e-3
# TF uses momentum 0.99 for the moving averages, i.e. PyTorch momentum 0.01.
TF_BN_MOMENTUM = 0.01


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB stem kernel ``[O, 3, k, k]`` for ``in_chans`` input channels, as timm's ``adapt_input_conv``.

    1 channel: the sum over RGB (a grey image replicated to RGB gives the same output). Any other
    count: the RGB kernels repeated cyclically and scaled by 3 / in_chans, so the activations keep
    their scale (timm/models/_manipulate.py, also for 2 channels). A kernel that already has
    ``in_chans`` channels is returned unchanged.
    """
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    channels = weight.shape[1]
    if channels == in_chans:
        return weight
    if channels != 3:
        raise ValueError(f"can only adapt a 3-channel stem kernel, this one has {channels} input channels")
    dtype = weight.dtype
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3.0 / in_chans)
    return w.to(dtype)


def check_input(x: torch.Tensor, in_chans: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(f"expected an NCHW batch with {in_chans} channels, got shape {tuple(x.shape)}")


class EfficientNet(nn.Module):
    """EfficientNet / EfficientNet-Lite for any variant of :mod:`effnet.specs`.

    ``forward`` takes a normalized NCHW float batch and returns logits.
    ``input_size`` declares the size SAME pads are precomputed for: ``"default"``
    is the variant's resolution, ``None`` declares none (every conv pads
    dynamically). Other sizes always work, through the dynamic SAME path.

    Training options (timm's names): ``drop_path_rate`` is the stochastic depth rate of the last
    block, rising linearly from 0 over the blocks (TF reference efficientnet_model.py: ``drop_rate *
    block_idx / num_blocks``; default: the variant's 0.2); ``drop_rate`` the dropout before the
    classifier (default: the variant's); ``in_chans`` the input channels of the stem.

    ``embedding_stage`` (0-based) ends the network after that stage, with no head convolution: the
    classifier reads the stage's pooled output (:meth:`ArchPlan.truncated`; what ``effnet train``'s linear
    probe builds when cross-validation prefers an intermediate stage). ``None``: the paper's network.
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
        drop_rate: float | None = None,
        in_chans: int = 3,
        embedding_stage: int | None = None,
    ) -> None:
        super().__init__()
        self.pretrained_cfg = {}
        if isinstance(variant, str):
            variant = get_variant(variant)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no classifier), got {num_classes}")
        if padding not in ("same", "symmetric"):
            raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")
        for what, value in (("drop_path_rate", drop_path_rate), ("drop_rate", drop_rate)):
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{what} must be in [0, 1), got {value}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if input_size == "default":
            input_size = variant.resolution
        size: tuple[int, int] | None = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.variant = variant
        plan = build_plan(variant)
        self.plan: ArchPlan = plan if embedding_stage is None else plan.truncated(embedding_stage)
        self.embedding_stage = embedding_stage
        self.num_classes = num_classes
        self.padding_mode = padding
        self.input_size = size
        self.num_features = self.plan.num_features
        self.grad_checkpointing = False
        act = variant.activation
        norm: dict[str, Any] = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)

        self.stem = ConvBnAct(
            in_chans, self.plan.stem_channels, STEM_KERNEL, STEM_STRIDE, act=act, input_size=size, **norm
        )
        size = None if size is None else size_after(size, STEM_STRIDE)

        rate = variant.drop_path_rate if drop_path_rate is None else drop_path_rate
        total = len(plan.blocks)  # of the whole network: a block's rate does not depend on where it is cut
        stages: list[list[MBConv]] = []
        for n, spec in enumerate(self.plan.blocks):
            if spec.index == 0:
                stages.append([])
            stages[-1].append(MBConv(spec, act=act, input_size=size, drop_path_rate=rate * n / total, **norm))
            if size is not None:
                size = size_after(size, spec.stride)
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))

        # Cut after embedding_stage: no head convolution, the classifier reads that stage's pooled output.
        self.head: nn.Module = (
            ConvBnAct(
                self.plan.stem_channels if not stages else self.plan.blocks[-1].out_channels,
                self.plan.head_channels,
                1,
                1,
                act=act,
                input_size=size,
                **norm,
            )
            if self.plan.head_channels
            else nn.Identity()
        )
        self.feature_size = size
        self.dropout = nn.Dropout(variant.dropout if drop_rate is None else drop_rate)
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
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.shape[0])
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def truncate(self, embedding_stage: int) -> None:
        """End this network after stage ``embedding_stage``, in place, keeping the weights of what stays:
        the later stages and the head convolution are dropped and the classifier is new (timm's
        ``prune_intermediate_layers`` in spirit). The result equals ``EfficientNet(..., embedding_stage=...)``
        with these weights; :mod:`effnet.train` cuts a pretrained network where its probe chose."""
        if self.embedding_stage is not None and embedding_stage > self.embedding_stage:
            raise ValueError(
                f"this network already ends at stage {self.embedding_stage}; cannot keep stage {embedding_stage}"
            )
        self.plan = self.plan.truncated(embedding_stage)
        self.embedding_stage = embedding_stage
        self.stages = nn.Sequential(*list(self.stages)[: embedding_stage + 1])
        self.head = nn.Identity()
        self.num_features = self.plan.num_features
        size = self.input_size
        if size is not None:
            size = size_after(size, STEM_STRIDE)
            for spec in self.plan.blocks:
                size = size_after(size, spec.stride)
        self.feature_size = size
        self.reset_classifier(self.num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialized one (0 = none)."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.classifier, nn.Linear):
            bound = 1.0 / math.sqrt(num_classes)
            nn.init.uniform_(self.classifier.weight, -bound, bound)
            nn.init.zeros_(self.classifier.bias)

    @property
    def in_chans(self) -> int:
        return self.stem.conv.in_channels

    def adapt_input_channels(self, in_chans: int) -> None:
        """Give the stem ``in_chans`` input channels, its RGB kernel adapted by :func:`adapt_input_conv`."""
        old = self.stem.conv
        if in_chans == old.in_channels:
            return
        new = make_conv(
            in_chans,
            old.out_channels,
            STEM_KERNEL,
            STEM_STRIDE,
            padding=self.padding_mode,
            input_size=self.input_size,
        )
        with torch.no_grad():
            new.weight.copy_(adapt_input_conv(old.weight, in_chans))
        self.stem.conv = new.to(old.weight.device, old.weight.dtype)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations during backward instead of storing them (training only):
        memory for compute, the gradients are the same."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, after the head convolution: [N, head_channels, H/32, W/32] (a network cut at
        ``embedding_stage``: that stage's output)."""
        check_input(x, self.in_chans)
        x = self.stem(x)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            x = checkpoint_blocks(self.stages, x)
        else:
            x = self.stages(x)
        return self.head(x)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding fed to the classifier: [N, head_channels]."""
        return self.forward_features(x).mean((2, 3))

    def pooled_embeddings(self, x: torch.Tensor, taps: Sequence[int | None]) -> list[torch.Tensor]:
        """The pooled output [N, C] of each stage in ``taps`` (0-based; ``None``: the head convolution's, i.e.
        :meth:`forward_embedding`), in one forward pass: the candidate embeddings of the linear probe."""
        check_input(x, self.in_chans)
        missing = [t for t in taps if t is not None and not 0 <= t < len(self.stages)]
        if missing:
            raise ValueError(f"taps {missing} are not stages of this network (0..{len(self.stages) - 1}, or None)")
        # Run only as deep as the deepest tap needs (all stages and the head conv when None is asked for).
        depth = len(self.stages) if None in taps else 1 + max((t for t in taps if t is not None), default=-1)
        pooled: dict[int | None, torch.Tensor] = {}
        x = self.stem(x)
        for s, stage in enumerate(list(self.stages)[:depth]):
            x = stage(x)
            pooled[s] = x.mean((2, 3))
        if None in taps:
            pooled[None] = self.head(x).mean((2, 3))
        return [pooled[t] for t in taps]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pool, dropout and classify a feature map from :meth:`forward_features`."""
        return self.classifier(self.dropout(features.mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
