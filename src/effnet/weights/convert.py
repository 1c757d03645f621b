"""Convert foreign state dicts to effnet's parameter names with explicit rename tables.

Each table maps a *module* name of the foreign implementation to the effnet
module it corresponds to, built from the resolved architecture (so a block with
no expand convolution gets no expand entries). Names are never matched by
position. PyTorch ports keep PyTorch's OIHW layout, so the layout transform is
the identity for every format here; it is a separate step so a Keras (HWIO)
converter would only add its own.

Key names:
- timm / gen-efficientnet-pytorch: ``conv_stem``, ``bn1``, ``blocks.S.I.*``, ``conv_head``, ``bn2``, ``classifier``.
- lukemelas efficientnet_pytorch: ``_conv_stem``, ``_bn0``, ``_blocks.N.*`` (flat index), ``_conv_head``,
  ``_bn1``, ``_fc``.
- torchvision ``efficientnet_b0..b7``: ``features.0.{0,1}`` (stem conv, bn), ``features.{S+1}.{I}.block.*``
  (one ``nn.Sequential`` per block: [expand,] depthwise, SE, project), ``features.8.{0,1}`` (head),
  ``classifier.1`` (``classifier.0`` is the dropout).

Keras ``.h5`` files are not state dicts; :mod:`effnet.weights.keras` reads them with its own name table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import CheckpointError
from ..specs import STEM_KERNEL, ArchPlan, BlockSpec
from .records import KeyFormat

# Parameter / buffer names per module kind.
_CONV = ("weight",)
_CONV_BIAS = ("weight", "bias")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LINEAR = ("weight", "bias")
_OPTIONAL = ("num_batches_tracked",)  # a training counter; absent from many ported checkpoints
OPTIONAL_TENSORS = _OPTIONAL  # tensor names a checkpoint may leave out


@dataclass(frozen=True)
class KeyScheme:
    """How one foreign implementation names EfficientNet's modules (foreign name -> effnet name)."""

    top: Mapping[str, str]  # stem, head and classifier modules
    block_prefix: Callable[[int, BlockSpec], str]  # (flat index, block) -> foreign block prefix
    expand_block: Mapping[str, str]  # modules of a block with an expand conv
    no_expand_block: Mapping[str, str]  # modules of a block without one (expand ratio 1)
    squeeze_excite: Mapping[str, str]
    # Where a block without an expand conv keeps its squeeze-excite, when that differs (torchvision numbers
    # the layers of a block, so SE is layer 1 there and layer 2 in an expanding block).
    no_expand_squeeze_excite: Mapping[str, str] | None = None


