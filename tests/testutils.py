"""Helpers shared by the test modules (import as `from tests.testutils import ...`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
SAMPLE = SHARED / "imagenet" / "sample"
EXAMPLES = REPO / "examples"


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


def run_cli(
    *args: str,
    env: dict | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
    mounts: str | None = None,
    after: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run `python -m effnet ...` in a subprocess, as a user would.

    ``mounts``: shell commands (``mount -t tmpfs -o ro tmpfs DIR``...) run first in a private mount namespace
    (``unshare --map-root-user --mount``: no privileges needed, nothing visible outside the process), so the
    command meets a read-only or full filesystem. A read-only mount stops root too, unlike chmod. ``after``:
    shell commands run in that namespace once effnet has exited (their output follows effnet's stdout); the
    exit status stays effnet's.
    """
    full_env = {**os.environ, **(env or {})}
    command = [sys.executable, "-m", "effnet", *args]
    if mounts is not None:
        script = f'{mounts}\nset +e\n"$@"\nstatus=$?\n{after}\nexit $status'
        command = ["unshare", "--map-root-user", "--mount", "sh", "-ec", script, "sh", *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd or REPO,
    )
