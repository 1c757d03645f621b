#!/usr/bin/env python
"""Per-row costs of a Ray eval row, without Ray: what an actor spends making a batch's rows, their bytes,
and what the driver spends counting them into the report's Tally.

  - before (until issue 33): every class as a top-k list (index, synset, label, float64 probability) per
    row, built as ImageResults and an Arrow table (``result_columns``), read back row by row, each row
    turned back into a probability vector and added to the Tally alone;
  - now: the float32 probability vector as it left the backend, no strings (``InferenceActor._eval_rows``),
    read back in batches and added to the Tally a batch at a time.

Random softmax rows stand in for a model's (the costs do not depend on the values).

    python benchmarks/bench_ray_rows.py --rows 512 --batch 8
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

from effnet.distributed.data import InferenceActor  # noqa: E402
from effnet.distributed.outputs import RESULT_SCHEMA  # noqa: E402
from effnet.distributed.worker import result_columns  # noqa: E402
from effnet.evaluate.datasets import Sample  # noqa: E402
from effnet.evaluate.run import Tally  # noqa: E402
from effnet.predict import ImageResult, top_k  # noqa: E402
from effnet.source import labels_of  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    labels = labels_of("efficientnet-lite0", None)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(args.rows, len(labels))).astype(np.float32) * 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    paths = np.asarray([f"/data/n01440764_{i}.JPEG" for i in range(args.rows)], dtype=object)
    samples = {p: Sample(Path(p), int(rng.integers(len(labels)))) for p in paths}
    errors = np.asarray([""] * args.rows, dtype=object)
    ok = np.ones(args.rows, bool)
    actor = SimpleNamespace(
        classifier=SimpleNamespace(labels=labels), built={"backend": "openvino", "precision": "fp32", "device": "CPU"}
    )
    actor.node = "10.0.0.1"

    # actor side
    t = time.perf_counter()
    old_tables = []
    for s in range(0, args.rows, args.batch):
        results = [
            ImageResult(str(p), top_k(q, labels, len(labels)))
            for p, q in zip(paths[s : s + args.batch], probs[s : s + args.batch], strict=True)
        ]
        old_tables.append(pa.Table.from_pydict(result_columns(results), schema=RESULT_SCHEMA))
    old_actor = (time.perf_counter() - t) / args.rows
    t = time.perf_counter()
    new_batches = []
    for s in range(0, args.rows, args.batch):
        sl = slice(s, s + args.batch)
        new_batches.append(InferenceActor._eval_rows(actor, paths[sl], errors[sl], ok[sl], probs[sl], 0.0, 0.0))
    new_actor = (time.perf_counter() - t) / args.rows
    old_bytes = sum(t.nbytes for t in old_tables) / args.rows
    new_tables = [pa.Table.from_pydict({k: (list(v) if v.ndim > 1 else v) for k, v in b.items()}) for b in new_batches]
    new_bytes = sum(t.nbytes for t in new_tables) / args.rows

    # driver side
    tally = Tally(labels, 5)
    t = time.perf_counter()
    for table in old_tables:
        for row in table.to_pylist():
            p = np.zeros((1, len(labels)), np.float32)
            p[0, np.asarray(row["class_index"], np.int64)] = row["probability"]
            tally.add([samples[row["path"]]], p)
    old_driver = (time.perf_counter() - t) / args.rows
    tally = Tally(labels, 5)
    t = time.perf_counter()
    for b in new_batches:
        tally.add([samples[p] for p in b["path"]], b["probs"])
    new_driver = (time.perf_counter() - t) / args.rows

    print(f"rows {args.rows}, batch {args.batch}, {len(labels)} classes")
    print("| row | actor ms/row | bytes/row (Arrow) | driver ms/row |")
    print("| --- | ---: | ---: | ---: |")
    before = f"{old_actor * 1e3:.3f} | {old_bytes:,.0f} | {old_driver * 1e3:.3f}"
    print(f"| before: all classes as top-k lists + strings, row by row | {before} |")
    print(f"| now: float32 vector, batches | {new_actor * 1e3:.3f} | {new_bytes:,.0f} | {new_driver * 1e3:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
