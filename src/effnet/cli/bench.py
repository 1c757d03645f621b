"""effnet bench — latency and throughput of one backend, like OpenVINO's benchmark_app.

Times the first inference, runs warm-up calls, then measures per-call latency (median, mean, min,
max, p90, p99) and throughput on random crops at the model's input size. Each call includes the
backend's normalization and softmax. The report states the precision that actually ran.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from ..backends import available_backends

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import add_device_argument, add_model_arguments, add_model_path_argument

    p = sub.add_parser("bench", help="benchmark a backend (latency, throughput)", description=__doc__)
    add_model_arguments(p)
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random initialization instead of --weights (speed does not depend on the weights)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        help=f"auto or one of {', '.join(available_backends())}; auto (default) is what `effnet classify` runs: "
        "the fastest installed backend for the precision (the JSON config says which it resolved to)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default), bf16 (CPUs with native bf16; CUDA), fp16 (CUDA), int8 (openvino, after quantize)",
    )
    add_device_argument(p, "the torch backend runs")
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per call (default: 1)")
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="inference threads (default: the runtime's choice)"
    )
    p.add_argument("--streams", type=int, default=1, metavar="N", help="concurrent requests (default: 1, latency mode)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--iterations", type=int, default=None, metavar="N", help="measured calls (default: 20)")
    stop.add_argument("--time", type=float, default=None, metavar="S", help="measure for S seconds instead")
    p.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed calls after the first (default: 2)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="torch: batch norm folded into the convs, channels_last (bf16 always uses it)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch: torch.compile (inductor, freezing) on the fast path, compiled at load for --batch-size "
        "(timed as compile_s), so the timed calls never compile",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="torch on CUDA: capture CUDA graphs for --batch-size (and 1) at load, timed as compile_s; "
        "with --compile: torch.compile(mode='reduce-overhead')",
    )
    p.add_argument(
        "--float-precision",
        default=None,
        choices=("fp32", "bf16"),
        help="openvino int8: precision of the ops that stay in float (default fp32; bf16 is faster)",
    )
    add_model_path_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="draw the distribution of the per-call latencies into FILE (.png or .svg; pip install 'effnet[plots]')",
    )
    p.add_argument("--no-progress", action="store_true", help="no download progress bar on stderr")
    p.set_defaults(func=run)


def backend_options(args: argparse.Namespace) -> dict:
    """Options for ``create_backend``; backend-specific flags on another backend are usage errors."""
    from . import UsageError, model_path_options

    model_path = model_path_options(args)  # its suffix picks the backend under --backend auto
    options: dict = {"precision": args.precision}
    if args.threads is not None:
        options["threads"] = args.threads
    if args.backend == "auto":
        if args.fast or args.compile or args.cuda_graphs or args.float_precision is not None:
            raise UsageError("--fast, --compile, --cuda-graphs and --float-precision need an explicit --backend")
        # What each candidate takes is kept by create_backend: openvino gets the static batch and streams,
        # torch the device and (on CUDA) the one batch shape to prepare at load.
        options["batch_size"] = args.batch_size
        if args.device != "cpu":
            options["device"] = args.device
            options["prepared_sizes"] = (args.batch_size,)
        if args.streams > 1:
            options["streams"] = args.streams
        return options
    if args.backend == "torch":
        options.update(fast=args.fast, compile=args.compile)
        if args.device != "cpu":  # the CPU is the default: the report's options stay as they were
            options["device"] = args.device
        if args.cuda_graphs:
            options["cuda_graphs"] = True
        if args.cuda_graphs or args.compile:
            options["prepared_sizes"] = (args.batch_size,)  # only the shape measured is prepared at load
    elif args.fast or args.compile or args.cuda_graphs:
        raise UsageError(
            f"--fast, --compile and --cuda-graphs are torch options; the {args.backend} backend has its own "
            "optimizations always on"
        )
    elif args.device != "cpu":
        raise UsageError(f"--device {args.device} runs the torch backend; the {args.backend} backend runs on the CPU")
    if args.backend == "openvino":
        options["batch_size"] = args.batch_size  # static shape: the benchmark's batch never changes
        if args.streams > 1:
            options["streams"] = args.streams
        if args.float_precision is not None:
            options["float_precision"] = args.float_precision
        options.update(model_path)
    elif args.backend == "litert" and args.float_precision is None:
        if args.streams > 1:
            raise UsageError("--streams > 1 is supported by the torch and openvino backends")
        options.update(model_path)
    elif args.float_precision is not None:
        raise UsageError("--float-precision is an openvino option")
    elif args.streams > 1 and args.backend == "onnxruntime":
        raise UsageError("--streams > 1 is supported by the torch and openvino backends")
    if args.backend == "onnxruntime":
        options.update(model_path)
    return options


def _auto_summary(backend: object, device: str = "cpu") -> dict:
    from ..backends import auto_ranking

    ranking = auto_ranking(device)
    choice = dict(getattr(backend, "auto_choice", {}))
    return {**choice, "ranking_measured_on": ranking.measured_on, "ranking_source": ranking.source}


def run(args: argparse.Namespace) -> int:
    from ..backends import create_backend
    from ..bench import benchmark_backend, machine_description
    from ..source import resolve_source, weights_label
    from . import UsageError

    for flag in ("batch_size", "streams"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {args.iterations}")
    if args.time is not None and args.time <= 0:
        raise UsageError(f"--time must be > 0 seconds, got {args.time}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.plot is not None:
        if Path(args.plot).suffix.lower() not in (".png", ".svg"):
            raise UsageError(f"--plot {args.plot}: the file name must end in .png or .svg")
        if not Path(args.plot).resolve().parent.is_dir():
            raise UsageError(f"--plot {args.plot}: folder {Path(args.plot).parent} does not exist")
        from ..figures import pyplot

        pyplot("effnet bench --plot")  # a missing extra is found before the benchmark runs
    if args.random_weights and args.weights is not None:
        raise UsageError("--random-weights and --weights exclude each other")
    if args.backend != "auto" and args.backend not in available_backends():
        raise UsageError(f"unknown backend {args.backend!r}; available: auto, {', '.join(available_backends())}")

    options = backend_options(args)
    # A --model-path file's own description gives the model, preprocessing and labels (and must agree).
    source = resolve_source(
        args.model,
        False if args.random_weights else args.weights,
        model_path=options.get("model_path"),
        output_kind=options.pop("output_kind", None),
        progress=not args.no_progress,
    )
    start = time.perf_counter()
    backend = create_backend(args.backend, source, **options)
    load_ms = (time.perf_counter() - start) * 1e3
    config = {
        "model": source.model,
        "weights": weights_label(source),
        "backend_requested": args.backend,
        # What `auto` resolved to, so `bench` provably timed what `classify` runs (None: named explicitly).
        "auto": _auto_summary(backend, args.device) if args.backend == "auto" else None,
        "precision_requested": args.precision,
        "load_ms": load_ms,  # building the backend: model load, export from cache or new, compile
        # Of which (torch: --compile, --cuda-graphs) compiling and capturing the prepared shapes; None when
        # nothing was compiled or captured at load.
        "setup_s": load_ms / 1e3,
        "compile_s": getattr(backend, "compile_s", None),
        "device": str(getattr(backend, "device", "cpu")),
        "threads": args.threads,
        "iterations_requested": args.iterations,
        "time_requested_s": args.time,
        "warmup": args.warmup,
        "options": {k: v for k, v in options.items() if k not in ("precision", "threads")},
        "machine": machine_description(),
        "python": platform.python_version(),
    }
    result = benchmark_backend(
        backend,
        input_size=source.preprocess.input_size,
        batch_size=args.batch_size,
        iterations=args.iterations if args.iterations or args.time else 20,
        time_s=args.time,
        warmup=args.warmup,
        streams=args.streams,
        config=config,
    )
    if args.plot is not None:
        from ..bench import plot_latencies

        cfg = result.config
        name = f"{cfg['backend']} {cfg['precision']}, batch {args.batch_size}, streams {args.streams}"
        plot_latencies({name: result.latencies_ms}, args.plot, f"{cfg['model']} ({cfg['weights']}): latency per call")
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        cfg = result.config
        print(
            f"{cfg['model']} ({cfg['weights']}) on {cfg['backend']}: precision {cfg['precision']}"
            f"{' (requested ' + args.precision + ')' if cfg['precision'] != args.precision else ''}, "
            f"batch {args.batch_size}, threads {args.threads or 'default'}, streams {args.streams}"
        )
        if "backend_details" in cfg:
            print(f"[backend] {cfg['backend_details']}")
        compile_s = cfg["compile_s"]
        print(
            f"Loading the backend took {load_ms:.2f} ms"
            + ("" if compile_s is None else f" (of which compiling/capturing {compile_s * 1e3:.2f} ms)")
        )
        print("\n".join(result.summary().splitlines()[1:]))
    return 0
