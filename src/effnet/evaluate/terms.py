"""What the accuracy report keeps of each image's probability vector: a few numbers, computed in one place.

The report needs, per image, its top-k class indices (accuracy, confusions, the listed outcomes) and four
calibration terms (ECE, NLL, Brier score, the top-k curve). :func:`image_terms` reduces a batch of
probability rows to exactly those, so that the local eval (:class:`effnet.evaluate.run.Tally`) and a Ray
actor (``effnet eval --engine ray``, which then sends back ~100 bytes a row instead of every class's
probability) compute them with the same code, bit for bit. numpy only: nothing here needs a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EffnetError

__all__ = ["ImageTerms", "image_terms"]


@dataclass(frozen=True)
class ImageTerms:
    """Per-image terms of ``n`` images, as arrays (row i is image i)."""

    top: np.ndarray  # int32 [n, k]: class indices, best first; ties go to the lower class index
    confidence: np.ndarray  # float64 [n]: the top-1 probability
    p_true: np.ndarray  # float64 [n]: the probability of the true class
    sum_sq: np.ndarray  # float64 [n]: sum over classes of p^2 (the Brier score's term)
    rank: np.ndarray  # int32 [n]: how many classes rank ahead of the true class (0: top-1 correct)

    def __len__(self) -> int:
        return len(self.rank)

    def take(self, index: np.ndarray | Sequence[int]) -> ImageTerms:
        """These terms for the images at ``index`` only (an integer or boolean index)."""
        return ImageTerms(
            self.top[index], self.confidence[index], self.p_true[index], self.sum_sq[index], self.rank[index]
        )


def image_terms(probs: np.ndarray, labels: np.ndarray | Sequence[int], k: int) -> ImageTerms:
    """``probs`` [n, classes] (each row an image's probabilities) and the true ``labels`` [n] -> their terms.

    The order of classes is a stable sort on -p: of equal probabilities the lower class index ranks first,
    as :meth:`effnet.predict.Classifier.top_k` orders them, both in ``top`` and in ``rank``. The sums are in
    float64 over a C-contiguous copy, so a row's terms do not depend on the batch it came in.
    """
    probs = np.asarray(probs)
    y = np.asarray(labels, np.int64)
    if probs.ndim != 2 or y.shape != (len(probs),):
        raise EffnetError(f"image terms need probabilities [n, classes] and n labels, got {probs.shape} and {y.shape}")
    classes = probs.shape[1]
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise EffnetError(f"a label is outside the {classes:,} classes: {int(y.min())}..{int(y.max())}")
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int32)
    p = np.ascontiguousarray(probs, dtype=np.float64)
    p_y = p[np.arange(len(y)), y]
    index = np.arange(classes)
    # classes ranked ahead of the truth in the same stable order: higher p, or equal p and lower index
    ahead = (p > p_y[:, None]) | ((p == p_y[:, None]) & (index[None, :] < y[:, None]))
    return ImageTerms(
        top=top,
        confidence=p.max(axis=1),
        p_true=p_y,
        sum_sq=(p * p).sum(axis=1),
        rank=ahead.sum(axis=1).astype(np.int32),
    )
