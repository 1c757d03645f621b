"""Helpers shared by the test modules (import as `from tests.testutils import ...`)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
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


def write_finetuned_model(path: Path, classes: tuple[str, ...], seed: int = 0) -> Path:
    """What `effnet train` leaves in RUN/model.safetensors, made in a second: an effnet-native Lite0 file with
    its own class names (random weights) and 64 px crops, so that tests using it run fast."""
    import effnet
    from effnet.weights.native import NativeInfo, save_native
    from effnet.weights.records import Preprocess

    torch.manual_seed(seed)
    model = effnet.create_model("efficientnet-lite0", num_classes=len(classes))
    info = NativeInfo(
        model="efficientnet-lite0",
        preprocess=Preprocess(input_size=64, resize_size=73, mean=(127.0,) * 3, std=(128.0,) * 3),
        labels=classes,
        num_classes=len(classes),
        source="tests: a fine-tuned model's stand-in",
    )
    return save_native(model.state_dict(), path, info)


def feed_fifo(path: Path, data: bytes, deadline_s: float = 60) -> threading.Thread:
    """Write ``data`` into the FIFO at ``path`` once a reader opens it; gives up (no hang) if none ever does."""

    def feed() -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader has it open
            except OSError:
                time.sleep(0.02)
                continue
            os.set_blocking(fd, True)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@functools.cache
def _lite0_state() -> dict[str, torch.Tensor]:
    import effnet

    return effnet.create_model("efficientnet-lite0", pretrained=True).state_dict()


def write_fine_tuned_lite0(path: Path, classes: dict[str, str]) -> Path:
    """An effnet-native Lite0 file like `effnet train --freeze body` writes: the real ImageNet body and a head
    whose rows are the pretrained classifier's rows of the given synsets (``{synset: class name}``), so it
    really tells those classes apart. Two such files with different classes are two fine-tuning runs."""
    from effnet.labels import synset_index
    from effnet.weights.native import NativeInfo, save_native
    from effnet.weights.records import default_record

    record = default_record("efficientnet-lite0")
    state = dict(_lite0_state())
    rows = [synset_index()[s] for s in classes]
    state["classifier.weight"] = state["classifier.weight"][rows].clone()
    state["classifier.bias"] = state["classifier.bias"][rows].clone()
    info = NativeInfo(
        model="efficientnet-lite0",
        preprocess=record.preprocess,
        labels=tuple(classes.values()),
        num_classes=len(classes),
        padding=record.padding,
        bn_eps=record.bn_eps,
        source=record.name,
    )
    return save_native(state, path, info)
