"""effnet classify PATH... — top-k ImageNet labels for image files and folders."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

from tqdm import tqdm

from ..files import find_images, is_live, is_video
from ..predict import ImageResult, clamp_top_k
from ..preprocess import ImageSource
from .classify_video import check_video_arguments, classify_video

STDIN = "-"  # as a PATH: one image read from standard input


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import (
        add_backend_arguments,
        add_decode_argument,
        add_device_argument,
        add_model_arguments,
        add_model_path_argument,
    )
    from .classify_video import add_video_arguments

    p = sub.add_parser("classify", help="classify images and videos", description=__doc__)
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image files and/or folders (searched recursively, symlinked folders followed, hidden files skipped); "
        "- for one image on stdin; video files (mp4, mkv, webm, mov, avi; also found in folders), stream URLs "
        "(rtsp://, http(s)://, udp://...) and cameras (/dev/videoN); with --engine ray also URIs (s3://, gs://, file://)",
    )
    add_model_arguments(p)
    p.add_argument("--top-k", type=int, default=5, help="labels per image (default: %(default)s)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per forward pass (default: 1; with --engine ray 8 per CPU actor, 64 per GPU actor)",
    )
    add_backend_arguments(p)
    add_model_path_argument(p)
    add_device_argument(p)
    add_decode_argument(p, default="reduced")  # photos from cameras: eval keeps the exact decode
    p.add_argument("--json", action="store_true", help="one JSON object per image per line on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_video_arguments(p)
    add_ray_arguments(p, workers=True)
    p.add_argument(
        "--output",
        metavar="OUT",
        default=None,
        help="--engine ray: OUT.jsonl (the lines of --json) or a folder / OUT.parquet (Parquet), written atomically",
    )
    p.add_argument(
        "--from-list",
        metavar="FILE",
        action="append",
        default=[],
        help="--engine ray: a text file of image paths or URIs, one per line (read in the cluster)",
    )
    p.set_defaults(func=run)


def add_ray_arguments(p: argparse.ArgumentParser, *, workers: bool) -> None:
    """--engine and the Ray options, shared by classify and eval (docs/distributed.md)."""
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default): this process; ray: a Ray cluster (pip install 'effnet[ray]')",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        default=None,
        help="--engine ray: cluster to join (auto, host:6379, ray://host:10001, or local); default: RAY_ADDRESS "
        "or a cluster running here, else a local Ray for this run",
    )
    if workers:
        p.add_argument(
            "--workers",
            default=None,
            metavar="N|MIN:MAX",
            help="--engine ray: inference actors, N or MIN:MAX (default: as many as fit now, growing with the cluster)",
        )
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        metavar="F",
        help="--engine ray: CPUs each inference actor reserves and uses (default: 1 reserved, all cores used)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        metavar="F",
        help="--engine ray: GPUs per inference actor; the actors then run on CUDA (--device cuda implies 1)",
    )
    p.add_argument(
        "--shared-inputs",
        action="store_true",
        help="--engine ray: local input paths are on a filesystem every node sees (NFS...): nodes read them. "
        "Without it tasks on the driver's node read local inputs and stream them to the others (no size limit)",
    )


def ray_workers(text: str | None) -> int | tuple[int, int] | None:
    """``--workers`` for --engine ray: N, or MIN:MAX for an autoscaling pool."""
    from . import UsageError

    if text is None:
        return None
    try:
        if ":" in text:
            low, high = (int(x) for x in text.split(":", 1))
            return low, high
        return int(text)
    except ValueError:
        raise UsageError(f"--workers is N or MIN:MAX, got {text!r}") from None


def ray_options(args: argparse.Namespace, batch_size: int | None, workers: int | tuple[int, int] | None):
    """The Ray pipeline's options from the parsed flags (after checking Ray is installed). The device and
    backend are passed as asked (``auto`` stays ``auto``): each actor decides on its node."""
    from ..distributed.data import PipelineOptions

    return PipelineOptions(
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        top_k=getattr(args, "top_k", 5),
        batch_size=batch_size,
        workers=workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )


def _run_ray(args: argparse.Namespace) -> int:
    from ..distributed import check_installed
    from . import UsageError

    check_installed("effnet classify --engine ray")
    from .classify_ray_video import classify_videos_on_ray

    videos = classify_videos_on_ray(args, lambda: ray_options(args, args.batch_size, ray_workers(args.workers)))
    if videos is not None:  # the inputs were videos: each classified on a worker
        return videos
    if STDIN in args.paths:
        raise UsageError("'-' (an image on stdin) is for local classify; --engine ray reads files, folders and URIs")
    if args.output is None or args.json:
        raise UsageError("--engine ray writes --output OUT (.jsonl, .parquet or a folder), not --json on stdout")
    if not args.paths and not args.from_list:
        raise UsageError(
            "the following arguments are required: PATH (image files, folders or URIs) or --from-list FILE"
        )
    from ..distributed.jobs import ClassifyJob, check_classify, run_classify
    from . import source_from_args

    options = ray_options(args, args.batch_size, ray_workers(args.workers))
    from ..errors import EffnetError

    try:
        options.check()
    except EffnetError as e:
        raise UsageError(str(e)) from None
    job = ClassifyJob(
        paths=args.paths,
        output=args.output,
        from_list=args.from_list,
        address=args.ray_address,
        options=options,
        shared_inputs=args.shared_inputs,
        progress=not args.no_progress,
    )
    checked = check_classify(job)  # a bad --output or no images fail before the weights load and Ray starts
    summary = run_classify(job, source_from_args(args, {}), checked)  # the source, resolved once, is shipped
    return 1 if summary.errors else 0


def _print_human(r: ImageResult) -> None:
    if r.error is not None:
        print(f"{r.path}: error: {r.error}")
        return
    print(r.path)
    for p in r.predictions:
        print(f"  {p.probability:7.2%}  {p.label}  ({p.synset}, {p.class_index})")


def run(args: argparse.Namespace) -> int:
    from . import UsageError, classifier_from_args, model_path_options, source_from_args

    if args.top_k < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UsageError("--top-k and --batch-size must be >= 1")
    model_path = model_path_options(args)
    if args.engine == "ray":
        return _run_ray(args)
    if args.output is not None or args.from_list or args.workers is not None or args.shared_inputs:
        raise UsageError(
            "--output, --from-list, --workers and --shared-inputs are for --engine ray (locally: --json > FILE)"
        )
    if not args.paths:
        raise UsageError("the following arguments are required: PATH (image files or folders)")
    if args.paths.count(STDIN) > 1:
        raise UsageError("'-' (the image on stdin) can be given once")
    if STDIN in args.paths and sys.stdin.isatty():
        raise UsageError("'-' reads one image from stdin, but stdin is a terminal: pipe or redirect an image into it")
    # '-' is the image on stdin, read by the pipeline like any binary file object (bounded, in a worker).
    # Stream URLs and cameras are kept as given (a Path would fold rtsp:// into rtsp:/); folders give videos too.
    inputs: list[ImageSource] = []
    for raw in args.paths:
        inputs.extend(
            [sys.stdin.buffer] if raw == STDIN else [raw] if is_live(raw) else find_images([raw], videos=True)
        )
    if not inputs:
        raise UsageError(f"no images found in {', '.join(args.paths)} (nor videos)")
    images = [x for x in inputs if not _is_video(x)]
    check_video_arguments(args, len(inputs) - len(images), inputs)
    # Many images or a video file are a bulk job; one image or a live stream stays on LATENCY.
    bulk = len(images) > 1 or any(_is_video(x) and not is_live(str(x)) for x in inputs)
    model = source_from_args(args, model_path)  # the model source, resolved once: the classifier is handed it
    clf = classifier_from_args(args, model, model_path, workload="throughput" if bulk else "latency")
    top_k = clamp_top_k(args.top_k, len(clf.labels))
    if top_k != args.top_k:  # the server's rule too: clamp, and say so
        print(
            f"effnet: note: --top-k {args.top_k} is more than the model's {top_k} classes; giving all {top_k}",
            file=sys.stderr,
        )
    failed = failed_videos = 0
    bar = tqdm(
        total=len(images), unit="img", file=sys.stderr, disable=True if args.no_progress or len(images) < 2 else None
    )
    with bar:
        for is_clip, group in itertools.groupby(inputs, key=_is_video):  # in the order given
            if is_clip:
                for source in group:
                    bar.clear()
                    failed_videos += classify_video(clf, str(source), args, top_k) > 0
                continue
            for result in clf.iter_classify(
                list(group),
                top_k=top_k,
                batch_size=args.batch_size or 1,
                name_of=lambda image: STDIN if image is sys.stdin.buffer else str(image),
            ):
                failed += not result.ok
                if args.json:
                    print(json.dumps(result.to_dict()), flush=True)
                else:
                    bar.clear()
                    _print_human(result)
                bar.update(1)
    counts = clf.decode_counts()
    if counts is not None:  # --decode gpu: how many images nvJPEG decoded, how many took the Pillow path
        print(f"effnet: {counts.summary()}", file=sys.stderr)
    if failed:
        print(f"effnet: {failed} of {len(images)} images could not be classified", file=sys.stderr)
    if failed_videos:
        print(f"effnet: {failed_videos} of {len(inputs) - len(images)} videos ended with an error", file=sys.stderr)
    return 1 if failed or failed_videos else 0


def _is_video(item: object) -> bool:
    return isinstance(item, (str, os.PathLike)) and is_video(str(item))
