"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", sec. 4.2).

One scalar T > 0 divides the logits: accuracy is unchanged (the argmax is), and T is fitted on the
validation split by minimizing its negative log-likelihood. A fine-tuned network trained to near-zero
training loss is typically over-confident (T > 1 then softens it). The fitted T travels in the
effnet-native file's metadata (``temperature``) and every loader of that file divides the classifier
by it (:func:`effnet.factory.create_model`), so classify, eval, serve and exports report calibrated
probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Calibration", "nll", "ece", "fit_temperature"]


@dataclass(frozen=True)
class Calibration:
    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    skipped: str = ""  # why no temperature was fitted (T stays 1), e.g. a validation split with no error

    def to_json(self) -> dict[str, float | str]:
        return dict(self.__dict__)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood (plain cross-entropy, no label smoothing)."""
    return float(torch.nn.functional.cross_entropy(logits.double(), labels))


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence, ``bins`` equal-width bins (Guo et al.'s 15)."""
    probs = logits.double().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += float(inside.double().mean() * (conf[inside].mean() - correct[inside].mean()).abs())
    return total


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """The T minimizing the NLL of ``logits / T`` (L-BFGS on log T, float64), with NLL/ECE before and after."""
    z = logits.detach().double()
    if bool((z.argmax(1) == labels).all()):
        # Every validation image right: the NLL of z / T falls monotonically as T -> 0, so "the best T" is the
        # bound, and dividing by it would make every later answer (near) 100 % sure. Such a split says nothing
        # about calibration (small folders make it common): keep the model's own probabilities.
        before = nll(z, labels), ece(z, labels)
        why = f"every one of the {len(labels)} validation images is right: the NLL has no minimum at T > 0"
        return Calibration(1.0, before[0], before[0], before[1], before[1], skipped=why)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))  # a degenerate split must not give 0 or infinity
    return Calibration(t, nll(z, labels), nll(z / t, labels), ece(z, labels), ece(z / t, labels))
