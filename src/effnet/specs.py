"""EfficientNet architecture as data.

One table of stages (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", Table 1: the B0 baseline) plus one record of
scaling factors per variant. :func:`build_plan` resolves both into the exact
list of blocks a model is built from; it is pure and has no torch dependency,
so the structure can be tested and printed without building a network.

Rounding rules follow the TensorFlow reference
(tensorflow/tpu models/official/efficientnet/efficientnet_model.py:
``round_filters`` and ``round_repeats``), which every published checkpoint
(TF, gen-efficientnet/timm, lukemelas) was trained or ported with.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, replace
from typing import Literal

from .errors import UnknownNameError

Activation = Literal["silu", "relu6"]


@dataclass(frozen=True)
class StageSpec:
    """One row of paper Table 1 (stages 2-8; the stem and head are separate)."""

    expand_ratio: int  # MBConv1 / MBConv6: width of the expansion relative to the input
    kernel_size: int  # depthwise kernel
    stride: int  # stride of the first block of the stage; the others use 1
    out_channels: int  # B0 channels before width scaling
    repeats: int  # B0 number of blocks before depth scaling
    se_ratio: float = 0.25  # squeeze-excite width relative to the block's input channels


# Paper Table 1, EfficientNet-B0 baseline network.
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=16, repeats=1),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=24, repeats=2),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, out_channels=40, repeats=2),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=80, repeats=3),
    StageSpec(expand_ratio=6, kernel_size=5, stride=1, out_channels=112, repeats=3),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, out_channels=192, repeats=4),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=320, repeats=1),
)
B0_STEM_CHANNELS = 32  # Table 1 stage 1: Conv3x3, stride 2
B0_HEAD_CHANNELS = 1280  # Table 1 stage 9: Conv1x1 before pooling and FC
STEM_KERNEL = 3
STEM_STRIDE = 2
CHANNEL_DIVISOR = 8  # TF reference: depth_divisor=8


@dataclass(frozen=True)
class Variant:
    """Scaling of the B0 baseline for one member of the family."""

    name: str
    width: float  # channel multiplier (paper: w)
    depth: float  # repeat multiplier (paper: d)
    resolution: int  # training / evaluation input size (paper: r)
    dropout: float  # dropout before the classifier
    activation: Activation = "silu"
    squeeze_excite: bool = True
    # EfficientNet-Lite (tensorflow/tpu models/official/efficientnet/lite/README.md):
    # ReLU6 instead of swish, no squeeze-excite, and the stem, the head and the
    # repeats of the first and last stage kept fixed while scaling.
    fixed_stem_head: bool = False
    fixed_first_last_repeats: bool = False
    drop_path_rate: float = 0.2  # stochastic depth at the last block (training only)


def _lite(name: str, width: float, depth: float, resolution: int, dropout: float) -> Variant:
    return Variant(
        name,
        width,
        depth,
        resolution,
        dropout,
        activation="relu6",
        squeeze_excite=False,
        fixed_stem_head=True,
        fixed_first_last_repeats=True,
    )


# (width, depth, resolution, dropout) from efficientnet_builder.efficientnet_params and
# lite/efficientnet_lite_builder.efficientnet_lite_params in tensorflow/tpu.
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("efficientnet-b0", 1.0, 1.0, 224, 0.2),
        Variant("efficientnet-b1", 1.0, 1.1, 240, 0.2),
        Variant("efficientnet-b2", 1.1, 1.2, 260, 0.3),
        Variant("efficientnet-b3", 1.2, 1.4, 300, 0.3),
        Variant("efficientnet-b4", 1.4, 1.8, 380, 0.4),
        Variant("efficientnet-b5", 1.6, 2.2, 456, 0.4),
        Variant("efficientnet-b6", 1.8, 2.6, 528, 0.5),
        Variant("efficientnet-b7", 2.0, 3.1, 600, 0.5),
        _lite("efficientnet-lite0", 1.0, 1.0, 224, 0.2),
        _lite("efficientnet-lite1", 1.0, 1.1, 240, 0.2),
        _lite("efficientnet-lite2", 1.1, 1.2, 260, 0.3),
        _lite("efficientnet-lite3", 1.2, 1.4, 280, 0.3),
        _lite("efficientnet-lite4", 1.4, 1.8, 300, 0.3),
    )
}


# timm's names for the same architectures -> effnet's. The one alias table: `tf_` models are timm's ports of
# the TF checkpoints (TF SAME padding), the plain ones its PyTorch-trained variants; the architecture is the
# same, and which padding/BN eps a model is built with comes from the weights record, not from the name.
TIMM_ALIASES: dict[str, str] = {
    **{"tf_" + name.replace("-", "_"): name for name in VARIANTS},
    **{name.replace("-", "_"): name for name in VARIANTS},
}


def get_variant(name: str) -> Variant:
    """Look up a variant by name: ``efficientnet-b5``, or a timm name from :data:`TIMM_ALIASES`
    (``tf_efficientnet_b5``, ``efficientnet_b5``); case and surrounding spaces are ignored."""
    key = name.strip().lower()
    key = TIMM_ALIASES.get(key, key)
    try:
        return VARIANTS[key]
    except KeyError:
        raise UnknownNameError(
            f"unknown model {name!r}; known models: {', '.join(VARIANTS)} (timm names such as "
            "'tf_efficientnet_b5' and weights names such as 'tf_efficientnet_b5.ap_in1k' work too)"
        ) from None


def list_models(pattern: str = "*") -> list[str]:
    """Model names matching the shell-style ``pattern`` (:mod:`fnmatch`, case-insensitive), in table order.

    ``list_models("*lite*")`` -> ``['efficientnet-lite0', ..., 'efficientnet-lite4']``. A timm-style pattern
    with underscores (``"efficientnet_b*"``) matches too.
    """
    pat = pattern.strip().lower().replace("_", "-").removeprefix("tf-")
    return [name for name in VARIANTS if fnmatch.fnmatchcase(name, pat)]


def round_channels(channels: int, multiplier: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """TF ``round_filters``: scale, round to a multiple of ``divisor``, never lose more than 10 %."""
    if multiplier == 1.0:
        return channels
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, multiplier: float) -> int:
    """TF ``round_repeats``: depth is always rounded up."""
    return int(math.ceil(multiplier * repeats))


@dataclass(frozen=True)
class BlockSpec:
    """One resolved MBConv block: everything needed to build it, nothing to infer."""

    stage: int  # index into the stage table (0-based)
    index: int  # index within the stage
    in_channels: int
    out_channels: int
    expand_ratio: int
    kernel_size: int
    stride: int
    se_channels: int  # 0 = no squeeze-excite

    @property
    def mid_channels(self) -> int:
        return self.in_channels * self.expand_ratio

    @property
    def has_expand(self) -> bool:
        return self.expand_ratio != 1

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class ArchPlan:
    """The resolved architecture of one variant."""

    variant: Variant
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int  # 0: no head convolution (a plan cut after a stage, :meth:`truncated`)

    @property
    def stage_repeats(self) -> tuple[int, ...]:
        counts: dict[int, int] = {}
        for b in self.blocks:
            counts[b.stage] = counts.get(b.stage, 0) + 1
        return tuple(counts[s] for s in sorted(counts))

    @property
    def stage_channels(self) -> tuple[int, ...]:
        last: dict[int, int] = {}
        for b in self.blocks:
            last[b.stage] = b.out_channels
        return tuple(last[s] for s in sorted(last))

    @property
    def num_features(self) -> int:
        """Channels of the pooled embedding the classifier reads: the head convolution's, or without one
        the last stage's."""
        if self.head_channels:
            return self.head_channels
        return self.blocks[-1].out_channels if self.blocks else self.stem_channels

    def truncated(self, embedding_stage: int) -> ArchPlan:
        """The plan up to and including stage ``embedding_stage`` (0-based), with no head convolution: the
        classifier then reads that stage's pooled output. Why a network would end early: intermediate
        features can transfer better than the last ones to a task unlike ImageNet's 1,000 classes
        (Yosinski et al. 2014, "How transferable are features in deep neural networks?"; Evci et al. 2022,
        "Head2Toe"), and :mod:`effnet.train.probe` chooses the stage by cross-validation."""
        count = len(self.stage_repeats)
        if not 0 <= embedding_stage < count:
            raise ValueError(
                f"embedding_stage must be a stage index of {self.variant.name}, 0..{count - 1}, got {embedding_stage}"
            )
        blocks = tuple(b for b in self.blocks if b.stage <= embedding_stage)
        return replace(self, blocks=blocks, head_channels=0)


