"""How similar are copies of a photo, and how similar are distinct photos, on each probe embedding?

Makes from each of the 100 sample photos a re-encoded (JPEG quality 60), a half-size, a 90 % centre-cropped
and (for reference, not called a duplicate) a mirrored and a 60 % corner-cropped view, embeds all with
Lite0 through effnet.audit's embedding pass, and prints per embedding the lowest cosine similarity of a copy
to its original and the highest similarity between two distinct originals. NEAR_DUPLICATE and
DUPLICATE_TAP (effnet.train.datacheck, effnet.audit.run) were chosen from this output (docs/audit.md).

    PYTHONPATH=src python benchmarks/audit_thresholds.py [../shared/imagenet/sample]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from effnet.audit.embed import embed_images, file_facts
from effnet.source import resolve_source
from effnet.train.datacheck import unit_rows

COPIES = {
    "reencoded_q60": lambda im: im,
    "half_size": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BILINEAR),
    "crop90": lambda im: im.crop((im.width * 0.05, im.height * 0.05, im.width * 0.95, im.height * 0.95)),
    "mirrored": ImageOps.mirror,
    "corner_crop60": lambda im: im.crop((0, 0, int(im.width * 0.77), int(im.height * 0.77))),
}


def main() -> None:
    sample = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/imagenet/sample")
    originals = sorted(sample.glob("*.JPEG"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = list(originals)
        for name, make in COPIES.items():
            for p in originals:
                out = Path(tmp) / f"{name}-{p.name}"
                make(Image.open(p).convert("RGB")).save(out, format="JPEG", quality=60)
                paths.append(out)
        source = resolve_source("efficientnet-lite0")
        emb = embed_images(paths, [file_facts(p) for p in paths], source, cache=False)
    n = len(originals)
    for tap in emb.taps:
        x = unit_rows(emb.block(tap))
        sims = x[:n] @ x[:n].T
        np.fill_diagonal(sims, -1)
        line = [f"{'head' if tap is None else f'stage {tap}'}: distinct max {sims.max():.3f}"]
        line.append(f"p99.9 {np.quantile(sims[np.triu_indices(n, 1)], 0.999):.3f}")
        for k, name in enumerate(COPIES, 1):
            pair = (x[:n] * x[k * n : (k + 1) * n]).sum(1)
            line.append(f"{name} min {pair.min():.3f}")
        print(", ".join(line))


if __name__ == "__main__":
    main()
