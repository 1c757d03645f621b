"""Inference-time transforms of an :class:`~effnet.model.EfficientNet`, each checked against fp32 eager in tests.

- :func:`fold_batchnorm`: every ``conv -> BN`` becomes one conv with a bias (folded in float64).
  EfficientNet-B5 has 117 BN layers; folding removes as many passes over the activations.
- :func:`to_channels_last`: NHWC weights, so oneDNN runs its blocked NHWC kernels without reorders
  between layers (the depthwise and 1x1 convs dominate B5 and are memory bound).
- :func:`compile_model`: ``torch.compile`` (inductor) with freezing: weights become constants,
  elementwise ops (SiLU, SE gate, residual add, pads) fuse into neighbours.
- :class:`Bf16Model`: bfloat16 weights and activations in the stem and blocks, where the CPU has native
  bf16 dot products (AVX512_BF16 / AMX, :func:`bf16_supported`); elsewhere bf16 is emulated and slower
  than fp32, so it is refused. On CUDA it always runs (tensor cores), and :class:`HalfBodyModel` with
  ``torch.float16`` gives the fp16 variant (CUDA only: CPUs have no fast fp16 convolutions).

:func:`optimize_for_inference` chains them; the result is a new module, the input model is left untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .errors import EffnetError
from .layers import ConvBnAct

Precision = Literal["fp32", "bf16", "fp16"]
# Stem and blocks in these dtypes, head in fp32 (HalfBodyModel).
LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`ConvBnAct`'s BN folded into its conv (eval statistics).

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``, computed
    in float64 so that the fold adds no rounding beyond the final cast. The conv keeps its class (TF
    SAME padding included); the BN becomes an ``nn.Identity``. The input model is left untouched.
    A folded model no longer tracks statistics, so it is for inference only.
    """
    folded = copy.deepcopy(model).eval()
    count = 0
    for module in folded.modules():
        if not (isinstance(module, ConvBnAct) and isinstance(module.bn, nn.BatchNorm2d)):
            continue
        conv, bn = module.conv, module.bn
        if bn.running_mean is None or bn.running_var is None:
            raise EffnetError(f"cannot fold {bn}: it tracks no running statistics")
        dtype = conv.weight.dtype
        n = bn.num_features
        f64 = {"dtype": torch.float64, "device": conv.weight.device}
        gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones(n, **f64)
        beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros(n, **f64)
        scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
        conv.weight = nn.Parameter(
            (conv.weight.detach().double() * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False
        )
        conv.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + beta).to(dtype), requires_grad=False)
        module.bn = nn.Identity()  # type: ignore[assignment]  # the BN is folded into the conv
        count += 1
    if count == 0:
        raise EffnetError(f"fold_batchnorm found no conv + batch-norm pair in {type(model).__name__}")
    return folded


def to_channels_last(model: nn.Module) -> nn.Module:
    """4-D weights in NHWC order (in place; returns the model). Feed it channels_last inputs too."""
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs


def bf16_supported() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512_BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


