"""The run's pictures: ``RUN/curves.png`` (loss and accuracy per epoch) and ``RUN/confusion.png``.

matplotlib with its Agg backend (files only, no display), imported lazily: it is the optional extra
``effnet[plots]``, and a run without it still trains, saying so in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["CURVES", "CONFUSION", "have_matplotlib", "plot_curves", "plot_confusion"]

CURVES = "curves.png"
CONFUSION = "confusion.png"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(**kw: Any) -> Any:
    from ..figures import use_agg

    use_agg()
    from matplotlib.figure import Figure

    return Figure(**kw)  # not pyplot: no global state, nothing left open


def _save(fig: Any, target: Path) -> Path:
    from ..figures import literal_text
    from ..fileio import atomic_write  # whole or absent; the umask's mode, not mkstemp's 0600

    def save(tmp: Path) -> None:
        with literal_text(fig):  # class names drawn as written (no mathtext), laid out and saved
            fig.tight_layout()
            fig.savefig(tmp, format="png", dpi=100)

    return atomic_write(target, save, "the figure")


def plot_curves(history: Sequence[dict[str, Any]], target: Path, majority: float | None) -> Path:
    """Train and validation loss (left) and accuracy (right) per epoch; the majority baseline as a line."""
    fig = _figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for key, ax, name in (
        ("train_loss", loss_ax, "train"),
        ("val_loss", loss_ax, "validation"),
        ("train_acc", acc_ax, "train"),
        ("val_acc", acc_ax, "validation"),
    ):
        points = [(r["epoch"], r[key]) for r in history if key in r]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=name)
    if majority is not None:
        acc_ax.axhline(majority, color="grey", linestyle="--", label="majority class")
    loss_ax.set(xlabel="epoch (0: linear probe)", ylabel="loss (label-smoothed CE)", title="loss")
    acc_ax.set(xlabel="epoch (0: linear probe)", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, target)


def plot_confusion(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], target: Path) -> Path:
    """The validation confusion matrix of the saved model: rows true class, columns predicted, counts."""
    n = len(classes)
    matrix = torch.zeros(n, n, dtype=torch.int64)
    for t, p in zip(labels.tolist(), logits.argmax(1).tolist(), strict=True):
        matrix[t, p] += 1
    size = min(4 + 0.4 * n, 20)
    fig = _figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="validation confusion")
    names = [c if len(c) <= 40 else c[:39] + "…" for c in classes]  # a very long folder name stays readable
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center")
    return _save(fig, target)
