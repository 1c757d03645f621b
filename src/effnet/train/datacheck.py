"""Checks of a labelled image folder from its embeddings: likely wrong labels, near-duplicates, outliers.

Used by ``effnet audit`` (:mod:`effnet.audit`) and, in their cheap form, by ``effnet train``.

- **Label issues** (Confident Learning, Northcutt et al. 2021): every image gets class probabilities from a
  linear probe (:func:`effnet.train.probe.fit_logistic`) that never saw it — K-fold cross-validation, with
  near-duplicates dealt into one fold so a copy cannot vouch for its twin — and cleanlab ranks the images
  whose given label those out-of-sample probabilities disbelieve.
- **Near-duplicates**: cosine similarity of L2-normalised embeddings, searched with a faiss index as each
  image's few nearest neighbours (memory O(N k), never all pairs); an exact search (``IndexFlatIP``) up to
  ``EXACT_SEARCH_MAX`` images, HNSW above. ``NEAR_DUPLICATE`` was chosen on measured copies (docs/audit.md).
- **Outliers**: an image whose nearest neighbours are all far (kNN distance, as fastdup and cleanlab's
  Datalab score outliers), flagged when robustly far above the folder's typical distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .._optional import require
from .probe import fit_logistic, one_thread

__all__ = [
    "NEAR_DUPLICATE",
    "EXACT_SEARCH_MAX",
    "Neighbours",
    "unit_rows",
    "nearest",
    "duplicate_groups",
    "group_folds",
    "out_of_sample_probs",
    "AUDIT_L2",
    "OutOfSample",
    "ensemble_probs",
    "LabelIssue",
    "label_issues",
    "outlier_scores",
    "train_data_lines",
    "TRAIN_CHECK_MIN_ACC",
]

# Cosine similarity at or above which two images are called near-duplicates (on the head embedding
# :mod:`effnet.audit` uses). Measured with Lite0 on the 100 sample photos (benchmarks/audit_thresholds.py,
# docs/audit.md): JPEG-re-encoded, 90 % centre-cropped and mirrored copies score >= 0.78 with their original,
# the most similar two distinct photos 0.50.
NEAR_DUPLICATE = 0.70
# effnet train names likely label errors only when its out-of-sample probe is at least this accurate.
TRAIN_CHECK_MIN_ACC = 0.8
# Exact inner-product search up to this many images (fast enough, and exact); HNSW beyond.
EXACT_SEARCH_MAX = 50_000


@dataclass(frozen=True)
class Neighbours:
    """Each query's ``k`` nearest database rows: ``index`` [Q, k] (-1: none) and cosine ``similarity`` [Q, k]."""

    index: np.ndarray
    similarity: np.ndarray


