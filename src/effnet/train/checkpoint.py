"""Training checkpoints: everything a run needs to continue exactly, written atomically every epoch.

``RUN/checkpoint.pt`` holds the model, the weight EMA, the optimizer state, the step and epoch
counters, the best epoch so far and the per-epoch history, as tensors and plain containers only, so
it loads with ``torch.load(weights_only=True)``. No RNG state is stored: every random choice of an
epoch is seeded from (seed, epoch), so the state at an epoch boundary determines the rest of the run.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..fileio import atomic_write

__all__ = ["CHECKPOINT", "LOG", "MODEL", "FORMAT", "save_checkpoint", "load_checkpoint", "write_log"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
MODEL = "model.safetensors"
FORMAT = "effnet.train/1"


def _atomic(target: Path, write: Any) -> None:
    """``write(tmp_path)``, then rename over ``target``: a reader sees the old file or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, write, "the training output")  # the shared writer: umask-respecting modes


def save_checkpoint(run: Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) to ``run/checkpoint.pt``, atomically."""
    target = run / CHECKPOINT
    _atomic(target, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))
    return target


def load_checkpoint(run: Path) -> dict[str, Any]:
    """Read ``run/checkpoint.pt`` safely (``weights_only=True``), on the CPU."""
    path = run / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist (train without --resume first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read training checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an effnet training checkpoint: format {found!r}, expected {FORMAT!r}")
    return state


def write_log(run: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """``run/log.jsonl``: one JSON object per finished epoch, rewritten whole (so a resumed run's log
    holds each epoch once)."""
    target = run / LOG
    text = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in records)
    _atomic(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return target