class HalfBodyModel(nn.Module):
    """An EfficientNet whose stem and MBConv stages run in ``dtype`` (bf16 or fp16), head and classifier in fp32.

    Takes and returns fp32 (the cast happens inside). Whole-stage low precision rather than autocast:
    autocast keeps the elementwise ops (SiLU, SE gate, residual adds) in fp32 and casts around every
    conv, which costs more memory traffic than it saves on this memory-bound network. The head (1x1 conv
    to 1280/2048 channels, pooling, classifier) stays fp32 because that is where the logits are formed:
    on Lite0's real weights it lifts bf16's top-1 agreement with fp32 from 96 to 98 of 100 sample images,
    for under 3 % of B5's multiply-adds. No speed check here: :class:`Bf16Model` refuses emulated CPU bf16,
    and the torch backend runs fp16 on CUDA only.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        for part in ("stem", "stages", "head", "forward_head"):
            if not hasattr(model, part):
                raise EffnetError(
                    f"{type(self).__name__} needs an EfficientNet (stem, stages, head), got {type(model).__name__}"
                )
        if dtype not in LOW_PRECISION.values():
            raise EffnetError(f"the body runs in bfloat16 or float16, got {dtype}")
        model.stem.to(dtype)
        model.stages.to(dtype)
        self.dtype = dtype
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        h = m.stages(m.stem(x.to(self.dtype)))
        return m.forward_head(m.head(h.float()))


class Bf16Model(HalfBodyModel):
    """:class:`HalfBodyModel` in bfloat16; on the CPU only where oneDNN has native bf16 (else refused)."""

    def __init__(self, model: nn.Module) -> None:
        for part in ("stem", "stages", "head", "forward_head"):
            if not hasattr(model, part):
                raise EffnetError(f"Bf16Model needs an EfficientNet (stem, stages, head), got {type(model).__name__}")
        if all(p.device.type == "cpu" for p in model.parameters()) and not bf16_supported():
            raise EffnetError(
                "bf16 needs a CPU with native bfloat16 support (AVX512_BF16 or AMX); this one has none, "
                "and emulated bf16 is slower than fp32: use --precision fp32"
            )
        super().__init__(model, torch.bfloat16)


def compile_model(
    model: nn.Module, *, freezing: bool = True, dynamic: bool = False, mode: str | None = None
) -> Callable:
    """``torch.compile`` with inductor; ``freezing`` folds the (no-grad) weights into the compiled graph.

    Compilation happens on the first call (tens of seconds to minutes for B5 on a small CPU) and again
    for each new input shape unless ``dynamic``. Call it under ``torch.inference_mode()``/``no_grad``.
    ``mode`` is torch.compile's (None: default; ``"reduce-overhead"`` adds CUDA graphs on CUDA).
    ``"max-autotune"`` is accepted but costs minutes of benchmarking kernels at the first call.
    """
    import torch._inductor.config as inductor_config

    # Freezing is a process-wide inductor switch; it only affects graphs compiled without autograd.
    inductor_config.freezing = freezing
    try:
        return torch.compile(model, backend="inductor", dynamic=dynamic, mode=mode)
    except RuntimeError as e:  # e.g. no C++ compiler for the CPU kernels
        raise EffnetError(f"torch.compile is not usable here: {e}") from None


@dataclass(frozen=True)
class InferenceConfig:
    """Which transforms :func:`optimize_for_inference` applies; ``describe()`` names them for reports."""

    precision: Precision = "fp32"
    fold_bn: bool = True
    channels_last: bool = True
    compile: bool = False
    compile_mode: str | None = None  # torch.compile's mode; None is its default

    def describe(self) -> str:
        parts: list[str] = [self.precision]
        if self.fold_bn:
            parts.append("bn-folded")
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append(f"compiled({self.compile_mode})" if self.compile_mode else "compiled")
        else:
            parts.append("eager")
        return " ".join(parts)


def optimize_for_inference(model: nn.Module, config: InferenceConfig = InferenceConfig()) -> nn.Module | Callable:
    """A new, eval-mode module (or compiled callable) with the transforms of ``config`` applied."""
    if config.precision not in ("fp32", *LOW_PRECISION):
        raise EffnetError(f"precision must be fp32, bf16 or fp16 for PyTorch, got {config.precision!r}")
    out = fold_batchnorm(model) if config.fold_bn else copy.deepcopy(model).eval()
    if config.channels_last:
        to_channels_last(out)
    if config.precision == "bf16":
        out = Bf16Model(out)
    elif config.precision == "fp16":
        if all(p.device.type == "cpu" for p in out.parameters()):
            raise EffnetError("fp16 runs on CUDA only (CPUs have no fast fp16 convolutions): use bf16 or fp32")
        out = HalfBodyModel(out, torch.float16)
    for p in out.parameters():
        p.requires_grad_(False)
    return compile_model(out, mode=config.compile_mode) if config.compile else out
