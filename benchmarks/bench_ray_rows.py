#!/usr/bin/env python
"""Per-row costs of a Ray eval row, without Ray: what an actor spends making a batch's rows, their bytes,
and what the driver spends counting them into the report's Tally.

  - probability vector (issue 33's first cut, until the lean rows): every class's float32 probability per
    row, the driver computing each image's terms from it (``Tally.add``);
  - terms (now, ``InferenceActor._eval_rows``): the actor computes each image's terms from its
    probabilities and the label that came with the image (``effnet.evaluate.terms.image_terms``) and sends
    only those; the driver adds them (``Tally.add_terms``).

Both read back in batches. Bytes are the Arrow table's (``Table.nbytes``) per row: what a row takes in the
object store, and what the driver maps and touches reading it. Random softmax rows stand in for a model's
(the costs do not depend on the values); paths like ImageNet val's, ``/data/imagenet/val/<synset>/<file>``.

    python benchmarks/bench_ray_rows.py --rows 2048 --batch 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import pyarrow as pa  # noqa: E402

from effnet.distributed.data import TERM_COLUMNS, InferenceActor  # noqa: E402
from effnet.evaluate.datasets import Sample  # noqa: E402
from effnet.evaluate.run import Tally  # noqa: E402
from effnet.evaluate.terms import ImageTerms  # noqa: E402
from effnet.source import labels_of  # noqa: E402


def vector_rows(actor: SimpleNamespace, paths: np.ndarray, errors: np.ndarray, ok: np.ndarray, probs: np.ndarray):
    """The probability-vector row as the actor built it before the lean rows (same timing and backend columns)."""
    n = len(paths)
    full = np.zeros((n, len(actor.classifier.labels)), np.float32)
    full[ok] = probs
    first = np.zeros(n, np.float64)
    said = {key: np.asarray([value] + [""] * (n - 1), dtype=object) for key, value in actor.built.items()}
    return {
        "path": paths,
        "probs": full,
        "error": errors,
        "infer_seconds": first.copy(),
        "wait_seconds": first.copy(),
        **said,
        "node": np.asarray([actor.node] + [""] * (n - 1), dtype=object),
    }


def arrow_bytes(batches: list[dict[str, np.ndarray]]) -> int:
    tables = [pa.Table.from_pydict({k: (list(v) if v.ndim > 1 else v) for k, v in b.items()}) for b in batches]
    return sum(t.nbytes for t in tables)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    labels = labels_of("efficientnet-lite0", None)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(args.rows, len(labels))).astype(np.float32) * 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = rng.integers(len(labels), size=args.rows)
    paths = np.asarray(
        [f"/data/imagenet/val/{labels[y].synset}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i, y in enumerate(truth)],
        dtype=object,
    )
    samples = {p: Sample(Path(p), int(y)) for p, y in zip(paths, truth, strict=True)}
    position = {p: i for i, p in enumerate(paths)}
    errors = np.asarray([""] * args.rows, dtype=object)
    ok = np.ones(args.rows, bool)
    actor = SimpleNamespace(
        classifier=SimpleNamespace(labels=labels),
        built={"backend": "openvino", "precision": "fp32", "device": "CPU"},
        node="10.0.0.1",
    )
    spans = [slice(s, s + args.batch) for s in range(0, args.rows, args.batch)]

    # actor side
    t = time.perf_counter()
    vector_batches = [vector_rows(actor, paths[s], errors[s], ok[s], probs[s]) for s in spans]
    vector_actor = (time.perf_counter() - t) / args.rows
    t = time.perf_counter()
    terms_batches = [
        InferenceActor._eval_rows(actor, paths[s], errors[s], ok[s], probs[s], truth[s], 0.0, 0.0) for s in spans
    ]
    terms_actor = (time.perf_counter() - t) / args.rows

    # driver side (every row good: the rows' own loop over errors and nodes is the same for both)
    tally = Tally(labels, 5)
    t = time.perf_counter()
    for b in vector_batches:
        tally.add([samples[p] for p in b["path"]], b["probs"])
    vector_driver = (time.perf_counter() - t) / args.rows
    vector_cal = tally.calibration()
    tally = Tally(labels, 5)
    t = time.perf_counter()
    for b in terms_batches:
        terms = ImageTerms(*(b[c] for c in TERM_COLUMNS))
        tally.add_terms([samples[p] for p in b["path"]], terms, positions=[position[p] for p in b["path"]])
    terms_driver = (time.perf_counter() - t) / args.rows
    if tally.calibration() != vector_cal:
        raise SystemExit("the terms rows gave another calibration than the probability rows")

    print(f"rows {args.rows}, batch {args.batch}, {len(labels)} classes, path {len(paths[0])} characters")
    print("| eval row | actor ms/row | bytes/row (Arrow) | driver ms/row |")
    print("| --- | ---: | ---: | ---: |")
    for name, a, batches, d in (
        ("probability vector (float32), read in batches", vector_actor, vector_batches, vector_driver),
        ("terms: top-5, confidence, p(true), sum p^2, rank", terms_actor, terms_batches, terms_driver),
    ):
        print(f"| {name} | {a * 1e3:.3f} | {arrow_bytes(batches) / args.rows:,.0f} | {d * 1e3:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
