"""effnet export onnx|openvino|tflite — write the ONNX model, the OpenVINO "converted model" (IR) or a .tflite.

onnx:      input `data` float32 [1,3,H,W] normalized RGB (as in PyTorch), output `prob` (softmax).
openvino:  input `data` float32 [1,3,H,W] raw 0-255 BGR pixels (mean/scale inside), output `prob`.
tflite:    input `pixels` uint8 [1,H,W,3] RGB, the crop itself (normalization inside), output `prob`.

The input is static, 1x3xHxW, as on the model card, so tools that take a file (OpenVINO's benchmark_app,
OVMS, TensorRT) run it as it is; --batch-size N fixes another batch, --dynamic-batch makes it dynamic.
"""

from __future__ import annotations

import argparse
import json

from .. import export as exp


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_device_argument, add_model_arguments

    p = sub.add_parser(
        "export",
        help="export to ONNX or OpenVINO IR",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)

    onnx = formats.add_parser(
        "onnx",
        help="ONNX model (normalized RGB input)",
        description="Export an ONNX model: SAME pads inside the Conv nodes, batch norm "
        "folded, metadata_props with preprocessing and labels.",
    )
    add_model_arguments(onnx)
    onnx.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="file to write")
    onnx.add_argument(
        "--dynamic", action="store_true", help="height and width dynamic too (SAME pads computed in the graph)"
    )
    onnx.add_argument(
        "--opset",
        type=int,
        default=exp.DEFAULT_OPSET,
        help=f"ONNX opset, {exp.MIN_OPSET}-{exp.MAX_OPSET} (default: %(default)s)",
    )
    onnx.add_argument("--logits", action="store_true", help="output raw logits (named `logits`) instead of `prob`")
    add_device_argument(onnx, "the model is traced (the graph is the same)")
    _common(onnx)
    onnx.set_defaults(func=run_onnx)

    ov = formats.add_parser(
        "openvino",
        help="OpenVINO IR (raw BGR input, normalization inside)",
        description="Export the OpenVINO IR (NAME.xml + NAME.bin): input raw 0-255 BGR "
        "pixels, mean/scale and channel flip in the graph, output `prob`.",
    )
    add_model_arguments(ov)
    ov.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="directory to write the IR into")
    ov.add_argument("--fp16", action="store_true", help="store FP16-compressed weights (default: FP32)")
    ov.add_argument("--name", default=None, help="file name stem of the IR (default: the model name)")
    _common(ov)
    ov.set_defaults(func=run_openvino)

    tfl = formats.add_parser(
        "tflite",
        help="TFLite / LiteRT model (uint8 NHWC crop input, normalization inside)",
        description="Export a .tflite (and its NAME.json metadata) for LiteRT: input `pixels` uint8 "
        "[1,H,W,3] RGB (the crop), output `prob`. Stored in the export cache for --backend litert; -o also "
        "writes a copy. Needs the converter: pip install 'effnet[litert]'.",
    )
    add_model_arguments(tfl)
    tfl.add_argument("-o", "--output", default=None, metavar="OUT.tflite", help="also write the file here")
    tfl.add_argument(
        "--precision",
        default="fp32",
        choices=[
            "fp32",
            "fp16",
            "int8",
            "int8-float-act",
        ],  # effnet.export.tflite.PRECISIONS (not imported here: torch)
        help="fp32 (default); fp16: float16 weights, float compute; int8: full integer (needs --calibration); "
        "int8-float-act: int8 weights, float activations (SiLU, sigmoid and the SE gate stay float)",
    )
    tfl.add_argument(
        "--calibration", nargs="+", default=None, metavar="PATH", help="int8: calibration images or folders"
    )
    tfl.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    tfl.add_argument("--no-progress", action="store_true", help="no download progress bar on stderr")
    tfl.set_defaults(func=run_tflite)


def _common(p: argparse.ArgumentParser) -> None:
    batch = p.add_mutually_exclusive_group()
    batch.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="static batch dimension N (default: 1, as the card)"
    )
    batch.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch dimension instead of a static one")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar on stderr")