def build_plan(variant: Variant, stages: tuple[StageSpec, ...] = B0_STAGES) -> ArchPlan:
    """Resolve the stage table and a variant's scaling into concrete blocks."""
    width = variant.width

    def scale_repeats(stage_index: int, repeats: int) -> int:
        is_end = stage_index in (0, len(stages) - 1)
        if variant.fixed_first_last_repeats and is_end:
            return repeats
        return round_repeats(repeats, variant.depth)

    stem = B0_STEM_CHANNELS if variant.fixed_stem_head else round_channels(B0_STEM_CHANNELS, width)
    head = B0_HEAD_CHANNELS if variant.fixed_stem_head else round_channels(B0_HEAD_CHANNELS, width)

    blocks: list[BlockSpec] = []
    in_ch = stem
    for s, spec in enumerate(stages):
        out_ch = round_channels(spec.out_channels, width)
        for i in range(scale_repeats(s, spec.repeats)):
            se = max(1, int(in_ch * spec.se_ratio)) if variant.squeeze_excite and spec.se_ratio > 0 else 0
            blocks.append(
                BlockSpec(
                    stage=s,
                    index=i,
                    in_channels=in_ch,
                    out_channels=out_ch,
                    expand_ratio=spec.expand_ratio,
                    kernel_size=spec.kernel_size,
                    stride=spec.stride if i == 0 else 1,
                    se_channels=se,
                )
            )
            in_ch = out_ch
    return ArchPlan(variant=variant, stem_channels=stem, blocks=tuple(blocks), head_channels=head)
