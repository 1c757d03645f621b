"""Linear-probe variants on the frozen Lite0 embeddings of the small transfer task (docs/training.md).

    python benchmarks/transfer_probe_variants.py

The splits of benchmarks/transfer_small.py (fold 1: images 0-39 held out, fold 2: 40-79) and 8 random
60/40 splits; on each, the run's own 80/20 validation split is taken out of the 60 exactly as `effnet
train --val-split 0.2` does, the probe is fitted on the remaining 48 (effnet.train.probe, L2 by 5-fold
CV, as `--freeze body` fits it) and the held-out 40 are only scored, on their clean eval crop as `effnet
classify` sees them. The clean and horizontally flipped eval crops are embedded once.

The variants on the head convolution's embedding were the probe before issue 20's second round; "chosen
embedding" is the probe `effnet train` fits now (effnet.train.probe.select_embedding: the head's or one of
the last four stages' pooled outputs, chosen by cross-validation on the 48 training images).
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from transfer_small import labelled_sample, lay_out  # noqa: E402

from effnet.evaluate.datasets import find_class_folders  # noqa: E402
from effnet.preprocess import decode_crop  # noqa: E402
from effnet.source import resolve_source  # noqa: E402
from effnet.train import probe  # noqa: E402
from effnet.train.data import Collate, split_samples  # noqa: E402

TAPS: list[int | None] = [None, 6, 5, 4, 3]  # the candidates of effnet train's probe (loop.PROBE_STAGES = 4)
VARIANTS: dict[str, dict[str, Any]] = {
    "chosen embedding": {"select": True},
    "head embedding": {},
    "flipped rows": {"flip_rows": True},  # the flipped view as extra training rows
    "flip-averaged": {"flip_avg": True},  # clean and flipped embeddings averaged per image
    "standardized": {"std": True},  # z-scored features (foldable into the linear head)
    "L2-normalized": {"l2n": True},
    "wider L2 grid": {"grid": (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)},
}


def embed_all(sample: list[tuple[Path, str]]) -> dict[str, dict[int | None, torch.Tensor]]:
    """Image name -> tap -> [2, D] float64 embeddings of its eval crop and of the crop flipped left-right."""
    source = resolve_source("efficientnet-lite0", None, progress=False)
    net = source.build_model(num_classes=2).eval()
    collate = Collate(source.preprocess)
    out = {}
    with torch.no_grad():
        for path, _ in sample:
            crop = decode_crop(path, source.preprocess)
            x, _ = collate([(crop, 0), (np.ascontiguousarray(crop[:, ::-1]), 0)])
            out[path.name] = dict(zip(TAPS, (e.double() for e in net.pooled_embeddings(x.float(), TAPS)), strict=True))
    return out


def fit_variant(
    v: dict[str, Any], taps: dict[int | None, torch.Tensor], y: torch.Tensor
) -> tuple[Callable, probe.ProbeFit]:
    if v.get("select"):
        chosen = probe.select_embedding({t: [x[:, 0]] for t, x in taps.items()}, y, 2, seed=0)
        cw, cb = chosen.weight.double(), chosen.bias.double()
        return (lambda z: (z[chosen.embedding_stage] @ cw.T + cb).argmax(1)), chosen
    xs = taps[None]
    views = [xs[:, 0], xs[:, 1]] if v.get("flip_rows") else [xs.mean(1)] if v.get("flip_avg") else [xs[:, 0]]
    rows = torch.cat(views)
    mu, sd = rows.mean(0), rows.std(0) + 1e-6

    def features(z: torch.Tensor) -> torch.Tensor:
        if v.get("std"):
            z = (z - mu) / sd
        if v.get("l2n"):
            z = z / z.norm(dim=1, keepdim=True) * 10
        return z

    fit = probe.fit_probe([features(w) for w in views], y, 2, seed=0, grid=v.get("grid", probe.L2_GRID))
    w, b = fit.weight.double(), fit.bias.double()
    return (lambda z: (features(z[None]) @ w.T + b).argmax(1)), fit


def splits() -> Iterator[tuple[str, list[int]]]:
    yield "fold1", list(range(0, 40))
    yield "fold2", list(range(40, 80))
    for s in range(1, 9):
        idx = list(range(100))
        random.Random(100 + s).shuffle(idx)
        yield f"r{s}", sorted(idx[:40])


def main() -> None:
    torch.set_num_threads(1)
    sample = labelled_sample()
    emb = embed_all(sample)
    gains: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for name, held in splits():
            train = [sample[i] for i in range(100) if i not in set(held)]
            data = find_class_folders(lay_out(train, Path(tmp) / name))
            fit_on, _ = split_samples(data.samples, 0.2, 0)  # as effnet train --val-split 0.2 --seed 0
            xs = {t: torch.stack([emb[s.path.name][t] for s in fit_on]) for t in TAPS}
            y = torch.tensor([s.label for s in fit_on])
            classes = [c.label for c in data.labels]
            test_x = {t: torch.stack([emb[sample[i][0].name][t][0] for i in held]) for t in TAPS}
            test_y = torch.tensor([classes.index(sample[i][1]) for i in held])
            majority = (test_y == classes.index("object")).double().mean().item()
            line = [name, f"majority {majority:.3f}"]
            for k, v in VARIANTS.items():
                predict, fit = fit_variant(v, xs, y)
                acc = (predict(test_x) == test_y).double().mean().item()
                gains[k].append(acc - majority)
                where = f"stage {fit.embedding_stage}, " if v.get("select") and fit.embedding_stage is not None else ""
                line.append(f"{k} {acc:.3f} ({where}L2 {fit.l2:g})")
            print(" | ".join(line), flush=True)
    for k, g in gains.items():
        print(f"{k}: mean gain over the majority class {np.mean(g):+.3f}, worst {np.min(g):+.3f}")


if __name__ == "__main__":
    main()
