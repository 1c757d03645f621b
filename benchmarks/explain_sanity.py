"""The saliency sanity checks of tests/explain on every sample image, with the numbers for the docs.

    python benchmarks/explain_sanity.py [--model efficientnet-lite0] [--json out.json]

1. Localization: each of the 100 sample photos shrunk into one quadrant (photo i: quadrant i mod 4) of a plain
   canvas and, separately, of a noise canvas (200 composites); a hit when the largest share of positive
   Grad-CAM attribution lies in that quadrant.
2. Model randomization (Adebayo et al. 2018): Spearman rank correlation between each photo's real Grad-CAM
   map and the map after re-initializing the last two stages, the head and the classifier.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.saliency_checks import QUADRANTS, composite, randomize_top, spearman  # noqa: E402
from tests.testutils import SAMPLE  # noqa: E402

from effnet.preprocess import decode_crop  # noqa: E402
from effnet.saliency import Explainer  # noqa: E402
from effnet.source import resolve_source  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    photos = sorted(SAMPLE.glob("*.JPEG"))
    ex = Explainer(resolve_source(args.model))
    size = ex.preprocess.input_size
    t0 = time.perf_counter()
    hits: dict[str, list[bool]] = {"plain": [], "noise": []}
    for i, photo in enumerate(photos):
        for canvas in hits:
            e = ex.explain_crop(composite(photo, size, i % 4, canvas, seed=i), name=photo.name)
            shares = e.quadrant_shares()
            hits[canvas].append(max(shares, key=shares.__getitem__) == QUADRANTS[i % 4])
        if (i + 1) % 20 == 0:
            done = hits["plain"] + hits["noise"]
            print(f"{i + 1} photos: {sum(done)}/{len(done)} composites localized", file=sys.stderr, flush=True)
    crops = [decode_crop(p, ex.preprocess) for p in photos]
    real = [ex.explain_crop(c).attribution for c in crops]
    randomize_top(ex.model)
    rhos = np.array([spearman(r, ex.explain_crop(c).attribution) for r, c in zip(real, crops, strict=True)])
    result = {
        "model": args.model,
        "photos": len(photos),
        "localization": {k: float(np.mean(v)) for k, v in hits.items()},
        "localization_all": float(np.mean(hits["plain"] + hits["noise"])),
        "randomization_spearman": {
            "median": float(np.median(rhos)),
            "mean": float(rhos.mean()),
            "max": float(rhos.max()),
            "below_0.5": float(np.mean(rhos < 0.5)),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
