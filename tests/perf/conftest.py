"""Fixtures for the fast-path tests: Lite0 crops of the 100 sample images and their fp32 reference answers.

Correctness only, never timing. fp32 paths are compared by logits; bf16 and int8 by top-1 agreement
with fp32 on real weights (Lite0, the only real weights available offline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.perf.perf_helpers import run_batches


@pytest.fixture(scope="session")
def lite0_source(lite0_checkpoint: Path):
    from effnet.source import resolve_source

    return resolve_source("efficientnet-lite0", progress=False)


@pytest.fixture(scope="session")
def sample_crops(lite0_source, sample_images: list[Path]) -> np.ndarray:
    from effnet.preprocess import load_image, resize_crop

    return np.stack([np.asarray(resize_crop(load_image(p), lite0_source.preprocess)) for p in sample_images])


@pytest.fixture(scope="session")
def fp32_probs(lite0_source, sample_crops: np.ndarray) -> np.ndarray:
    """Probabilities of the reference path: torch fp32 eager."""
    from effnet.backends import create_backend

    return run_batches(create_backend("torch", lite0_source), sample_crops)
