"""``effnet`` command line: parse arguments, make one call, print the result.

Each subcommand lives in its own module with ``add_parser(subparsers)``; the
module sets ``func(args) -> int`` as the parser default. Errors the user can fix
(:class:`effnet.EffnetError`) print one line to stderr and exit 1; usage errors
exit 2 (argparse's convention); nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._version import __version__
from ..errors import EffnetError

if TYPE_CHECKING:  # pragma: no cover
    from ..predict import Classifier
    from ..source import ModelSource

# Subcommand modules, in help order.
COMMANDS = ("classify", "explain", "info", "weights", "eval", "train", "audit", "serve", "export", "bench", "quantize")


DEFAULT_MODEL = "efficientnet-b5"


class UsageError(EffnetError):
    """Bad arguments found after parsing (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effnet",
        description=(
            "EfficientNet-B5 ImageNet classifier: classify, evaluate, fine-tune, export, benchmark, quantize "
            "and serve it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model / --weights, shared by every command that runs a model."""
    p.add_argument(
        "--model",
        default=None,
        help=f"model name (default: the model an effnet-native --weights file or a record name says, "
        f"else {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE|NAME",
        help="checkpoint file (.pth/.safetensors; effnet, timm, lukemelas or torchvision keys; Keras files: "
        "`effnet weights convert` them first) or a weights record name; default: the model's default record, "
        "downloaded once into the cache",
    )
    add_offline_argument(p)
    p.set_defaults(model_from_weights=True)


def add_offline_argument(p: argparse.ArgumentParser) -> None:
    """--offline, for every command that may download weights: sets EFFNET_OFFLINE=1 for this run."""
    p.add_argument(
        "--offline",
        action="store_true",
        help="never download: use cached or given weights only, else fail at once (same as EFFNET_OFFLINE=1)",
    )


def _fill_model(args: argparse.Namespace) -> None:
    """--model left out: an effnet-native file or a record name says which model its weights are for."""
    if not getattr(args, "model_from_weights", False) or args.model is not None:
        return
    from pathlib import Path

    from ..weights.native import read_native_info
    from ..weights.records import find_record

    weights, model = getattr(args, "weights", None), DEFAULT_MODEL
    model_path = getattr(args, "model_path", None)
    if model_path and os.path.isfile(model_path):
        from ..artifact import read_artifact_info

        info = read_artifact_info(model_path).info  # an effnet-written file says its model
        if info is not None:
            args.model = info.model
            return
        if not weights:  # nothing says the model: never the default B5's download, size and labels in its place
            raise EffnetError(f"{model_path} carries no effnet metadata: pass --model/--weights (and --output-kind)")
    if weights:
        record = find_record(weights)
        if record is not None and not Path(weights).exists():
            model = record.model
        elif (info := read_native_info(weights)) is not None:
            model = info.model
        elif Path(weights).is_file() and Path(weights).suffix.lower() not in (".onnx", ".xml", ".tflite"):
            from ..weights.to_native import model_of_file  # a file made elsewhere: the rule convert applies

            model = model_of_file(Path(weights)) or model
    args.model = model


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """--backend / --precision, shared by classify, eval and serve."""
    from ..backends import available_backends

    p.add_argument(
        "--backend",
        default="auto",
        help=f"inference backend: auto, {', '.join(available_backends())}. auto (default) is the "
        "fastest installed one measured for the precision (docs/performance.md): openvino, "
        "else onnxruntime, else torch",
    )
    p.add_argument(
        "--precision",
        default=None,
        help="fp32 (default), bf16 or int8 where the backend runs it; always set explicitly, never a silent bf16",
    )


def device_type(text: str) -> str:
    """argparse ``type=`` for --device: the canonical spelling, or a usage error (exit 2)."""
    from ..device import DeviceError, parse_device

    try:
        return parse_device(text)
    except DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device_argument(p: argparse.ArgumentParser, what: str = "the model runs") -> None:
    """--device, shared by classify, eval, serve, bench and export onnx (one parser: effnet.device)."""
    p.add_argument(
        "--device",
        default="cpu",
        type=device_type,
        metavar="cpu|cuda|cuda:N|auto",
        help=f"where {what}: cpu (default), cuda, cuda:N, or auto (cuda when torch sees a GPU, else cpu). "
        "CUDA runs the torch backend; --backend auto then picks its CUDA-graph fast path",
    )


# What reads a --model-path file, by its suffix.
MODEL_PATH_BACKENDS = {".xml": "openvino", ".onnx": "onnxruntime", ".tflite": "litert"}


def add_model_path_argument(p: argparse.ArgumentParser) -> None:
    """--model-path, shared by classify, eval, serve and bench: run an exported or quantized file."""
    p.add_argument(
        "--model-path",
        default=None,
        metavar="FILE",
        help="run this file instead of the cached export: an OpenVINO IR .xml (`effnet quantize -o DIR` writes "
        "DIR/model.xml; `effnet export openvino`), an .onnx file (`effnet export onnx`) or a .tflite file (`effnet "
        "export tflite`, or made elsewhere); its suffix picks the backend. A file effnet wrote says its model, "
        "preprocessing, labels and output kind (--model/--weights may be left out, and must agree); for a file "
        "made elsewhere --model/--weights give the preprocessing and labels",
    )
    p.add_argument(
        "--output-kind",
        default=None,
        choices=("prob", "logits"),
        help="what a --model-path file without effnet metadata outputs: prob, or logits (soft-maxed); "
        "left out, one probe forward pass decides and refuses rows that are not probabilities",
    )


def model_path_options(args: argparse.Namespace) -> dict:
    """--model-path: the backend that reads the file (a usage error if --backend names another) and its option.

    Sets ``args.backend``; returns ``{"model_path": FILE}`` or ``{}``.
    """
    path = getattr(args, "model_path", None)
    if path is None:
        return {}
    backend = MODEL_PATH_BACKENDS.get(os.path.splitext(path)[1].lower())
    if backend is None:
        raise UsageError(f"--model-path takes an OpenVINO IR (.xml), an ONNX file (.onnx) or a .tflite, got {path}")
    if args.backend not in ("auto", backend):
        raise UsageError(f"--model-path {path} runs on --backend {backend}, not {args.backend}")
    if getattr(args, "device", "cpu") != "cpu":
        raise UsageError(f"--model-path runs on the {backend} backend, on the CPU; --device {args.device} cannot")
    if getattr(args, "engine", "local") != "local":
        raise UsageError("--model-path names a file on this machine: it is for --engine local")
    if not os.path.isfile(path):
        raise EffnetError(f"--model-path {path} does not exist or is not a file")
    args.backend = backend
    kind = getattr(args, "output_kind", None)
    return {"model_path": path, **({} if kind is None else {"output_kind": kind})}


def source_from_args(args: argparse.Namespace, model_path: dict) -> ModelSource:
    """THE model source of classify and eval, resolved once per command: --model/--weights (a record is
    downloaded and verified here), or the --model-path file's own description checked against them
    (:func:`model_path_options`). The local engine (:func:`classifier_from_args`) and the Ray engine
    (``effnet.distributed``) are handed it and never resolve it again."""
    from ..source import resolve_source

    return resolve_source(
        args.model,
        args.weights,
        model_path=model_path.get("model_path"),
        output_kind=model_path.get("output_kind"),
        progress=not args.no_progress,
    )


def classifier_from_args(
    args: argparse.Namespace, source: ModelSource, model_path: dict, *, workload: str
) -> Classifier:
    """The local :class:`~effnet.predict.Classifier` the flags of classify and eval describe, on ``source``
    (:func:`source_from_args`): backend (or the --model-path file, from :func:`model_path_options`),
    precision, device, decode, batch hint.

    ``workload`` is "throughput" for a bulk job (OpenVINO: THROUGHPUT streams, kept fed) or "latency".
    """
    from ..predict import Classifier  # lazy: `effnet --help` and the light commands load no torch

    file = {"model_path": model_path["model_path"]} if model_path else {}  # its output kind is in the source
    options = {**file, **({} if args.precision is None else {"precision": args.precision})}
    return Classifier(
        source,
        backend=args.backend,
        device=args.device,
        decode=args.decode,
        batch_hint=args.batch_size,
        workload=workload,
        **options,
    )


def add_decode_argument(p: argparse.ArgumentParser, default: str = "pillow") -> None:
    """--decode, shared by classify (default reduced) and eval (default pillow, the card's protocol)."""
    p.add_argument(
        "--decode",
        default=default,
        choices=("pillow", "reduced", "gpu"),
        help=f"(default: {default}) pillow: the exact pixels of the model card's pipeline; reduced: JPEGs over "
        "twice the resize target decoded smaller by DCT scaling, big video frames converted smaller (camera photos "
        "several times faster, same top-1 "
        "in docs/video.md's check; smaller images get pillow's exact pixels); gpu: nvJPEG and an "
        "antialiased bicubic resize on the GPU (needs torchvision and --device cuda; close to, not "
        "identical with, Pillow's pixels; non-JPEG files still take the Pillow path)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "offline", False):
        # Through the environment, so that whatever downloads (and `serve --workers N` processes) sees it.
        from ..weights.download import OFFLINE_ENV

        os.environ[OFFLINE_ENV] = "1"
    try:
        _fill_model(args)
        return int(args.func(args) or 0)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"effnet: error: {e}", file=sys.stderr)
        return 2
    except EffnetError as e:
        print(f"effnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("effnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `effnet classify ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
