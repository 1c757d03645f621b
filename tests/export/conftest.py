"""Fixtures for the export tests: one B5 with random but well-conditioned weights, exported once per session.

The B5 fixture randomizes every batch norm (gamma, beta) and then sets its running
statistics from one pass over random pixels, so each BN has non-trivial mean/var
and folding is really exercised, while the logits stay a few units wide. (Random
running statistics alone make B5's activations grow to ~1e6 over 39 blocks: the
softmax is then one-hot and probability parity says nothing.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import effnet
from effnet.backends import ModelSource, create_backend
from effnet.source import resolve_source
from effnet.weights.records import IMAGENET_MEAN, IMAGENET_STD

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def _random_pixels(generator: torch.Generator, n: int, size: int) -> torch.Tensor:
    x = torch.randint(0, 256, (n, 3, size, size), generator=generator).float()
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def calibrated_random_b5(seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = effnet.create_model("efficientnet-b5")
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
            bn.momentum = None  # cumulative average: one pass sets the statistics
            bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(_random_pixels(g, 2, 456))
    model.classifier.weight.data.mul_(10.0)  # logits a few units wide: a peaked, informative softmax
    return model.eval()


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory) -> Path:
    """The backends' export cache for this session (never the user's)."""
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def b5_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("b5") / "b5_calibrated_random.pth"
    torch.save(calibrated_random_b5().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def b5_source(b5_checkpoint) -> ModelSource:
    return resolve_source("efficientnet-b5", b5_checkpoint)


@pytest.fixture(scope="session")
def b5_pixels() -> np.ndarray:
    """Two uint8 RGB crops at 456, like the record's resize + crop produce."""
    return np.random.default_rng(0).integers(0, 256, (2, 456, 456, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def b5_torch(b5_source):
    return create_backend("torch", b5_source)


@pytest.fixture(scope="session")
def b5_reference(b5_torch, b5_pixels) -> dict[str, np.ndarray]:
    """PyTorch eager (unfolded, F.pad SAME path) logits and probabilities: the reference."""
    logits = b5_torch.logits(b5_pixels).numpy()
    probs = b5_torch(b5_pixels)
    assert np.ptp(logits) > 5  # a fixture that would make the parity tests vacuous is a bug
    return {"logits": logits, "probs": probs}


@pytest.fixture(scope="session")
def b5_ort(b5_source, export_cache):
    return create_backend("onnxruntime", b5_source, cache_dir=export_cache)


@pytest.fixture(scope="session")
def b5_ov(b5_source, export_cache):
    return create_backend("openvino", b5_source, cache_dir=export_cache)


@pytest.fixture(scope="session")
def lite0_source(lite0_checkpoint) -> ModelSource:
    return resolve_source("efficientnet-lite0")