SCHEMES: dict[str, KeyScheme] = {
    # gen-efficientnet-pytorch / timm: InvertedResidual and DepthwiseSeparableConv name the same
    # layers differently (conv_pw is the expansion in one, the projection in the other).
    "timm": KeyScheme(
        top={
            "conv_stem": "stem.conv",
            "bn1": "stem.bn",
            "conv_head": "head.conv",
            "bn2": "head.bn",
            "classifier": "classifier",
        },
        block_prefix=lambda n, b: f"blocks.{b.stage}.{b.index}",
        expand_block={
            "conv_pw": "expand.conv",
            "bn1": "expand.bn",
            "conv_dw": "depthwise.conv",
            "bn2": "depthwise.bn",
            "conv_pwl": "project.conv",
            "bn3": "project.bn",
        },
        no_expand_block={
            "conv_dw": "depthwise.conv",
            "bn1": "depthwise.bn",
            "conv_pw": "project.conv",
            "bn2": "project.bn",
        },
        squeeze_excite={"se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand"},
    ),
    # lukemelas efficientnet_pytorch: one flat block index, one MBConvBlock class.
    "lukemelas": KeyScheme(
        top={
            "_conv_stem": "stem.conv",
            "_bn0": "stem.bn",
            "_conv_head": "head.conv",
            "_bn1": "head.bn",
            "_fc": "classifier",
        },
        block_prefix=lambda n, b: f"_blocks.{n}",
        expand_block={
            "_expand_conv": "expand.conv",
            "_bn0": "expand.bn",
            "_depthwise_conv": "depthwise.conv",
            "_bn1": "depthwise.bn",
            "_project_conv": "project.conv",
            "_bn2": "project.bn",
        },
        no_expand_block={
            "_depthwise_conv": "depthwise.conv",
            "_bn1": "depthwise.bn",
            "_project_conv": "project.conv",
            "_bn2": "project.bn",
        },
        squeeze_excite={"_se_reduce": "se.reduce", "_se_expand": "se.expand"},
    ),
    # torchvision/models/efficientnet.py: MBConv.block = Sequential([Conv2dNormActivation expand,]
    # Conv2dNormActivation depthwise, SqueezeExcitation (fc1, fc2), Conv2dNormActivation project);
    # a Conv2dNormActivation is Sequential(conv, bn[, act]). features.0 is the stem, features.1-7 the seven
    # stages of paper Table 1, features.8 the head conv; classifier = Sequential(Dropout, Linear).
    "torchvision": KeyScheme(
        top={
            "features.0.0": "stem.conv",
            "features.0.1": "stem.bn",
            "features.8.0": "head.conv",
            "features.8.1": "head.bn",
            "classifier.1": "classifier",
        },
        block_prefix=lambda n, b: f"features.{b.stage + 1}.{b.index}",
        expand_block={
            "block.0.0": "expand.conv",
            "block.0.1": "expand.bn",
            "block.1.0": "depthwise.conv",
            "block.1.1": "depthwise.bn",
            "block.3.0": "project.conv",
            "block.3.1": "project.bn",
        },
        no_expand_block={
            "block.0.0": "depthwise.conv",
            "block.0.1": "depthwise.bn",
            "block.2.0": "project.conv",
            "block.2.1": "project.bn",
        },
        squeeze_excite={"block.2.fc1": "se.reduce", "block.2.fc2": "se.expand"},
        no_expand_squeeze_excite={"block.1.fc1": "se.reduce", "block.1.fc2": "se.expand"},
    ),
}


def _tensors(effnet_module: str) -> tuple[str, ...]:
    if effnet_module == "classifier":
        return _LINEAR
    if effnet_module.startswith("se.") or ".se." in effnet_module:
        return _CONV_BIAS
    return _BN if effnet_module.endswith(".bn") else _CONV


def _module_table(plan: ArchPlan, key_format: KeyFormat) -> dict[str, str]:
    """foreign module name -> effnet module name, for every module of ``plan``."""
    try:
        scheme = SCHEMES[key_format]
    except KeyError:
        raise CheckpointError(f"no rename table for key format {key_format!r}") from None
    table = dict(scheme.top)
    for n, b in enumerate(plan.blocks):
        src, dst = scheme.block_prefix(n, b), f"stages.{b.stage}.{b.index}"
        names = dict(scheme.expand_block if b.has_expand else scheme.no_expand_block)
        if b.se_channels:
            se = scheme.squeeze_excite
            if not b.has_expand and scheme.no_expand_squeeze_excite is not None:
                se = scheme.no_expand_squeeze_excite
            names |= se
        table |= {f"{src}.{s}": f"{dst}.{d}" for s, d in names.items()}
    return table