def unit_rows(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 rows scaled to unit length (a zero row stays zero)."""
    a = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.ascontiguousarray(a / np.maximum(norm, 1e-12), dtype=np.float32)


def nearest(database: np.ndarray, queries: np.ndarray, k: int) -> Neighbours:
    """The ``k`` most similar ``database`` rows of each query (both unit rows), by a faiss index."""
    faiss = require("faiss", "audit", "near-duplicate search")
    n, d = database.shape
    k = max(1, min(k, n))
    if n <= EXACT_SEARCH_MAX:
        index = faiss.IndexFlatIP(d)
    else:  # approximate: graph search keeps the cost per query near log N
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 4 * k)
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    sim, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return Neighbours(idx, sim)


def duplicate_groups(
    emb: np.ndarray, threshold: float = NEAR_DUPLICATE, k: int = 8, same: Sequence[Sequence[int]] = ()
) -> list[tuple[list[int], float]]:
    """Groups of near-duplicate rows of ``emb`` (unit rows), each with the lowest similarity of the pairs
    that joined it; ``same`` adds groups known already (identical bytes) at similarity 1."""
    n = len(emb)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    edges: list[tuple[int, int, float]] = [(g[0], j, 1.0) for g in same for j in g[1:]]
    if n > 1:
        nb = nearest(emb, emb, k + 1)
        edges += [
            (i, int(j), float(s))
            for i in range(n)
            for j, s in zip(nb.index[i], nb.similarity[i], strict=True)
            if j >= 0 and j != i and s >= threshold  # both directions: k-nearest is not symmetric
        ]
    for i, j, _ in edges:
        parent[find(i)] = find(j)
    weakest: dict[int, float] = {}  # group root -> the lowest similarity of the pairs that joined it
    for i, _, s in edges:
        weakest[find(i)] = min(weakest.get(find(i), 1.0), s)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    groups = [(m, min(1.0, weakest[r])) for r, m in members.items() if len(m) > 1]
    return sorted(groups, key=lambda g: (-g[1], g[0]))


def group_folds(labels: np.ndarray, groups: Sequence[Sequence[int]], k: int, seed: int) -> np.ndarray:
    """A fold per image: the members of a group share one; groups (and single images) of each class (their
    first member's) are dealt round-robin in a seeded order, so each fold holds every class."""
    n = len(labels)
    owner = np.arange(n)
    for g in groups:
        owner[list(g)] = g[0]
    roots = np.unique(owner)
    rng = np.random.default_rng(seed)
    fold_of_root: dict[int, int] = {}
    for c in np.unique(labels[roots]):
        rs = roots[labels[roots] == c]
        for pos, r in enumerate(rs[rng.permutation(len(rs))]):
            fold_of_root[int(r)] = pos % k
    return np.array([fold_of_root[int(owner[i])] for i in range(n)], dtype=np.int64)


def out_of_sample_probs(x: torch.Tensor, y: np.ndarray, num_classes: int, l2: float, folds: np.ndarray) -> np.ndarray:
    """[N, C] class probabilities, each row from a probe fitted on the other folds only."""
    probs = np.zeros((len(y), num_classes))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    with one_thread():
        for f in np.unique(folds):
            te = torch.from_numpy(folds == f)
            w, b = fit_logistic(x[~te], labels[~te], num_classes, l2)
            probs[te.numpy()] = torch.softmax(x[te].double() @ w.T + b, dim=1).numpy()
    return probs


# The L2 strengths tried per embedding (a shorter grid than the probe's: the audit fits K folds of each).
AUDIT_L2: tuple[float, ...] = (1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class OutOfSample:
    probs: np.ndarray  # [N, C]: the mean of the chosen embeddings' out-of-sample probabilities
    taps: tuple[int | None, ...]  # the embeddings averaged, best first
    nll: dict[int | None, float]  # each candidate's out-of-sample log-loss at its best L2
    accuracy: float  # of ``probs`` against the given labels


def ensemble_probs(
    candidates: dict[int | None, torch.Tensor],
    y: np.ndarray,
    num_classes: int,
    folds: np.ndarray,
    *,
    keep: int = 2,
    grid: Sequence[float] = AUDIT_L2,
) -> OutOfSample:
    """Out-of-sample probabilities of every candidate embedding (each at the L2 with the lowest held-out
    log-loss), averaged over the ``keep`` candidates with the lowest log-loss. Measured on the test folder
    (docs/audit.md): two embeddings averaged found more injected wrong labels at a higher precision than the
    best one alone."""
    rows = np.arange(len(y))
    best: dict[int | None, tuple[float, np.ndarray]] = {}
    for tap, x in candidates.items():
        fits = []
        for l2 in grid:
            p = out_of_sample_probs(x, y, num_classes, l2, folds)
            fits.append((float(-np.log(p[rows, y] + 1e-12).mean()), p))
        best[tap] = min(fits, key=lambda f: f[0])
    chosen = sorted(best, key=lambda t: best[t][0])[:keep]
    probs = np.mean([best[t][1] for t in chosen], axis=0)
    accuracy = float((probs.argmax(1) == y).mean())
    return OutOfSample(probs, tuple(chosen), {t: v[0] for t, v in best.items()}, accuracy)


@dataclass(frozen=True)
class LabelIssue:
    index: int
    given: int
    suggested: int
    score: float  # 1 - the out-of-sample probability of the given class (cleanlab's self-confidence)


def label_issues(y: np.ndarray, probs: np.ndarray) -> list[LabelIssue]:
    """The images whose out-of-sample prediction is not their given class (cleanlab's ``find_label_issues``,
    ``filter_by="predicted_neq_given"``: on the test folder it kept recall >= 0.8 where the confident-joint
    filters dropped to 0.5-0.7), ranked by cleanlab's self-confidence, most likely wrong first."""
    filt = require("cleanlab.filter", "audit", "label-issue ranking")
    rank = require("cleanlab.rank", "audit", "label-issue ranking")
    y = np.asarray(y, dtype=np.int64)
    if len(np.unique(y)) < 2 or len(y) < 4:
        return []
    flagged = filt.find_label_issues(
        y, probs, filter_by="predicted_neq_given", return_indices_ranked_by="self_confidence"
    )
    quality = rank.get_label_quality_scores(y, probs, method="self_confidence")
    return [LabelIssue(int(i), int(y[i]), int(probs[i].argmax()), float(1.0 - quality[i])) for i in flagged]


def outlier_scores(emb: np.ndarray, k: int = 5) -> tuple[np.ndarray, float]:
    """(each row's mean cosine distance to its ``k`` nearest other rows, the flagging cut: the median plus
    five robust standard deviations, 1.4826 MAD)."""
    n = len(emb)
    if n < 3:
        return np.zeros(n), float("inf")
    nb = nearest(emb, emb, k + 1)
    scores = np.empty(n)
    for i in range(n):
        others = [s for j, s in zip(nb.index[i], nb.similarity[i], strict=True) if j != i and j >= 0][:k]
        scores[i] = 1.0 - float(np.mean(others)) if others else 0.0
    med = float(np.median(scores))
    mad = float(np.median(np.abs(scores - med)))
    return scores, med + 5.0 * 1.4826 * max(mad, 1e-6)


def train_data_lines(
    chosen: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float,
    seed: int,
    train_head: torch.Tensor,
    val_head: torch.Tensor | None,
) -> list[str]:
    """``effnet train``'s data check, from the embeddings its probe computed: how many training images the
    out-of-sample probe (the probe's embedding and L2, stratified folds) assigns to another class (the rule
    of cleanlab's ``predicted_neq_given``), and how many validation images are near-duplicates of a training
    image. Plain torch, no faiss or cleanlab: faiss-cpu brings a second OpenMP runtime, and train forks
    DataLoader workers after this; the validation split is small enough for a chunked matmul."""
    lines = []
    labels = y.numpy()
    k = int(min(10, np.bincount(labels, minlength=num_classes)[np.unique(labels)].min()))
    if k >= 2 and len(np.unique(labels)) >= 2:
        probs = out_of_sample_probs(chosen, labels, num_classes, l2, group_folds(labels, [], k, seed))
        disputed = int((probs.argmax(1) != labels).sum())
        # A probe that cannot learn the task disagrees with many labels for its own sake: say nothing then.
        if disputed and 1.0 - disputed / len(labels) >= TRAIN_CHECK_MIN_ACC:
            lines.append(
                f"data check: {disputed} of {len(labels)} training images look mislabelled (a cross-validated "
                "probe puts them in another class): `effnet audit DATA` lists them"
            )
    if val_head is not None and len(val_head) and len(train_head):
        train_unit = torch.from_numpy(unit_rows(train_head))
        best = torch.cat([(torch.from_numpy(unit_rows(v)) @ train_unit.T).amax(1) for v in val_head.split(256)])
        leaked = int((best >= NEAR_DUPLICATE).sum())
        if leaked:
            lines.append(
                f"data check: {leaked} validation images are near-duplicates of training images (the validation "
                "score is inflated): `effnet audit DATA --val VAL` lists them"
            )
    return lines
