"""effnet classify PATH... — top-k ImageNet labels for image files and folders."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from ..predict import Classifier, ImageResult
from ..preprocess import find_images


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_backend_arguments, add_device_argument, add_model_arguments

    p = sub.add_parser("classify", help="classify images", description=__doc__)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (searched recursively)")
    add_model_arguments(p)
    p.add_argument("--top-k", type=int, default=5, help="labels per image (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    add_backend_arguments(p)
    add_device_argument(p)
    p.add_argument(
        "--decode",
        default="pillow",
        choices=("pillow", "gpu"),
        help="pillow (default): the exact pixels of the model card's pipeline; gpu: nvJPEG and an "
        "antialiased bicubic resize on the GPU (needs torchvision and --device cuda; close to, not "
        "identical with, Pillow's pixels; non-JPEG files still take the Pillow path)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image per line on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def _print_human(r: ImageResult) -> None:
    if r.error is not None:
        print(f"{r.path}: error: {r.error}")
        return
    print(r.path)
    for p in r.predictions:
        print(f"  {p.probability:7.2%}  {p.label}  ({p.synset}, {p.class_index})")


def run(args: argparse.Namespace) -> int:
    from . import UsageError

    if args.top_k < 1 or args.batch_size < 1:
        raise UsageError("--top-k and --batch-size must be >= 1")
    images = find_images(args.paths)
    if not images:
        raise UsageError(f"no images found in {', '.join(args.paths)}")
    options = {} if args.precision is None else {"precision": args.precision}
    clf = Classifier(
        args.model,
        args.weights,
        backend=args.backend,
        device=args.device,
        decode=args.decode,
        progress=not args.no_progress,
        batch_hint=args.batch_size,
        **options,
    )
    failed = 0
    bar = tqdm(
        total=len(images), unit="img", file=sys.stderr, disable=True if args.no_progress or len(images) < 2 else None
    )
    with bar:
        for result in clf.iter_classify(images, top_k=args.top_k, batch_size=args.batch_size):
            failed += not result.ok
            if args.json:
                print(json.dumps(result.to_dict()), flush=True)
            else:
                bar.clear()
                _print_human(result)
            bar.update(1)
    if failed:
        print(f"effnet: {failed} of {len(images)} images could not be classified", file=sys.stderr)
    return 1 if failed else 0