def param_shapes(plan: ArchPlan, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the effnet model built from ``plan`` and its shape, from the plan alone (no torch module).

    Lets a converter tell which variant a foreign file fits without building thirteen networks;
    ``tests/unit`` checks it against :class:`effnet.model.EfficientNet`'s own state dict.
    """

    def bn(name: str, c: int) -> dict[str, tuple[int, ...]]:
        return {f"{name}.{t}": (() if t == "num_batches_tracked" else (c,)) for t in _BN}

    shapes: dict[str, tuple[int, ...]] = {"stem.conv.weight": (plan.stem_channels, 3, STEM_KERNEL, STEM_KERNEL)}
    shapes |= bn("stem.bn", plan.stem_channels)
    for b in plan.blocks:
        p, mid = f"stages.{b.stage}.{b.index}", b.mid_channels
        if b.has_expand:
            shapes[f"{p}.expand.conv.weight"] = (mid, b.in_channels, 1, 1)
            shapes |= bn(f"{p}.expand.bn", mid)
        shapes[f"{p}.depthwise.conv.weight"] = (mid, 1, b.kernel_size, b.kernel_size)
        shapes |= bn(f"{p}.depthwise.bn", mid)
        if b.se_channels:
            shapes |= {f"{p}.se.reduce.weight": (b.se_channels, mid, 1, 1), f"{p}.se.reduce.bias": (b.se_channels,)}
            shapes |= {f"{p}.se.expand.weight": (mid, b.se_channels, 1, 1), f"{p}.se.expand.bias": (mid,)}
        shapes[f"{p}.project.conv.weight"] = (b.out_channels, mid, 1, 1)
        shapes |= bn(f"{p}.project.bn", b.out_channels)
    if plan.head_channels:  # 0: a plan cut after a stage has no head convolution
        shapes["head.conv.weight"] = (plan.head_channels, plan.blocks[-1].out_channels, 1, 1)
        shapes |= bn("head.bn", plan.head_channels)
    if num_classes > 0:
        shapes |= {"classifier.weight": (num_classes, plan.num_features), "classifier.bias": (num_classes,)}
    return shapes


def rename_table(plan: ArchPlan, key_format: KeyFormat) -> dict[str, str]:
    """Full tensor-level table: foreign key -> effnet key (identity for ``effnet``)."""
    if key_format == "effnet":
        return {}
    return {f"{src}.{p}": f"{dst}.{p}" for src, dst in _module_table(plan, key_format).items() for p in _tensors(dst)}


_PREFIXES: dict[KeyFormat, tuple[str, ...]] = {
    "effnet": ("stem.", "stages.", "head."),
    "timm": ("conv_stem.", "blocks.", "conv_head."),
    "lukemelas": ("_conv_stem.", "_blocks.", "_conv_head."),
    "torchvision": ("features.",),
}


def detect_key_format(state: Mapping[str, torch.Tensor]) -> KeyFormat:
    """Tell the naming scheme of a state dict by which family's module prefixes most keys use."""
    votes = {fmt: sum(k.startswith(prefixes) for k in state) for fmt, prefixes in _PREFIXES.items()}
    fmt, count = max(votes.items(), key=lambda kv: kv[1])
    if count == 0:
        sample = ", ".join(list(state)[:5])
        raise CheckpointError(
            "unrecognized checkpoint: expected an EfficientNet state dict with effnet ('stem.*', 'stages.*'), "
            "timm/gen-efficientnet ('conv_stem.*', 'blocks.*'), lukemelas ('_conv_stem.*', '_blocks.*') or "
            "torchvision ('features.*') keys; "
            f"first keys: {sample}"
        )
    return fmt


def unwrap(obj: object) -> dict[str, torch.Tensor]:
    """Take the state dict out of common checkpoint containers and DataParallel prefixes."""
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict of tensors")
    state = dict(obj)
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint entries that are not named tensors: {bad[:5]}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def convert_state_dict(
    state: Mapping[str, torch.Tensor], plan: ArchPlan, key_format: KeyFormat | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename ``state`` to effnet keys.

    Returns the converted dict and the foreign keys the table did not cover
    (reported as "unexpected" by the strict load, under their original names).
    """
    fmt = key_format or detect_key_format(state)
    if fmt == "effnet":
        return dict(state), []
    table = rename_table(plan, fmt)
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for k, v in state.items():
        if k in table:
            out[table[k]] = v  # layout: PyTorch ports are already OIHW
        else:
            unmapped.append(k)
    return out, unmapped


def to_foreign(state: Mapping[str, torch.Tensor], plan: ArchPlan, key_format: KeyFormat) -> dict[str, torch.Tensor]:
    """Inverse rename: effnet keys -> ``key_format`` keys (to feed reference implementations)."""
    inverse = {v: k for k, v in rename_table(plan, key_format).items()}
    return {inverse.get(k, k): v for k, v in state.items()}
