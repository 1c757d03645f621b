"""``audit(DATA)``: what is wrong with a folder of labelled images, found from its embeddings; DATA is only read.

One pass embeds every image (:mod:`effnet.audit.embed`); the checks of :mod:`effnet.train.datacheck` then
find likely wrong labels (out-of-sample probabilities of the cross-validated probe on the embedding ``effnet
train``'s probe would choose, ranked by cleanlab), exact and near-duplicates, leakage into ``--val``,
outliers, unreadable and tiny images, and the class balance.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._optional import require
from ..errors import EffnetError
from ..evaluate.datasets import Sample, find_class_folders
from ..source import ModelSource, resolve_source, weights_label
from ..train.data import shared_image
from ..train.datacheck import (
    NEAR_DUPLICATE,
    TRAIN_CHECK_MIN_ACC,
    duplicate_groups,
    ensemble_probs,
    group_folds,
    label_issues,
    nearest,
    outlier_scores,
    unit_rows,
)
from ..train.passes import embedding_name
from .embed import EmbedEngine, embed_images, file_facts

__all__ = [
    "AuditReport",
    "audit",
    "TINY_PX",
    "DUPLICATE_TAP",
    "IMBALANCE",
    "duplicate_source",
    "tap_name",
    "label_check_skipped",
    "labels_reliable",
]

TINY_PX = 32  # shorter side below this: upscaled more than 7x to a 224 px crop, little left to learn from
IMBALANCE = 10.0  # largest / smallest class above this is reported as an imbalance
# The embedding the duplicate, leakage and outlier checks read: the head convolution's, the candidate with
# the widest gap between copies of a photo and distinct photos (benchmarks/audit_thresholds.py, docs/audit.md).
DUPLICATE_TAP: int | None = None


@dataclass
class AuditReport:
    data: str
    val: str | None
    model: str
    weights: str
    classes: dict[str, dict[str, Any]]
    label_embedding: str = ""
    duplicate_embedding: str = ""
    near_duplicate_check: dict[str, Any] = field(default_factory=lambda: {"ran": True})
    label_cv_accuracy: float | None = None
    # {"ran": False, "reason"} or {"ran": True, "folds", "cv_accuracy", "majority_baseline", "reliable"}
    label_check: dict[str, Any] = field(default_factory=lambda: {"ran": False, "reason": "not run"})
    label_issues: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    leakage: list[dict[str, Any]] = field(default_factory=list)
    outliers: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    tiny: list[dict[str, Any]] = field(default_factory=list)
    imbalance: float | None = None
    images: int = 0
    val_images: int = 0
    embedded_from_cache: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": "effnet.audit/1", **self.__dict__}

    def write_json(self, path: str | os.PathLike) -> None:
        from ..fileio import atomic_write

        text = json.dumps(self.to_json(), indent=1)
        atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"), "audit JSON")


def label_check_skipped(y: np.ndarray, names: Sequence[str]) -> str | None:
    """Why the cross-validated label check cannot run on these labels (of the readable images), or None."""
    counts = np.bincount(y, minlength=len(names))
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return "no readable images"
    if len(present) < 2:
        return f"only one class ({names[int(present[0])]}) has readable images: there is nothing to tell apart"
    if len(y) < 4:
        return f"only {len(y)} readable images: the check needs at least 4"
    small = [names[int(c)] for c in present if counts[c] < 2]
    if small:
        return f"class {small[0]} has fewer than 2 readable images: cross-validation needs 2 per class"
    return None


def labels_reliable(accuracy: float, majority: float) -> bool:
    """Whether the out-of-sample probe learned the task well enough for its disagreements to mean anything:
    at least ``TRAIN_CHECK_MIN_ACC`` accurate (effnet train's gate) and at least halfway from the majority
    baseline to 100 %. A probe at chance disagrees with about half the labels for its own sake."""
    return accuracy >= TRAIN_CHECK_MIN_ACC and accuracy - majority >= (1.0 - majority) / 2


def tap_name(tap: int | None, cut: int | None) -> str:
    """An embedding's name: the pooled output of a network cut after stage K is "stage K", not "head"."""
    return f"stage {cut}" if tap is None and cut is not None else embedding_name(tap)


def duplicate_source(source: ModelSource) -> tuple[ModelSource | None, str]:
    """The weights whose head embedding the near-duplicate checks read, or (None, why not).

    ``NEAR_DUPLICATE`` was measured on a full network's head convolution (docs/audit.md). Weights cut after
    a stage (``effnet train --freeze body`` on an intermediate stage) have no head: their pooled output is
    another embedding, where distinct photos score far above 0.70. Their architecture's pretrained weights
    (same model, offline) give the embedding the threshold was measured on; without them the near-duplicate
    checks do not run."""
    cut = source.record.embedding_stage if source.record is not None else None
    if cut is None:
        return source, ""
    why = (f"these weights end at stage {cut} (no head convolution), and the 0.70 threshold was measured on "
           f"the head embedding")  # fmt: skip
    try:
        full = resolve_source(source.model, None, download=False)
    except EffnetError as e:
        return None, f"{why}; the pretrained {source.model} weights are not available ({e})"
    if full.checkpoint is None or (full.record is not None and full.record.embedding_stage is not None):
        return None, f"{why}; no pretrained {source.model} weights with a head are available"
    return full, ""


def _dup_key(paths: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(paths))


def audit(
    data: str | os.PathLike,
    val: str | os.PathLike | None = None,
    *,
    model: str = "efficientnet-lite0",
    weights: Any = None,
    batch_size: int = 32,
    workers: int | None = None,
    cache: bool = True,
    seed: int = 0,
    progress: bool = True,
    engine: EmbedEngine | None = None,
) -> AuditReport:
    """Audit the class folders ``data`` (and leakage into ``val``); nothing under either is written.

    ``engine`` embeds what the embedding cache lacks (default: this process; ``effnet audit --engine ray``:
    :class:`effnet.distributed.embed.RayEmbedding`). Everything else runs here."""
    clock = {"start": time.perf_counter()}
    train_set = find_class_folders(data)
    val_set = find_class_folders(val) if val is not None else None
    names = tuple(c.label for c in train_set.labels)
    samples: list[Sample] = list(train_set.samples)
    val_samples: list[Sample] = list(val_set.samples) if val_set is not None else []
    # The extras the checks need, before minutes of embedding: not after them.
    require("faiss", "audit", "near-duplicate search")
    require("cleanlab.filter", "audit", "label-issue ranking")
    shared = shared_image(samples, val_samples)
    if shared is not None:  # every image would be its own leak: refused, as effnet train refuses it
        raise EffnetError(
            f"--val {val} shares images with {data}, e.g. {shared}: give a validation folder apart from DATA "
            "(the audit reports copies between two separate folders)"
        )
    everything = samples + val_samples
    paths = [s.path for s in everything]
    source = resolve_source(model, weights)
    facts = [file_facts(p) for p in paths]
    clock["hashed"] = time.perf_counter()
    emb = embed_images(
        paths, facts, source, batch_size=batch_size, workers=workers, cache=cache, progress=progress, engine=engine
    )
    cut = source.record.embedding_stage if source.record is not None else None
    dup_src, no_near = duplicate_source(source)
    dup_emb = emb
    if dup_src is not None and dup_src is not source:
        dup_emb = embed_images(
            paths, facts, dup_src, batch_size=batch_size, workers=workers, cache=cache, progress=progress, engine=engine
        )
    clock["embedded"] = time.perf_counter()
    n = len(samples)
    counts = np.bincount([s.label for s in samples], minlength=len(names))
    report = AuditReport(
        data=str(data),
        val=None if val is None else str(val),
        model=source.model,
        weights=weights_label(source),
        classes={c: {"images": int(counts[i]), "share": float(counts[i] / max(1, n))} for i, c in enumerate(names)},
        images=n,
        val_images=len(val_samples),
        embedded_from_cache=emb.cached,
    )
    report.imbalance = float(counts.max() / max(1, counts.min()))
    if dup_src is None:
        report.near_duplicate_check = {"ran": False, "reason": no_near}
    else:
        report.duplicate_embedding = ("" if dup_src is source else f"{weights_label(dup_src)} ") + "head"
    ok = np.isfinite(emb.rows).all(axis=1) & np.isfinite(dup_emb.rows).all(axis=1)
    for i, p in enumerate(paths):
        f = facts[i]
        if not ok[i]:
            why = f.error or emb.errors.get(i, "cannot be decoded")
            report.unreadable.append({"path": str(p), "error": why, "set": "data" if i < n else "val"})
        elif f.width is not None and f.height is not None and min(f.width, f.height) < TINY_PX:
            report.tiny.append({"path": str(p), "width": f.width, "height": f.height})

    good = np.flatnonzero(ok[:n])
    # Without the measured embedding: exact duplicates only, outliers (a cut relative to the folder) on the
    # label candidates' first embedding.
    dup_rows = unit_rows(dup_emb.block(DUPLICATE_TAP) if dup_src is not None else emb.block(emb.taps[0]))
    threshold = NEAR_DUPLICATE if dup_src is not None else float("inf")
    by_sha: dict[str, list[int]] = defaultdict(list)
    for pos, i in enumerate(good.tolist()):
        by_sha[str(facts[i].sha256)].append(int(pos))
    exact = [g for g in by_sha.values() if len(g) > 1]
    groups = duplicate_groups(dup_rows[good], threshold, same=exact)
    exact_keys = {_dup_key([str(paths[good[j]]) for j in g]) for g in exact}
    for members, sim in groups:
        member_paths = [str(paths[good[j]]) for j in members]
        report.duplicates.append(
            {"paths": member_paths, "similarity": round(sim, 4), "exact": _dup_key(member_paths) in exact_keys}
        )

    y = np.array([samples[i].label for i in good], dtype=np.int64)
    skip = label_check_skipped(y, names)
    if skip is not None:
        report.label_check = {"ran": False, "reason": skip}
    else:
        # A cut network's pooled output (tap None) is its last stage's: the same embedding once, not twice.
        taps = [t for t in emb.taps if t is None or t != cut]
        candidates = {t: torch.from_numpy(np.ascontiguousarray(emb.block(t)[good])) for t in taps}
        k = int(min(10, np.bincount(y, minlength=len(names))[np.unique(y)].min()))
        folds = group_folds(y, [m for m, _ in groups], k, seed)
        oos = ensemble_probs(candidates, y, len(names), folds)
        report.label_embedding = " + ".join(tap_name(t, cut) for t in oos.taps)
        report.label_cv_accuracy = oos.accuracy
        majority = float(np.bincount(y).max() / len(y))
        report.label_check = {
            "ran": True,
            "folds": k,
            "cv_accuracy": round(oos.accuracy, 4),
            "majority_baseline": round(majority, 4),
            "reliable": labels_reliable(oos.accuracy, majority),
        }
        for issue in label_issues(y, oos.probs):
            report.label_issues.append(
                {
                    "path": str(paths[good[issue.index]]),
                    "given": names[issue.given],
                    "suggested": names[issue.suggested],
                    "score": round(issue.score, 4),
                }
            )
    clock["labels"] = time.perf_counter()

    scores, far = outlier_scores(dup_rows[good])
    for pos in np.argsort(-scores):
        if scores[pos] <= far:
            break
        i = good[pos]
        report.outliers.append(
            {"path": str(paths[i]), "class": names[samples[i].label], "score": round(float(scores[pos]), 4)}
        )

    val_good = np.flatnonzero(ok[n:]) + n
    if len(val_good) and len(good):
        nb = nearest(dup_rows[good], dup_rows[val_good], 4)
        data_sha = {str(facts[i].sha256): i for i in good}
        for q, v in enumerate(val_good):
            twin = data_sha.get(str(facts[v].sha256))
            if twin is not None:
                report.leakage.append({"val": str(paths[v]), "data": str(paths[twin]), "similarity": 1.0})
                continue
            for j, s in zip(nb.index[q], nb.similarity[q], strict=True):
                if j >= 0 and s >= threshold:
                    report.leakage.append(
                        {"val": str(paths[v]), "data": str(paths[good[j]]), "similarity": round(float(s), 4)}
                    )
    clock["end"] = time.perf_counter()
    report.seconds = {
        "hash": clock["hashed"] - clock["start"],
        "embed": clock["embedded"] - clock["hashed"],
        "labels": clock["labels"] - clock["embedded"],
        "total": clock["end"] - clock["start"],
    }
    return report
