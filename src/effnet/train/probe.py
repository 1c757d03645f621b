"""The linear probe: a multinomial logistic regression on frozen embeddings, fitted by L-BFGS.

Why a convex solver and not SGD epochs: with the body frozen, the classifier's training problem is
convex (cross-entropy of a linear map plus an L2 penalty), so its optimum is found exactly, in
seconds, with no learning rate, batch size or epoch count to tune, and deterministically. This is
the "linear probe" of Kornblith et al. 2019 ("Do Better ImageNet Models Transfer Better?", sec. 3:
L-BFGS logistic regression, L2 strength chosen on held-out training data) and of Radford et al. 2021
(CLIP, sec. 3.2); it is also the first half of LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution"): fine-tuning that starts from the probe's
head changes the pretrained features less than fine-tuning from a random or zero head.

The L2 strength is chosen by stratified k-fold cross-validation on the training images only (the
validation split stays for model selection and calibration), scoring held-out folds by their
log-loss on the clean (eval-transform) view; augmented views of an image stay in its fold.
Everything runs in float64 on the CPU: the embeddings are small (N x 1280 for Lite0, N x 2048 for B5).

Which embedding: the pooled output of the head convolution (the paper's classifier input) and of the
last few stages are all candidates (:func:`select_embedding`), and the one with the lowest
cross-validated log-loss wins; the network is then cut after that stage
(``EfficientNet(embedding_stage=...)``). Why: the last layers specialize to the pre-training task
(Yosinski et al. 2014), and for a target unlike ImageNet's 1,000 classes a probe on intermediate
features transfers better (Evci et al. 2022, "Head2Toe", which selects features across all layers; we
choose one stage's pooled output, so the result is still an ordinary, smaller EfficientNet). Measured on
the ImageNet sample as animal vs object (docs/training.md): the Lite0 head embedding gives a probe at
about the majority share, stage 5's pooled output close to every held-out image right.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = ["ProbeFit", "L2_GRID", "fit_logistic", "cross_validate", "fit_probe", "select_embedding", "one_thread"]

# Penalty 0.5 * l2 * ||W||^2 added to the mean cross-entropy: sklearn's C = 1 / (l2 * N).
L2_GRID: tuple[float, ...] = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclass(frozen=True)
class ProbeFit:
    """The fitted head (float32 ``weight`` [C, D], ``bias`` [C]) and how its L2 strength was chosen."""

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float
    cv_nll: dict[float, float]  # l2 -> mean held-out log-loss over the folds
    cv_acc: dict[float, float]  # l2 -> held-out accuracy over the folds
    folds: int
    embedding_stage: int | None = None  # the stage whose pooled output the head reads; None: the head conv's
    # every candidate embedding -> (its best held-out NLL, that L2's held-out accuracy)
    candidates: tuple[tuple[int | None, float, float], ...] = ()


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, *, max_iter: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin over (W, b) of mean CE(x W^T + b, y) + 0.5 * l2 * ||W||^2, by L-BFGS (float64, from zero)."""
    x, y = x.double(), y.long()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number per image: each class dealt round-robin over the folds in a seeded order (stratified)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fold[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % k
    return fold


def cross_validate(
    views: Sequence[torch.Tensor], y: torch.Tensor, num_classes: int, grid: Sequence[float], seed: int
) -> tuple[dict[float, float], dict[float, float], int]:
    """(l2 -> held-out NLL, l2 -> held-out accuracy, folds) over stratified folds of the images.

    ``views[0]`` holds the clean embeddings (one row per image), the others augmented views of the
    same images in the same order: a fold trains on all views of its training images and is scored
    on the clean view of its held-out images only.
    """
    labels = y.numpy()
    k = int(min(5, np.bincount(labels, minlength=num_classes).min()))
    if k < 2:  # a class with one image: nothing to hold out, take the middle of the grid
        mid = float(grid[len(grid) // 2])
        return {mid: float("nan")}, {mid: float("nan")}, 1
    fold = torch.from_numpy(_folds(labels, k, seed))
    nll = {float(l2): 0.0 for l2 in grid}
    correct = {float(l2): 0.0 for l2 in grid}
    for f in range(k):
        tr, te = fold != f, fold == f
        xs = torch.cat([v[tr] for v in views])
        ys = y[tr].repeat(len(views))
        for l2 in grid:
            w, b = fit_logistic(xs, ys, num_classes, l2)
            logits = views[0][te].double() @ w.T + b
            nll[float(l2)] += float(torch.nn.functional.cross_entropy(logits, y[te], reduction="sum"))
            correct[float(l2)] += float((logits.argmax(1) == y[te]).sum())
    n = len(labels)
    return {l2: v / n for l2, v in nll.items()}, {l2: v / n for l2, v in correct.items()}, k


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the solver on one intra-op thread. The problems are tiny (N x D with N in the tens to thousands):
    splitting each small matmul over threads costs more than the math, and on a busy machine every parallel
    region waits for a descheduled thread. Measured on the 2-core VM while another job ran: one 48-image
    Lite0 probe took 32 s on two threads, 1.7 s on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_probe(
    views: Sequence[torch.Tensor], y: torch.Tensor, num_classes: int, *, seed: int, grid: Sequence[float] = L2_GRID
) -> ProbeFit:
    """Choose the L2 strength by cross-validation (lowest held-out NLL; ties: the stronger penalty), then
    fit on every view of every image."""
    with one_thread():
        return _fit_probe(views, y, num_classes, seed=seed, grid=grid)


def _fit_probe(
    views: Sequence[torch.Tensor], y: torch.Tensor, num_classes: int, *, seed: int, grid: Sequence[float]
) -> ProbeFit:
    cv_nll, cv_acc, k = cross_validate(views, y, num_classes, grid, seed)
    best = min(cv_nll, key=lambda l2: (cv_nll[l2] if np.isfinite(cv_nll[l2]) else 0.0, -l2))
    w, b = fit_logistic(torch.cat(list(views)), y.repeat(len(views)), num_classes, best)
    return ProbeFit(w.float(), b.float(), best, cv_nll, cv_acc, k)


def select_embedding(
    candidates: Mapping[int | None, Sequence[torch.Tensor]],
    y: torch.Tensor,
    num_classes: int,
    *,
    seed: int,
    grid: Sequence[float] = L2_GRID,
) -> ProbeFit:
    """The probe on the best of several embeddings: ``candidates`` maps a stage index (``None``: the head
    convolution's output) to its views (as :func:`fit_probe`); each gets its cross-validated probe, and the
    one with the lowest held-out NLL wins (ties: the first in ``candidates``' order). The same folds score
    every candidate, so the choice sees only the training images."""
    if not candidates:
        raise ValueError("select_embedding: no candidate embeddings")
    fits = {stage: fit_probe(views, y, num_classes, seed=seed, grid=grid) for stage, views in candidates.items()}

    def score(stage: int | None) -> float:
        nll = fits[stage].cv_nll[fits[stage].l2]
        return nll if np.isfinite(nll) else 0.0

    best = min(fits, key=score)  # min keeps the first of equal scores
    summary = tuple((stage, f.cv_nll[f.l2], f.cv_acc[f.l2]) for stage, f in fits.items())
    return replace(fits[best], embedding_stage=best, candidates=summary)
