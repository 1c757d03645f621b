"""Camera-size photos: ``--decode reduced`` (DCT-scaled JPEG decode) against the exact decode.

No real camera photos are available offline, so the stand-in is the sample photos (default
../shared/imagenet/sample) upscaled bicubic to 4032x3024 (12 MP, a phone's main camera) and saved as JPEG
quality 90 in a temporary folder. Upscaled photos carry less fine detail than a real 12 MP photo, so they
are a stand-in for the decode cost and the resize arithmetic, not for a camera's optics: say so with the
numbers.

Two measurements, both through ``Classifier.iter_classify`` (the pipeline ``effnet classify`` runs):

1. agreement: top-1 of ``decode="reduced"`` against ``decode="pillow"`` (exact) on every stand-in photo,
   with real Lite0 weights (the installed records), and the largest change of the top-1 probability;
2. throughput: images/s on the 12 MP stand-ins (exact and reduced) and on the ImageNet-size originals, for
   Lite0 (real weights) and B5 (random init: the same compute), torch backend, ``--batch-size``.

    python benchmarks/bench_camera_photos.py --images 20 --batch-size 4 --rounds 3

A benchmark, not a test: nothing here asserts a speed. Prints one JSON object (and a short table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from PIL import Image  # noqa: E402

from effnet.bench import machine_description  # noqa: E402
from effnet.files import find_images  # noqa: E402
from effnet.predict import Classifier  # noqa: E402


def make_standins(photos: list[Path], folder: Path, size: tuple[int, int]) -> list[Path]:
    out = []
    for i, photo in enumerate(photos):
        with Image.open(photo) as im:
            big = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        path = folder / f"{i:03d}_{photo.stem}.jpg"
        big.save(path, "JPEG", quality=90)
        out.append(path)
    return out


def rate(clf: Classifier, images: list[Path], batch_size: int) -> float:
    """Images/s of one pass of ``iter_classify`` over ``images``."""
    t0 = time.perf_counter()
    n = sum(1 for _ in clf.iter_classify(images, batch_size=batch_size))
    return n / (time.perf_counter() - t0)


def interleaved(runs: dict[str, tuple[Classifier, list[Path]]], batch_size: int, rounds: int) -> dict[str, list[float]]:
    """Every run once per round, the order rotated each round, so that a shared machine's load drifts
    touch every run alike; each classifier is warmed up on one batch first."""
    for clf, images in runs.values():
        list(clf.iter_classify(images[:batch_size], batch_size=batch_size))
    names = list(runs)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            clf, images = runs[name]
            out[name].append(rate(clf, images, batch_size))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=str(REPO.parent / "shared" / "imagenet" / "sample"))
    ap.add_argument("--images", type=int, default=20, help="photos for the throughput runs (default 20)")
    ap.add_argument("--agreement-images", type=int, default=100, help="photos for the agreement check")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--models", default="efficientnet-lite0,efficientnet-b5")
    args = ap.parse_args()

    photos = find_images([args.folder])
    result: dict = {"machine": machine_description(), "load_before": os.getloadavg(), "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="effnet-camera-") as tmp:
        standins = make_standins(photos[: max(args.images, args.agreement_images)], Path(tmp), (4032, 3024))
        exact = Classifier("efficientnet-lite0", decode="pillow", progress=False)
        reduced = Classifier("efficientnet-lite0", decode="reduced", progress=False)
        sample = standins[: args.agreement_images]
        same, worst = 0, 0.0
        for a, b in zip(exact.iter_classify(sample, top_k=1), reduced.iter_classify(sample, top_k=1), strict=True):
            pa, pb = a.predictions[0], b.predictions[0]
            same += pa.class_index == pb.class_index
            worst = max(worst, abs(pa.probability - pb.probability))
        result["agreement"] = {
            "model": "efficientnet-lite0 (real weights)",
            "photos": len(sample),
            "top1_same": same,
            "max_top1_probability_change": round(worst, 4),
        }
        rates: dict = {}
        for model in args.models.split(","):
            weights = None if "lite" in model else False  # B5: random init (no real B5 weights offline)
            exact_clf = Classifier(model, weights, decode="pillow", progress=False)
            reduced_clf = Classifier(model, weights, decode="reduced", progress=False)
            per_round = interleaved(
                {
                    "12mp_pillow": (exact_clf, standins[: args.images]),
                    "12mp_reduced": (reduced_clf, standins[: args.images]),
                    "imagenet_size": (reduced_clf, photos[: args.images]),
                },
                args.batch_size,
                args.rounds,
            )
            row: dict = {name: round(statistics.median(v), 2) for name, v in per_round.items()}
            ratios = [a / b for a, b in zip(per_round["12mp_reduced"], per_round["imagenet_size"], strict=True)]
            # The median of per-round ratios: both sides of a ratio ran minutes apart at most.
            row["reduced_vs_imagenet_size"] = round(statistics.median(ratios), 2)
            row["reduced_vs_imagenet_size_rounds"] = [round(x, 2) for x in ratios]
            rates[model] = row
        result["images_per_s"] = rates
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    for model, row in result["images_per_s"].items():
        print(
            f"{model}: 12 MP exact {row['12mp_pillow']} img/s, 12 MP reduced {row['12mp_reduced']} img/s, "
            f"ImageNet-size {row['imagenet_size']} img/s (reduced/ImageNet-size {row['reduced_vs_imagenet_size']}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
