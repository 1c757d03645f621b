"""The per-image terms the report keeps of a probability row (top-k, confidence, p(true), sum of p^2, rank),
against values worked out by hand and by a plain loop; ties rank the lower class index first."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from effnet.errors import EffnetError
from effnet.evaluate.datasets import Sample
from effnet.evaluate.run import Tally
from effnet.evaluate.terms import image_terms
from effnet.labels import get_labels


def test_terms_by_hand_with_ties():
    # eighths, so every sum is exact in binary
    probs = np.array(
        [
            [0.125, 0.375, 0.375, 0.125],  # a tie for first: class 1 before class 2
            [0.25, 0.25, 0.25, 0.25],  # all tied: index order
            [0.625, 0.125, 0.125, 0.125],
        ],
        np.float32,
    )
    terms = image_terms(probs, [2, 3, 0], 3)
    assert terms.top.dtype == np.int32 and terms.rank.dtype == np.int32 and terms.sum_sq.dtype == np.float64
    assert terms.top.tolist() == [[1, 2, 0], [0, 1, 2], [0, 1, 2]]
    assert terms.confidence.tolist() == [0.375, 0.25, 0.625]
    assert terms.p_true.tolist() == [0.375, 0.25, 0.625]
    # 2/64 + 18/64; 4 x 1/16; 25/64 + 3/64
    assert terms.sum_sq.tolist() == [0.3125, 0.25, 0.4375]
    # class 2 ties class 1, which ranks first; class 3 ties all three lower ones; class 0 is top-1
    assert terms.rank.tolist() == [1, 3, 0]
    assert len(terms) == 3 and terms.take([2]).top.tolist() == [[0, 1, 2]]


def test_terms_match_a_plain_loop_and_do_not_depend_on_the_batch():
    rng = np.random.default_rng(3)
    probs = rng.random((12, 50)).astype(np.float32)
    probs[:, 10] = probs[:, 20]  # ties between two classes in every row
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 50, 12)
    labels[:4] = 20  # the truth in a tie, behind class 10
    terms = image_terms(probs, labels, 5)
    for i, (row, y) in enumerate(zip(probs.tolist(), labels.tolist(), strict=True)):
        order = sorted(range(50), key=lambda j: (-row[j], j))
        assert terms.top[i].tolist() == order[:5]
        assert terms.rank[i] == order.index(y)
        assert terms.confidence[i] == max(row) and terms.p_true[i] == row[y]
        assert terms.sum_sq[i] == pytest.approx(math.fsum(p * p for p in row), rel=1e-12)
        # a row alone gives the same bits as in its batch: a Ray actor's batches are not the local eval's
        alone = image_terms(probs[i : i + 1], labels[i : i + 1], 5)
        assert alone.sum_sq[0] == terms.sum_sq[i] and alone.rank[0] == terms.rank[i]
    assert (terms.rank[:4] >= 1).all()


def test_a_label_outside_the_classes_is_refused():
    with pytest.raises(EffnetError, match="outside the 3 classes"):
        image_terms(np.full((1, 3), 1 / 3), [3], 3)


def test_a_tally_given_positions_sums_in_the_dataset_order_whatever_order_rows_arrive_in():
    rng = np.random.default_rng(5)
    probs = rng.random((64, 10))
    probs /= probs.sum(axis=1, keepdims=True)
    samples = [Sample(Path(f"{i}.jpg"), int(y)) for i, y in enumerate(rng.integers(0, 10, 64))]
    labels = get_labels(tuple(f"c{i}" for i in range(10)))
    in_order = Tally(labels, 5)
    in_order.add(samples, probs)
    shuffled = Tally(labels, 5)
    perm = rng.permutation(64)
    for part in np.array_split(perm, 7):
        terms = image_terms(probs[part], [samples[i].label for i in part], 5)
        shuffled.add_terms([samples[i] for i in part], terms, positions=part.tolist())
    # (added without positions, these very rows give an ECE and a Brier score that differ in the last bit)
    assert shuffled.calibration() == in_order.calibration() and shuffled.topk_accuracy() == in_order.topk_accuracy()
    # and the report lists the images in the dataset's order too
    assert [o.path for o in shuffled.ordered_outcomes()] == [f"{i}.jpg" for i in range(64)]
    assert shuffled.ordered_outcomes() == in_order.ordered_outcomes() == in_order.outcomes
    with pytest.raises(EffnetError, match="with positions or without"):
        shuffled.add(samples[:1], probs[:1])
