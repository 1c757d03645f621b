"""Helpers shared by the tests/perf modules (import as `from tests.perf.perf_helpers import ...`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from effnet.model import EfficientNet
from effnet.specs import Variant
from tests.testutils import EXAMPLES


def run_batches(backend, crops: np.ndarray, batch: int = 20) -> np.ndarray:
    return np.concatenate([backend(crops[i : i + batch]) for i in range(0, len(crops), batch)])


def example_batch(size: int) -> torch.Tensor:
    """The two example photos (chelsea, coffee), resized to ``size`` and normalized: [2, 3, size, size].

    Real images rather than noise: two noise images have the same statistics, so a random network's
    pooled logits barely tell them apart, and a broken transform could hide in that.
    """
    from PIL import Image

    images = [
        Image.open(EXAMPLES / n).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        for n in ("chelsea.png", "coffee.png")
    ]
    x = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float()
    return ((x - 127.5) / 64.0).contiguous()


def calibrated_random_model(variant: Variant | str, size: int, *, affine: bool) -> EfficientNet:
    """Random weights that behave like trained ones: normalized activations, input-dependent logits.

    Random BN (as in tests/conftest.py) makes a deep network chaotic: B5's logits reach 1e6 and
    two float32 summation orders disagree by 0.1 %, which tests float32 rather than a transform.
    Here one train-mode pass over the example photos at ``size`` (momentum 1, no stochastic depth)
    sets every BN's running statistics, so folding has non-trivial mean and variance to fold.
    ``affine`` also draws gamma in [0.8, 1.2] and beta in [-0.1, 0.1]; B5 stays well-conditioned
    only without it (measured: logits ~1 vs ~300, fold delta 1e-5 vs 8e-4), so the affine terms
    are tested on the small model.
    """
    torch.manual_seed(0)
    model = EfficientNet(variant, drop_path_rate=0.0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(example_batch(size))
    g = torch.Generator().manual_seed(0)
    for m in bns:
        m.momentum = 0.01
        if affine:
            m.weight.data.copy_(0.8 + 0.4 * torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
    return model.eval()


def tiny_model() -> EfficientNet:
    """A B-family network (SiLU, squeeze-excite, asymmetric SAME pads at 64 px) with one block per stage.

    Small enough that torch.compile builds it in seconds rather than minutes.
    """
    variant = Variant("efficientnet-tiny-test", width=0.25, depth=0.1, resolution=64, dropout=0.0)
    return calibrated_random_model(variant, 64, affine=True)


def max_rel_delta(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| relative to max(1, max|b|): for logits of order 1 this is the plain max|delta|."""
    return (a.float() - b.float()).abs().max().item() / max(1.0, b.float().abs().max().item())


def top1_agreement(probs: np.ndarray, reference: np.ndarray) -> tuple[float, list[int]]:
    a, r = probs.argmax(1), reference.argmax(1)
    return float((a == r).mean()), np.nonzero(a != r)[0].tolist()


def fp32_margin(reference: np.ndarray, index: int) -> float:
    """Top-1 minus top-2 probability of the fp32 reference for one image: how close a call it was."""
    top = np.sort(reference[index])[::-1]
    return float(top[0] - top[1])
