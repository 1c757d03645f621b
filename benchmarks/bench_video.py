"""Video throughput: ``Classifier.classify_video`` against pure inference and an OMZ-style loop.

The clip is made here: 1080p H.264 (libx264, yuv420p, 30 frames/s), a window panning across an upscaled
sample photo so that every frame differs. For each model (Lite0 with its real weights, B5 random init: the
same compute), torch backend, the same ``--batch-size``:

- ``inference``: frames/s of the backend alone on ready uint8 crops (the ceiling);
- ``video_every1``: frames/s of ``classify_video(clip, every=1)``: decode (FFmpeg threads), RGB conversion
  (``decode="reduced"``, the default: scaled down in the same pass where the frame is >= 4x the resize target),
  the stills' resize/crop in the reader thread, inference in the caller, all overlapped; ``video_every1_exact``
  the same with ``decode="pillow"`` (every frame converted at full size);
- ``omz_loop``: frames/s of the loop Open Model Zoo's classification demo runs, without its async
  requests: decode a frame, convert, resize/crop, infer (batch 1), draw the top-k; one thread, one frame at
  a time;
- ``video_fps2``: ``classify_video(clip, fps=2)``: frames classified per second of wall time, and the share
  of the run the reader thread spent decoding (most codecs decode every frame whatever the sampling).

    python benchmarks/bench_video.py --seconds 4 --batch-size 4

A benchmark, not a test: nothing asserts a speed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import av  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from effnet.bench import machine_description  # noqa: E402
from effnet.labels import top_k  # noqa: E402
from effnet.predict import Classifier  # noqa: E402
from effnet.preprocess import resize_crop  # noqa: E402
from effnet.video.annotate import draw  # noqa: E402
from effnet.video.reader import displayed  # noqa: E402


def make_clip(path: Path, photo: Path, seconds: float, fps: int = 30) -> Path:
    big = Image.open(photo).convert("RGB").resize((2880, 1620), Image.Resampling.BICUBIC)
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
    stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
    n = int(seconds * fps)
    for i in range(n):
        x = int((2880 - 1920) * i / max(n - 1, 1))
        frame = av.VideoFrame.from_image(big.crop((x, 270, x + 1920, 1350)))
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def pure_inference(clf: Classifier, batch: int, frames: int) -> float:
    size = clf.preprocess.input_size
    crops = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    clf.probabilities(crops)  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < frames:
        clf.probabilities(crops)
        done += batch
    return done / (time.perf_counter() - t0)


def omz_loop(clf: Classifier, clip: Path) -> float:
    t0 = time.perf_counter()
    n = 0
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            image = displayed(frame)
            crop = np.array(resize_crop(image, clf.preprocess))
            probs = clf.probabilities(crop[None])
            draw(image, top_k(probs[0], clf.labels, 5), f"{n / max(time.perf_counter() - t0, 1e-9):.1f} FPS")
            n += 1
    return n / (time.perf_counter() - t0)


def video_rate(clf: Classifier, clip: Path, batch: int, **sampling: Any) -> dict:
    t0 = time.perf_counter()
    video = clf.classify_video(clip, batch_size=batch, top_k=5, **sampling)
    n = sum(1 for r in video if r.ok)
    wall = time.perf_counter() - t0
    return {
        "frames_classified": n,
        "frames_decoded": video.stats.decoded,
        "frames_per_s": round(n / wall, 2),
        "reader_busy_share": round(video.stats.decode_s / wall, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", default=str(REPO.parent / "shared" / "imagenet" / "sample" / "n01440764_tench.JPEG"))
    ap.add_argument("--seconds", type=float, default=4.0, help="clip length for Lite0 (default 4 s, 120 frames)")
    ap.add_argument("--b5-seconds", type=float, default=1.0, help="clip length for B5 (default 1 s: 30 frames)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--models", default="efficientnet-lite0,efficientnet-b5")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved inference/video rounds (median ratio)")
    args = ap.parse_args()
    result: dict = {"machine": machine_description(), "load_before": os.getloadavg(), "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="effnet-video-") as tmp:
        for model in args.models.split(","):
            seconds = args.b5_seconds if "b5" in model else args.seconds
            clip = make_clip(Path(tmp) / f"{model}.mp4", Path(args.photo), seconds)
            clf = Classifier(model, None if "lite" in model else False, progress=False)
            frames = int(seconds * 30)
            row = {"clip": f"1920x1080 H.264 30 fps, {frames} frames"}
            # The 0.9x target is a ratio: inference and video run back to back in each round, the order
            # alternating, and the median of the per-round ratios is reported, so that a shared machine's
            # load drifts touch both sides alike.
            inference, video, ratios = [], [], []
            for r in range(args.rounds):
                if r % 2 == 0:
                    inference.append(pure_inference(clf, args.batch_size, frames))
                    video.append(video_rate(clf, clip, args.batch_size, every=1))
                else:
                    video.append(video_rate(clf, clip, args.batch_size, every=1))
                    inference.append(pure_inference(clf, args.batch_size, frames))
                ratios.append(video[-1]["frames_per_s"] / inference[-1])
            row["inference_frames_per_s"] = round(statistics.median(inference), 2)
            row["video_every1"] = video[ratios.index(statistics.median_low(ratios))]
            row["video_vs_inference"] = round(statistics.median(ratios), 2)
            row["video_vs_inference_rounds"] = [round(x, 2) for x in ratios]
            row["video_every1_exact"] = video_rate(clf, clip, args.batch_size, every=1, decode="pillow")
            row["omz_loop_frames_per_s"] = round(omz_loop(clf, clip), 2)
            row["video_fps2"] = video_rate(clf, clip, args.batch_size, fps=2)
            result[model] = row
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
