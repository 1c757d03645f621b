"""The saliency sanity checks of issue 21, shared by tests/explain and benchmarks/explain_sanity.py (which runs
them on all 100 sample images): quadrant composites and the model-randomization test of Adebayo et al. (2018),
"Sanity Checks for Saliency Maps", NeurIPS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")


def composite(photo: Path, size: int, quadrant: int, canvas: str, seed: int) -> np.ndarray:
    """uint8 [size, size, 3]: ``photo`` (centre-cropped square, shrunk to half the side) pasted into
    ``QUADRANTS[quadrant]`` of a plain grey-ish or a uniform-noise canvas."""
    rng = np.random.default_rng(seed)
    if canvas == "plain":
        out = np.empty((size, size, 3), np.uint8)
        out[:] = rng.integers(90, 200, size=3, dtype=np.uint8)  # one flat colour
    elif canvas == "noise":
        out = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    else:
        raise ValueError(canvas)
    with Image.open(photo) as im:
        im = im.convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        half = size // 2
        small = np.asarray(im.crop((left, top, left + side, top + side)).resize((half, half), Image.BICUBIC))
    y, x = (quadrant // 2) * half, (quadrant % 2) * half
    out[y : y + half, x : x + half] = small
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (Grad-CAM maps have many exact zeros)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        v = v.ravel()
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return ((ends - (counts - 1) / 2.0)[inverse]).astype(np.float64)

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def randomize_top(model: torch.nn.Module, stages: int = 2, seed: int = 0) -> None:
    """Re-initialize the last ``stages`` stages, the head conv and the classifier (cascading randomization
    from the top, Adebayo et al. 2018, sec. 3.1): fresh Kaiming convs, unit BN, a fresh linear layer."""
    g = torch.Generator().manual_seed(seed)
    parts = [*list(model.stages)[-stages:], model.head, model.classifier]
    with torch.no_grad():
        for part in parts:
            for m in part.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0)
                    m.weight.fill_(1.0)
                    m.bias.zero_()
