"""Small-data transfer, measured as a user would: the ImageNet sample as animal vs object, two folds.

    python benchmarks/transfer_small.py [--runs probe ft] [--folds 1 2] [--input-size N] [--json out.json]

The 100 images of ../shared/imagenet/sample are labelled "animal" (ImageNet class index < 398, the synset's
line in ../shared/imagenet/classes.txt) or "object", sorted by name and shuffled with random.Random(0).
Fold 1 holds out images 0-39, fold 2 images 40-79. Each run trains on the other 60 (symlinks in class
folders in a temporary directory) with the issue's command,

    effnet train TRAIN --model efficientnet-lite0 [--freeze body] --epochs 5 --val-split 0.2 --output RUN

and only afterwards are the held-out 40 scored with `effnet classify --weights RUN/model.safetensors --json
--top-k 1`: the run never sees them, and nothing is chosen on them. Wall time and CPU time (user + sys of
the train process and its data workers) are of `effnet train` alone. Prints one table row per run.

``--input-size N`` starts from the model's pretrained weights saved as an effnet-native file whose
preprocessing asks for N px crops (resize N * 256 / 224, the record's interpolation, mean and std): the
cheaper setting of the CI test (tests/train/test_transfer.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
ANIMAL_CLASSES = 398  # ImageNet-1k indices 0..397 are animals
RUNS = {"probe": ["--freeze", "body"], "ft": []}


def labelled_sample() -> list[tuple[Path, str]]:
    lines = (SHARED / "imagenet" / "classes.txt").read_text().splitlines()
    index = {line.split()[0]: i for i, line in enumerate(lines)}
    images = sorted(p for p in (SHARED / "imagenet" / "sample").iterdir() if p.suffix == ".JPEG")
    random.Random(0).shuffle(images)
    return [(p, "animal" if index[p.name.partition("_")[0]] < ANIMAL_CLASSES else "object") for p in images]


def lay_out(items: list[tuple[Path, str]], root: Path) -> Path:
    for path, label in items:
        (root / label).mkdir(parents=True, exist_ok=True)
        os.symlink(path, root / label / path.name)
    return root


def small_input_weights(model: str, size: int, folder: Path) -> Path:
    """The model's default pretrained weights as a native file asking for ``size`` px crops."""
    from dataclasses import replace

    sys.path.insert(0, str(REPO / "src"))
    import effnet
    from effnet.source import resolve_source
    from effnet.weights.native import NativeInfo, save_native

    source = resolve_source(model, None, progress=False)
    pre = replace(source.preprocess, input_size=size, resize_size=round(size * 256 / 224))
    net = effnet.create_model(model, pretrained=True)
    record = source.record
    assert record is not None  # a model name resolves to its default record
    info = NativeInfo(model=model, preprocess=pre, padding=record.padding, bn_eps=record.bn_eps, source=record.name)
    return save_native(net.state_dict(), folder / f"{model}-{size}.safetensors", info)


def effnet(*args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run `python -m effnet ARGS`; (result, wall seconds, CPU seconds of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "effnet", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        sys.exit(f"effnet {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=["probe", "ft"])
    ap.add_argument("--folds", nargs="+", type=int, choices=(1, 2), default=[1, 2])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--input-size", type=int, default=None, help="train and score at N px crops")
    ap.add_argument("--keep", type=Path, default=None, help="keep the folds and runs here")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    sample = labelled_sample()
    rows = []
    print("| fold | run | held-out accuracy | always 'object' | best val acc (majority) | CPU s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="transfer-small-") as tmp_dir:
        tmp = str(args.keep) if args.keep is not None else tmp_dir
        weights = small_input_weights(args.model, args.input_size, Path(tmp)) if args.input_size else None
        for fold in args.folds:
            lo, hi = 40 * (fold - 1), 40 * fold
            held_out, train = sample[lo:hi], sample[:lo] + sample[hi:]
            data = lay_out(train, Path(tmp) / f"fold{fold}" / "train")
            test = lay_out(held_out, Path(tmp) / f"fold{fold}" / "test")
            for name in args.runs:
                run = Path(tmp) / f"fold{fold}" / f"run-{name}"
                extra = ["--weights", str(weights)] if weights else []
                proc, wall, cpu = effnet(
                    "train", str(data), "--model", args.model, *RUNS[name], *extra, "--epochs", "5",
                    "--val-split", "0.2", "--output", str(run), "--json", "--no-progress",
                )  # fmt: skip
                summary = json.loads(proc.stdout)
                scored, _, _ = effnet(
                    "classify", str(test), "--model", args.model, "--weights", str(run / "model.safetensors"),
                    "--json", "--top-k", "1", "--no-progress", "--backend", "torch",
                )  # fmt: skip
                results = [json.loads(line) for line in scored.stdout.splitlines()]
                correct = sum(r["predictions"][0]["label"] == Path(r["path"]).parent.name for r in results)
                majority = sum(label == "object" for _, label in held_out)
                row = {
                    "fold": fold,
                    "run": name,
                    "correct": correct,
                    "held_out": len(results),
                    "majority_correct": majority,
                    "best_epoch": summary["best_epoch"],
                    "best_val_acc": summary["best_val_acc"],
                    "val_majority_acc": summary.get("majority_acc"),
                    "cpu_s": round(cpu, 1),
                    "wall_s": round(wall, 1),
                }
                rows.append(row)
                print(
                    f"| {fold} | {name} | {correct / len(results):.1%} ({correct} / {len(results)}) "
                    f"| {majority / len(held_out):.1%} | {summary['best_val_acc']:.1%} "
                    f"({summary.get('majority_acc') or 0:.1%}) | {cpu:.0f} | {wall:.0f} |",
                    flush=True,
                )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
