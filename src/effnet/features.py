"""EfficientNet as a backbone: the multi-scale feature maps a detector or segmenter reads.

timm's ``features_only`` convention (timm/models/_efficientnet_builder.py, ``EfficientNetBuilder.__call__``):
a feature map is taken at the end of every stage whose *next* stage starts with a stride, and at the
end of the last stage, i.e. at the last full-resolution map before each downsampling. For the
EfficientNet family (stage strides 1, 2, 2, 2, 1, 2, 1 after the stride-2 stem) these are the ends of
stages 0, 1, 2, 4 and 6, at strides 2, 4, 8, 16 and 32. The head convolution is not part of the
backbone (timm drops ``conv_head``/``bn2``/``classifier`` too).

This module imports torch only, like :mod:`effnet.model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .checkpointing import checkpoint_blocks
from .model import EfficientNet, check_input
from .specs import STEM_STRIDE, ArchPlan

__all__ = ["FeatureSpec", "FeatureInfo", "feature_specs", "EfficientNetFeatures"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature map: its channels, its stride relative to the input, and where it is taken."""

    num_chs: int
    reduction: int
    module: str  # the effnet module whose output it is, e.g. "stages.2"
    stage: int  # timm's numbering: 1 + the stage index (0 would be the stem)

    def to_dict(self) -> dict[str, int | str]:
        return {"num_chs": self.num_chs, "reduction": self.reduction, "module": self.module, "stage": self.stage}


class FeatureInfo(tuple[FeatureSpec, ...]):
    """The selected feature maps in output order, with timm's ``channels()`` / ``reduction()`` accessors."""

    def channels(self) -> list[int]:
        return [f.num_chs for f in self]

    def reduction(self) -> list[int]:
        return [f.reduction for f in self]

    def module_name(self) -> list[str]:
        return [f.module for f in self]


def feature_specs(plan: ArchPlan) -> tuple[FeatureSpec, ...]:
    """Every feature map of ``plan`` in timm's convention (see the module docstring); index = out_index."""
    specs: list[FeatureSpec] = []
    stage_strides = [b.stride for b in plan.blocks if b.index == 0]
    stage_channels = plan.stage_channels
    reduction = STEM_STRIDE
    if stage_strides and stage_strides[0] > 1:  # timm: then the stem's output is a feature map too
        specs.append(FeatureSpec(plan.stem_channels, reduction, "stem", 0))
    for s, stride in enumerate(stage_strides):
        reduction *= stride
        last = s + 1 == len(stage_strides)
        if last or stage_strides[s + 1] > 1:
            specs.append(FeatureSpec(stage_channels[s], reduction, f"stages.{s}", s + 1))
    return tuple(specs)


class EfficientNetFeatures(nn.Module):
    """The stem and stages of an :class:`EfficientNet`, returning the feature maps ``out_indices`` selects.

    Built from a (possibly pretrained) model: its stem and stages are taken over (shared, not copied)
    under the same state-dict keys (``stem.*``, ``stages.*``), so a features model holds the classifier's
    weights minus the head. Stages after the deepest selected map are dropped.
    """

    def __init__(self, model: EfficientNet, out_indices: Sequence[int] = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        specs = feature_specs(model.plan)
        if not out_indices:
            raise ValueError("out_indices is empty: select at least one feature map")
        bad = [i for i in out_indices if not -len(specs) <= i < len(specs)]
        if bad:
            raise ValueError(
                f"out_indices {bad} out of range: {model.variant.name} has {len(specs)} feature maps "
                f"(0..{len(specs) - 1})"
            )
        indices = tuple(i % len(specs) for i in out_indices)
        if list(indices) != sorted(set(indices)):
            raise ValueError(f"out_indices must be increasing and distinct, got {tuple(out_indices)}")
        self.variant = model.variant
        self.plan = model.plan
        self.input_size = model.input_size
        self.out_indices = indices
        self.feature_info = FeatureInfo(specs[i] for i in indices)
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}))  # timm: the preprocessing of the weights
        self.grad_checkpointing = model.grad_checkpointing
        # The stage index whose output is each selected map (-1: the stem's output).
        self._taps = tuple(-1 if specs[i].module == "stem" else int(specs[i].module.split(".")[1]) for i in indices)
        self.stem = model.stem
        self.stages = nn.Sequential(*list(model.stages)[: max(self._taps) + 1])

    @property
    def in_chans(self) -> int:
        return self.stem.conv.in_channels

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.in_chans)
        checkpointing = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        x = self.stem(x)
        out = [x] if -1 in self._taps else []
        for s, stage in enumerate(self.stages):
            x = checkpoint_blocks([stage], x) if checkpointing else stage(x)
            if s in self._taps:
                out.append(x)
        return out