def _check(args: argparse.Namespace) -> None:
    from . import UsageError

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.dynamic_batch:
        args.batch_size = None  # the API's spelling of a dynamic batch
    opset = getattr(args, "opset", exp.DEFAULT_OPSET)
    if not exp.MIN_OPSET <= opset <= exp.MAX_OPSET:
        raise UsageError(f"--opset must be between {exp.MIN_OPSET} and {exp.MAX_OPSET}, got {opset}")


def _report(args: argparse.Namespace, summary: dict) -> int:
    if args.json:
        print(json.dumps(summary))
    else:
        for f in summary["files"]:
            print(f)
    return 0


def run_onnx(args: argparse.Namespace) -> int:
    from ..source import resolve_source, weights_label

    _check(args)
    source = resolve_source(args.model, args.weights, progress=not args.no_progress)
    path = exp.export_onnx(
        source,
        args.output,
        dynamic=args.dynamic,
        logits=args.logits,
        opset=args.opset,
        batch_size=args.batch_size,
        device=args.device,
    )
    size = "H" if args.dynamic else source.preprocess.input_size
    return _report(
        args,
        {
            "format": "onnx",
            "files": [str(path)],
            "model": source.model,
            "weights": weights_label(source),
            "input": {
                "name": exp.INPUT_NAME,
                "shape": [args.batch_size or "N", 3, size, "W" if args.dynamic else size],
                "convention": f"normalized {source.preprocess.channel_order}",
            },
            "output": exp.LOGITS_NAME if args.logits else exp.OUTPUT_NAME,
            "opset": args.opset,
        },
    )


def run_openvino(args: argparse.Namespace) -> int:
    from ..source import resolve_source, weights_label

    _check(args)
    source = resolve_source(args.model, args.weights, progress=not args.no_progress)
    xml = exp.export_openvino(source, args.output, fp16=args.fp16, batch_size=args.batch_size, name=args.name)
    size = source.preprocess.input_size
    return _report(
        args,
        {
            "format": "openvino",
            "files": [str(xml), str(xml.with_suffix(".bin"))],
            "model": source.model,
            "weights": weights_label(source),
            "input": {
                "name": exp.INPUT_NAME,
                "shape": [args.batch_size or "N", 3, size, size],
                "convention": "raw 0-255 BGR",
            },
            "output": exp.OUTPUT_NAME,
            "weights_precision": "fp16" if args.fp16 else "fp32",
        },
    )


def run_tflite(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from ..export.tflite import cache_tflite, export_tflite, tflite_metadata
    from ..preprocess import find_images
    from ..source import resolve_source
    from . import UsageError

    images = None
    if args.calibration:
        images = find_images(args.calibration)
        if not images:
            raise UsageError(f"no images found in {', '.join(args.calibration)}")
    elif args.precision == "int8":
        raise UsageError("--precision int8 needs --calibration PATH (images to calibrate on)")
    source = resolve_source(args.model, args.weights, progress=not args.no_progress)
    if args.output is not None:  # a read-only -o folder fails now, not after the conversion
        from ..fileio import writable_dir

        writable_dir(Path(args.output).parent, "the tflite export")
    with tempfile.TemporaryDirectory(prefix="effnet-tflite-") as tmp:
        made = export_tflite(source, Path(tmp) / "model.tflite", precision=args.precision, calibration=images)
        files = []
        if source.checkpoint is not None:  # random-init weights have no cache entry
            files.append(str(cache_tflite(source, made, args.precision, calibration=images)))
        if args.output is not None:
            out = Path(args.output)
            exp_dir = out.parent
            exp_dir.mkdir(parents=True, exist_ok=True)
            for suffix in (".tflite", ".json"):
                part = exp_dir / f".{out.stem}{suffix}.part"
                shutil.copyfile(made.with_suffix(suffix), part)
                part.replace(out.with_suffix(suffix))
            files.append(str(out.with_suffix(".tflite")))
    meta = tflite_metadata(source, args.precision)
    return _report(
        args,
        {
            "format": "tflite",
            "files": files,
            "model": source.model,
            "weights": meta["weights"],
            "precision": args.precision,
            "calibration_images": len(images or ()),
            "input": {"name": meta["input"], "shape": meta["input_shape"], "convention": "uint8 NHWC RGB crop"},
            "output": meta["output"],
        },
    )
