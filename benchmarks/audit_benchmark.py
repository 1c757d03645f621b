"""effnet audit on a generated two-class folder: label-issue recall/precision, copies paired, time, peak memory.

The folder is made from the 100 sample photos (animal vs object, as in tests/train): N images, each an
augmented view of a sample photo (a random crop of 40-100 % of the area, aspect 3/4-4/3, a random mirror,
JPEG quality 85) — so a folder of a few hundred or 10k images holds many views of the same 100 photos, which
is said beside every number. A fraction (default 10 %) is put in the wrong class folder, and a handful of
views get a JPEG-re-encoded copy (quality 60) beside them. Then `effnet.audit.audit` runs in-process (Lite0,
a fresh embedding cache) and the script prints recall and precision of the label issues against the injected
set, whether every copy is grouped with its original, the stage timings and the peak resident memory.

Each stage's time and peak resident memory (benchmarks/audit_stages.py: the kernel's high-water mark, reset
between stages) and the measured size of the faiss indexes on the folder's head embeddings go into the JSON,
with the load average before and after. The folder is built by ``--build-workers`` processes (the same views
for a given seed: every random draw is made in this process); ``--keep DIR`` builds it there once and reuses
it (``DIR/manifest.json``) on later runs.

    PYTHONPATH=src python benchmarks/audit_benchmark.py --images 300 [--wrong 0.1] [--copies 5] [--keep DIR]
        [--out RESULT.json]
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


def view_box(size: tuple[int, int], rng: random.Random) -> tuple[tuple[int, int, int, int], bool]:
    """A random crop of 40-100 % of the area (aspect 3/4-4/3) and whether to mirror it: the draws, in order."""
    width, height = size
    area = rng.uniform(0.4, 1.0) * width * height
    ratio = rng.uniform(3 / 4, 4 / 3)
    w = min(width, int(round((area * ratio) ** 0.5)))
    h = min(height, int(round((area / ratio) ** 0.5)))
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    return (x, y, x + w, y + h), rng.random() < 0.5


def save_view(job: tuple[str, tuple[int, int, int, int], bool, str]) -> None:
    photo, box, mirror, path = job
    im = Image.open(photo).convert("RGB").crop(box)
    (ImageOps.mirror(im) if mirror else im).save(path, format="JPEG", quality=85)


def build(root: Path, n: int, wrong: float, copies: int, seed: int, workers: int) -> tuple[set[str], dict[str, str]]:
    from concurrent.futures import ProcessPoolExecutor

    from tests.train.conftest import class_index, task_label

    index = class_index()
    photos = sorted((REPO.parent / "shared" / "imagenet" / "sample").glob("*.JPEG"))
    sizes = {p: Image.open(p).size for p in photos}
    rng = random.Random(seed)
    flipped = set(rng.sample(range(n), int(round(wrong * n))))
    mislabelled: set[str] = set()
    made: list[Path] = []
    jobs = []
    for i in range(n):
        photo = photos[i % len(photos)]
        label = task_label(photo, index)
        if i in flipped:
            label = "object" if label == "animal" else "animal"
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}-{photo.stem}.jpg"
        box, mirror = view_box(sizes[photo], rng)
        jobs.append((str(photo), box, mirror, str(path)))
        made.append(path)
        if i in flipped:
            mislabelled.add(str(path))
    with ProcessPoolExecutor(max(1, workers)) as pool:
        list(pool.map(save_view, jobs, chunksize=64))
    pairs: dict[str, str] = {}
    for i in rng.sample([i for i in range(n) if i not in flipped], copies):
        original = made[i]
        copy = original.with_name(original.stem + "-copy.jpg")
        Image.open(original).save(copy, format="JPEG", quality=60)
        pairs[str(copy)] = str(original)
    return mislabelled, pairs


def built_folder(root: Path, args: argparse.Namespace) -> tuple[set[str], dict[str, str], float]:
    """The folder under ``root`` (reused when ``root/manifest.json`` says it was built with these settings)."""
    manifest = root / "manifest.json"
    settings = {"images": args.images, "wrong": args.wrong, "copies": args.copies, "seed": args.seed}
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved["settings"] == settings:
            return set(saved["mislabelled"]), saved["pairs"], 0.0
        raise SystemExit(f"{root} holds a folder built with {saved['settings']}, not {settings}")
    t0 = time.perf_counter()
    mislabelled, pairs = build(root / "data", args.images, args.wrong, args.copies, args.seed, args.build_workers)
    built = time.perf_counter() - t0
    record = {"settings": settings, "mislabelled": sorted(mislabelled), "pairs": pairs}
    manifest.write_text(json.dumps(record))
    return mislabelled, pairs, built


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--wrong", type=float, default=0.1)
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="build the folder here (and keep it) instead of a temporary one")
    ap.add_argument("--build-workers", type=int, default=2, help="processes building the folder (default: 2)")
    ap.add_argument("--out", help="also write the result JSON here")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from audit_stages import StageTracker, index_memory, instrument

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("EFFNET_HOME", str(Path(tmp) / "home"))
        mislabelled, pairs, built = built_folder(root, args)
        from effnet.audit import audit

        tracker = StageTracker()
        instrument(tracker)
        stop = tracker.heartbeat()
        load_before = os.getloadavg()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the first reset: a true peak
        tracker.enter("hash")
        report = audit(root / "data", model="efficientnet-lite0", progress=False)
        stop.set()
        load_after = os.getloadavg()
        flagged = {r["path"] for r in report.label_issues}
        hits = len(flagged & mislabelled)
        groups = [set(d["paths"]) for d in report.duplicates]
        paired = sum(any({c, o} <= g for g in groups) for c, o in pairs.items())
        top = [r["path"] in mislabelled for r in report.label_issues[: len(mislabelled)]]
        peak = tracker.peak()
        result = {
            "images": report.images,
            "injected_wrong": len(mislabelled),
            "flagged": len(flagged),
            "recall": hits / max(1, len(mislabelled)),
            "precision": hits / max(1, len(flagged)),
            "precision_at_injected_count": sum(top) / max(1, len(top)),
            "label_embedding": report.label_embedding,
            "label_check": report.label_check,
            "copies": len(pairs),
            "copies_paired": paired,
            "duplicate_groups": len(report.duplicates),
            "largest_group": max((len(g) for g in groups), default=0),
            "outliers": len(report.outliers),
            "build_s": round(built, 1),
            "seconds": {k: round(v, 1) for k, v in report.seconds.items()},
            "stages": tracker.rounded(),
            "stage_peaks_reset": tracker.resets,
            "peak_rss_mib": round(peak),  # the process's peak over the audit (the largest high-water mark read)
            "peak_rss_before_audit_mib": round(rss_before / 1024),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": load_after,
        }
        print(json.dumps(result, indent=1), flush=True)
        from effnet.audit.embed import embed_images, file_facts
        from effnet.source import resolve_source
        from effnet.train.datacheck import unit_rows

        # The head embeddings again (from the cache the run just filled) for the index sizes.
        paths = sorted(p for p in (root / "data").rglob("*.jpg"))
        emb = embed_images(paths, [file_facts(p) for p in paths], resolve_source("efficientnet-lite0"), progress=False)
        result["faiss_index"] = index_memory(unit_rows(emb.block(None)))
        result["load_end"] = os.getloadavg()
        print(json.dumps(result["faiss_index"], indent=1), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
