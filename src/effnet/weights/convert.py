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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import CheckpointError
from ..specs import ArchPlan, BlockSpec
from .records import KeyFormat

# Parameter / buffer names per module kind.
_CONV = ("weight",)
_CONV_BIAS = ("weight", "bias")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LINEAR = ("weight", "bias")
_OPTIONAL = ("num_batches_tracked",)  # a training counter; absent from many ported checkpoints


@dataclass(frozen=True)
class KeyScheme:
    """How one foreign implementation names EfficientNet's modules (foreign name -> effnet name)."""

    top: Mapping[str, str]  # stem, head and classifier modules
    block_prefix: Callable[[int, BlockSpec], str]  # (flat index, block) -> foreign block prefix
    expand_block: Mapping[str, str]  # modules of a block with an expand conv
    no_expand_block: Mapping[str, str]  # modules of a block without one (expand ratio 1)
    squeeze_excite: Mapping[str, str]


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
            names |= scheme.squeeze_excite
        table |= {f"{src}.{s}": f"{dst}.{d}" for s, d in names.items()}
    return table


def rename_table(plan: ArchPlan, key_format: KeyFormat) -> dict[str, str]:
    """Full tensor-level table: foreign key -> effnet key (identity for ``effnet``)."""
    if key_format == "effnet":
        return {}
    return {f"{src}.{p}": f"{dst}.{p}" for src, dst in _module_table(plan, key_format).items() for p in _tensors(dst)}


_PREFIXES: dict[KeyFormat, tuple[str, ...]] = {
    "effnet": ("stem.", "stages.", "head."),
    "timm": ("conv_stem.", "blocks.", "conv_head."),
    "lukemelas": ("_conv_stem.", "_blocks.", "_conv_head."),
}


def detect_key_format(state: Mapping[str, torch.Tensor]) -> KeyFormat:
    """Tell the naming scheme of a state dict by which family's module prefixes most keys use."""
    votes = {fmt: sum(k.startswith(prefixes) for k in state) for fmt, prefixes in _PREFIXES.items()}
    fmt, count = max(votes.items(), key=lambda kv: kv[1])
    if count == 0:
        sample = ", ".join(list(state)[:5])
        raise CheckpointError(
            "unrecognized checkpoint: expected an EfficientNet state dict with effnet ('stem.*', 'stages.*'), "
            "timm/gen-efficientnet ('conv_stem.*', 'blocks.*') or lukemelas ('_conv_stem.*', '_blocks.*') keys; "
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
