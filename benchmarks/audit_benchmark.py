"""effnet audit on a generated two-class folder: label-issue recall/precision, copies paired, time, peak memory.

The folder is made from the 100 sample photos (animal vs object, as in tests/train): N images, each an
augmented view of a sample photo (a random crop of 40-100 % of the area, aspect 3/4-4/3, a random mirror,
JPEG quality 85) — so a folder of a few hundred or 10k images holds many views of the same 100 photos, which
is said beside every number. A fraction (default 10 %) is put in the wrong class folder, and a handful of
views get a JPEG-re-encoded copy (quality 60) beside them. Then `effnet.audit.audit` runs in-process (Lite0,
a fresh embedding cache) and the script prints recall and precision of the label issues against the injected
set, whether every copy is grouped with its original, the stage timings and the peak resident memory.

    PYTHONPATH=src python benchmarks/audit_benchmark.py --images 300 [--wrong 0.1] [--copies 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def view(photo: Path, rng: random.Random) -> Image.Image:
    im = Image.open(photo).convert("RGB")
    area = rng.uniform(0.4, 1.0) * im.width * im.height
    ratio = rng.uniform(3 / 4, 4 / 3)
    w = min(im.width, int(round((area * ratio) ** 0.5)))
    h = min(im.height, int(round((area / ratio) ** 0.5)))
    x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
    im = im.crop((x, y, x + w, y + h))
    return ImageOps.mirror(im) if rng.random() < 0.5 else im


def build(root: Path, n: int, wrong: float, copies: int, seed: int) -> tuple[set[str], dict[str, str]]:
    from tests.train.conftest import class_index, task_label

    index = class_index()
    photos = sorted((REPO.parent / "shared" / "imagenet" / "sample").glob("*.JPEG"))
    rng = random.Random(seed)
    flipped = set(rng.sample(range(n), int(round(wrong * n))))
    mislabelled: set[str] = set()
    made: list[Path] = []
    for i in range(n):
        photo = photos[i % len(photos)]
        label = task_label(photo, index)
        if i in flipped:
            label = "object" if label == "animal" else "animal"
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}-{photo.stem}.jpg"
        view(photo, rng).save(path, format="JPEG", quality=85)
        made.append(path)
        if i in flipped:
            mislabelled.add(str(path))
    pairs: dict[str, str] = {}
    for i in rng.sample([i for i in range(n) if i not in flipped], copies):
        original = made[i]
        copy = original.with_name(original.stem + "-copy.jpg")
        Image.open(original).save(copy, format="JPEG", quality=60)
        pairs[str(copy)] = str(original)
    return mislabelled, pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--wrong", type=float, default=0.1)
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="build the folder here (and keep it) instead of a temporary one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        os.environ.setdefault("EFFNET_HOME", str(Path(tmp) / "home"))
        t0 = time.perf_counter()
        mislabelled, pairs = build(root / "data", args.images, args.wrong, args.copies, args.seed)
        built = time.perf_counter() - t0
        from effnet.audit import audit

        report = audit(root / "data", model="efficientnet-lite0")
        flagged = {r["path"] for r in report.label_issues}
        hits = len(flagged & mislabelled)
        groups = [set(d["paths"]) for d in report.duplicates]
        paired = sum(any({c, o} <= g for g in groups) for c, o in pairs.items())
        top = [r["path"] in mislabelled for r in report.label_issues[: len(mislabelled)]]
        result = {
            "images": report.images,
            "injected_wrong": len(mislabelled),
            "flagged": len(flagged),
            "recall": hits / max(1, len(mislabelled)),
            "precision": hits / max(1, len(flagged)),
            "precision_at_injected_count": sum(top) / max(1, len(top)),
            "label_embedding": report.label_embedding,
            "copies": len(pairs),
            "copies_paired": paired,
            "duplicate_groups": len(report.duplicates),
            "outliers": len(report.outliers),
            "build_s": round(built, 1),
            "seconds": {k: round(v, 1) for k, v in report.seconds.items()},
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
        }
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
