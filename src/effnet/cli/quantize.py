"""effnet quantize — INT8 OpenVINO IR by NNCF post-training quantization, calibrated on your images.

The calibration images go through the weights record's own resize and crop. The INT8 IR is written
to the export cache, where `--backend openvino --precision int8` finds it, or to --output DIR.
"""

from __future__ import annotations

import argparse
import json

from ..quantize import DEFAULT_SUBSET_SIZE


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_model_arguments

    p = sub.add_parser("quantize", help="INT8 post-training quantization (OpenVINO IR, NNCF)", description=__doc__)
    add_model_arguments(p)
    p.add_argument(
        "--calibration",
        required=True,
        nargs="+",
        metavar="PATH",
        help="image folders and/or files for calibration (representative, e.g. ImageNet train/val)",
    )
    p.add_argument(
        "--subset-size",
        type=int,
        default=DEFAULT_SUBSET_SIZE,
        metavar="N",
        help="calibration images used, spread over the folder (default: %(default)s)",
    )
    p.add_argument(
        "-o", "--output", default=None, metavar="DIR", help="write model.xml/.bin here instead of the export cache"
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="keep ops whose names match REGEX in float (repeatable)",
    )
    p.add_argument(
        "--ignore-type",
        action="append",
        default=[],
        metavar="OP",
        help="keep every op of this OpenVINO type in float, e.g. GroupConvolution (repeatable)",
    )
    p.add_argument(
        "--bias-correction",
        choices=("fast", "full"),
        default="fast",
        help="NNCF bias correction: fast (default) or full (slower: 5x on B5; on Lite0 it kept "
        "98-99 of 100 sample top-1 answers where fast kept 95-98)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..quantize import print_skipped, quantize_openvino
    from ..source import resolve_source
    from . import UsageError

    if args.subset_size < 1:
        raise UsageError(f"--subset-size must be >= 1, got {args.subset_size}")
    source = resolve_source(args.model, args.weights, progress=not args.no_progress)
    report = quantize_openvino(
        source,
        args.calibration,
        subset_size=args.subset_size,
        output_dir=args.output,
        ignored_patterns=args.ignore,
        ignored_types=args.ignore_type,
        fast_bias_correction=args.bias_correction == "fast",
    )
    print_skipped(report)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.path)
        print(
            f"calibrated on {report.calibration_images} images in {report.seconds:.1f} s; "
            f"int8 inputs: {report.quantized_ops}; float inputs: {report.float_ops}"
        )
    return 0
