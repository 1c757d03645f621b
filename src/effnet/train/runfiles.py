"""The run's output besides the checkpoint: its lines on stderr, the guarded writes of its files, the
figures, and reading back the saved model (to add the fitted temperature)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..weights.native import NativeInfo, read_native_info
from .calibrate import Calibration
from .config import TrainError
from .distributed import World
from .plots import CONFUSION, CURVES, have_matplotlib, plot_confusion, plot_curves

__all__ = ["say", "write_run_file", "write_plots", "epoch_line", "calibration_line", "Saved", "load_saved"]


def say(world: World, text: str) -> None:
    if world.is_main:
        tqdm.write(text, file=sys.stderr)


def write_run_file(path: Path, write: Callable[[], Any]) -> Any:
    """Run a file write of the run folder; a full disk (torch.save says "unexpected pos", safetensors an I/O
    error) becomes one line naming the file. The writers leave no temporary file behind."""
    from safetensors import SafetensorError

    try:
        return write()
    except (OSError, RuntimeError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TrainError(f"cannot write {path}: {first} (is the disk full?)") from None


def write_plots(
    run: Path,
    history: Sequence[dict[str, Any]],
    majority: float | None,
    best: tuple[torch.Tensor, torch.Tensor] | None,
    classes: tuple[str, ...],
) -> None:
    if not have_matplotlib():
        print("matplotlib is not installed: no RUN/curves.png (pip install 'effnet[plots]')", file=sys.stderr)
        return
    write_run_file(run / CURVES, lambda: plot_curves(history, run / CURVES, majority))
    if best is not None:
        write_run_file(run / CONFUSION, lambda: plot_confusion(best[0], best[1], classes, run / CONFUSION))


def epoch_line(r: dict[str, Any]) -> str:
    head = f"epoch {r['epoch']}/{r['epochs']}" if r["epoch"] else "linear probe"
    parts = [f"train loss {r['train_loss']:.4f} acc {r['train_acc']:.1%}"] if "train_loss" in r else []
    if "probe_l2" in r:
        parts.append(
            f"embedding {r['probe_embedding']}, L2 {r['probe_l2']:g} (cross-validated accuracy {r['probe_cv_acc']:.1%})"
        )
    if "val_acc" in r:
        parts.append(
            f"validation acc {r['val_acc']:.1%} (majority class {r['majority_acc']:.1%}), "
            f"loss {r['val_loss']:.4f} (nll {r['val_nll']:.4f}){' *' if r['best'] else ''}"
        )
    return f"{head}: " + ", ".join(parts)


def calibration_line(c: Calibration) -> str:
    if c.skipped:
        return f"temperature not fitted (kept 1): {c.skipped}"
    return (
        f"temperature {c.temperature:.3f} (fitted on the validation split): NLL {c.nll_before:.4f} -> "
        f"{c.nll_after:.4f}, ECE {c.ece_before:.4f} -> {c.ece_after:.4f}"
    )


@dataclass(frozen=True)
class Saved:
    state: dict[str, torch.Tensor]
    info: NativeInfo


def load_saved(path: Path) -> Saved:
    from safetensors.torch import load_file

    info = read_native_info(path)
    if info is None:  # pragma: no cover - the run just wrote it
        raise TrainError(f"{path} lost its effnet metadata")
    return Saved(load_file(str(path)), info)
