"""effnet explain IMAGE... --output DIR — where the model looked: the crop, an attribution heatmap, the top-5.

One PNG per image in DIR: the image's path below the inputs' common folder, its whole name, then
.<method>.png (a/x.jpg and b/x.png give DIR/a/x.jpg.<method>.png and DIR/b/x.png.<method>.png: never two
images onto one file; effnet.outputs). The maps come from the fp32 PyTorch model of the given weights
(docs/explain.md). Cost per image on 2 CPU cores: gradcam about 1 forward+backward pass (B5: seconds);
integrated-gradients 32 of them (B5: minutes); occlusion about 170 forward passes (B5: about a minute).
Exit status: 0, or 1 when an image could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..saliency import METHODS
    from . import add_model_arguments

    p = sub.add_parser("explain", help="draw where the model looked (Grad-CAM, IG, occlusion)", description=__doc__)
    p.add_argument("paths", nargs="+", metavar="IMAGE", help="image files and/or folders (searched recursively)")
    p.add_argument("--output", "-o", metavar="DIR", required=True, help="folder for the overlay PNGs (created)")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="gradcam",
        help="attribution method (default: %(default)s, 1 forward+backward pass per image; integrated-gradients: "
        "32, minutes per image on B5 on 2 cores; occlusion: ~170 forward passes)",
    )
    p.add_argument(
        "--target",
        default="top1",
        metavar="top1|CLASS",
        help="the class to explain: top1 (default: the model's own top-1), or a class index, synset or label",
    )
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON summary per image per line on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..figures import pyplot
    from ..fileio import writable_dir
    from ..outputs import distinct_inputs, per_input_names
    from ..preprocess import find_images
    from ..saliency import Explainer, resolve_target
    from ..source import resolve_source
    from . import UsageError

    images = distinct_inputs(find_images(args.paths))  # one file given thrice: one computation, one line
    if not images:
        raise UsageError(f"no images found in {', '.join(args.paths)}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a folder")
    pyplot("effnet explain", extra="explain")  # a missing extra fails now, before the model loads
    source = resolve_source(args.model, args.weights)
    explainer = Explainer(source)
    resolve_target(args.target, explainer.labels)
    writable_dir(out, "the explanations")  # a read-only folder fails now, before any image is explained
    seconds = explainer.estimate_s(args.method)  # passes x time per pass, measured here (effnet.saliency_budget)
    if seconds * len(images) > 10:
        print(
            f"effnet explain: {args.method} on {source.model}: about {seconds:.0f} s per image on this machine "
            f"({len(images)} images); gradcam is the cheapest method",
            file=sys.stderr,
            flush=True,
        )
    failed = 0
    names = per_input_names(images, f"{args.method}.png")  # THE naming rule: never two images onto one file
    for image, target in zip(images, [out / n for n in names], strict=True):
        (e,) = explainer.explain([image], method=args.method, target=args.target)
        if not e.ok:
            failed += 1
            print(json.dumps(e.summary()) if args.json else f"{image}: error: {e.error}", flush=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        e.save(target)
        summary = {**e.summary(), "overlay": str(target)}
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            t = e.explained()
            x, y = e.peak()
            print(
                f"{image}: {t.label.split(',')[0]} ({100 * t.probability:.1f} %), {args.method} peak at ({x}, {y}), "
                f"{100 * e.centre_share():.0f} % in the centre -> {target}",
                flush=True,
            )
    if failed:
        print(f"effnet: {failed} of {len(images)} images could not be explained", file=sys.stderr)
    return 1 if failed else 0
