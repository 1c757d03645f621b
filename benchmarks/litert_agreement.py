"""Top-1 agreement of a quantized ``.tflite`` with the fp32 torch model, on the sample images and on a larger
set built from them (docs/export.md, "TFLite", and backends/accuracy.py, which records the results).

    python benchmarks/litert_agreement.py --model efficientnet-lite0 --precision int8 [--held-out 1::5]
    python benchmarks/litert_agreement.py --model efficientnet-lite0 --tflite FILE.tflite

The file is the export cache's (``effnet export tflite --precision P ...``) or ``--tflite``. ``--held-out
START::STEP`` leaves out the images the quantizer was calibrated on (the converter tests calibrate on
``sample[1::5]``, 20 images), so only the other 80 are scored; without it all 100 are. Each scored image
gives five views, each scored against the fp32 model on the same view: the eval crop (what `effnet
classify` sees), its mirror image, the center crop after resizing the shorter side to the crop size (no
border cut off) and to 1.3x the crop size, and that one's mirror image. The views of one image are
correlated: the larger set is finer-grained (one near-tie flip costs 0.25 % of 400, not 1.25 % of 80), not
five times the evidence.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effnet.backends import ACCURACY_GATE, create_backend  # noqa: E402
from effnet.preprocess import load_image, resize_crop  # noqa: E402
from effnet.source import resolve_source  # noqa: E402

SAMPLE = REPO.parent / "shared" / "imagenet" / "sample"


def views(path: Path, preprocess) -> list[np.ndarray]:
    """The five views of one image (module docstring), uint8 NHWC crops at the record's size."""
    image = load_image(path)
    size = preprocess.input_size
    crops = []
    for resize in (preprocess.resize_size, size, round(size * 1.3)):
        crop = np.asarray(resize_crop(image, dataclasses.replace(preprocess, resize_size=resize)))
        crops += [crop] if resize == size else [crop, crop[:, ::-1]]
    return [np.ascontiguousarray(c) for c in crops]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--precision", default="int8", help="which cached export runs (unless --tflite)")
    ap.add_argument("--tflite", default=None, help="a .tflite file instead of the export cache's")
    ap.add_argument("--held-out", default=None, metavar="START::STEP", help="the calibration images to leave out")
    ap.add_argument("--sample", default=str(SAMPLE))
    args = ap.parse_args()
    images = sorted(p for p in Path(args.sample).iterdir() if p.suffix == ".JPEG")
    scored = list(range(len(images)))
    if args.held_out:
        start, step = (int(x) for x in args.held_out.split("::"))
        scored = [i for i in scored if i not in set(range(start, len(images), step))]
    source = resolve_source(args.model, None, progress=False)
    reference = create_backend("torch", source)
    options = {"model_path": args.tflite} if args.tflite else {}
    litert = create_backend("litert", source, precision=args.precision, threads=1, **options)
    batch = np.stack([v for i in scored for v in views(images[i], source.preprocess)])
    expected = np.concatenate([reference(batch[i : i + 20]).argmax(1) for i in range(0, len(batch), 20)])
    got = litert(batch).argmax(1)
    agree = got == expected
    report = {
        "model": args.model,
        "file": str(litert.model_path),
        "images": len(scored),
        "eval_crops": f"{int(agree[::5].sum())}/{len(scored)}",
        "views": f"{int(agree.sum())}/{len(agree)}",
        "views_rate": round(float(agree.mean()), 4),
        "gate": ACCURACY_GATE,
        "disagreeing_images": sorted({scored[i // 5] for i in np.nonzero(~agree)[0]}),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
