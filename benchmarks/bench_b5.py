#!/usr/bin/env python
"""EfficientNet-B5 side by side: the peers a user would pick, and every effnet path, interleaved in one run.

Peers (the reference model, gen-efficientnet's ``tf_efficientnet_b5``, as a user would run it):
  - PyTorch eager fp32 (NCHW input, and channels_last input);
  - a plain ``torch.onnx.export`` of it (TorchScript exporter, opset 17, defaults otherwise) in
    ONNX Runtime (CPU provider, all graph optimizations);
  - the same ONNX file in OpenVINO with its defaults (on a CPU with AVX512_BF16 that is bf16),
    and with f32 set explicitly.
effnet paths: torch fp32 eager / fast (BN folded, channels_last) / compiled, torch bf16 eager / compiled,
onnxruntime fp32, openvino fp32 / bf16 / int8 (the last needs an INT8 IR: ``--calibration DIR``), and litert
for each ``--tflite PRECISION=FILE`` given (``effnet export tflite``).

Interleaving: after every path is built and warmed up, each round runs ``--per-round`` calls of every
path, rotating the order, for ``--rounds`` rounds. Ratios are the median over rounds of the per-round
ratio, so slow drifts of a shared machine's load cancel. Effnet paths take uint8 crops and include
their normalization and softmax; peers take a ready float tensor (which favours the peers slightly).

A GPU section (``--gpu``; on by default when CUDA is present) runs the reference model and effnet on
CUDA: fp32, channels_last fp16/bf16, torch.compile with CUDA graphs, batch 1 and a large batch.

    python benchmarks/bench_b5.py --threads 2 --calibration ../shared/imagenet/sample --out results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import effnet  # noqa: E402
from effnet.backends import create_backend  # noqa: E402
from effnet.bench import latency_stats, machine_description, random_pixels  # noqa: E402
from effnet.source import resolve_source  # noqa: E402


@dataclass
class Timed:
    """One thing to time: a name, a group (peer or effnet), the precision that runs, and a call."""

    name: str
    group: str
    precision: str
    call: Callable[[], Any]
    note: str = ""
    build_s: float = 0.0
    first_ms: float = 0.0
    times: list[list[float]] = field(default_factory=list)  # per round, per call (ms)

    @property
    def all_ms(self) -> list[float]:
        return [t for r in self.times for t in r]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def lscpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return json.dumps(machine_description())
    keep = (
        "Model name",
        "CPU(s)",
        "Thread(s) per core",
        "Core(s) per socket",
        "L2 cache",
        "L3 cache",
        "Hypervisor vendor",
    )
    lines = [line for line in out.splitlines() if line.split(":")[0].strip() in keep]
    isa = machine_description().get("isa", [])
    return "\n".join(lines + [f"ISA (subset):                            {' '.join(isa)}"])


# ------------------------------------------------------------------------------------------------
# Peers
# ------------------------------------------------------------------------------------------------


def reference_model(model_name: str) -> torch.nn.Module:
    """gen-efficientnet's TF-ported model of the same variant (efficientnet-b5 -> tf_efficientnet_b5)."""
    import geffnet

    torch.manual_seed(0)
    model = getattr(geffnet, "tf_" + model_name.replace("-", "_"))(pretrained=False).eval()
    for m in model.modules():  # non-trivial BN statistics, as trained weights have
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    return model


def plain_onnx(model: torch.nn.Module, size: int, batch: int, path: Path) -> Path:
    """What a user gets from torch.onnx.export with default options (TorchScript exporter)."""
    x = torch.randn(batch, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # dynamo=True (torch's new default) needs onnxscript; the TorchScript exporter is what
        # most published exports of this model were made with.
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, input_names=["data"], output_names=["logits"]
        )
    return path


def peer_paths(model_name: str, size: int, batch: int, threads: int, workdir: Path) -> list[Timed]:
    import onnxruntime as ort
    import openvino as ov

    paths: list[Timed] = []
    ref = reference_model(model_name)
    x = torch.randn(batch, 3, size, size)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def eager(inp: torch.Tensor) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return ref(inp)

        return call

    paths.append(Timed("geffnet eager", "peer", "fp32", eager(x), "reference model, NCHW input"))
    paths.append(Timed("geffnet eager channels_last", "peer", "fp32", eager(xcl), "reference model, NHWC input"))

    onnx_path = plain_onnx(ref, size, batch, workdir / "reference_plain.onnx")
    xn = x.numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    paths.append(
        Timed(
            "ONNX Runtime (plain export)",
            "peer",
            "fp32",
            lambda: sess.run(None, {"data": xn}),
            f"onnxruntime {ort.__version__}, intra_op_num_threads={threads}",
        )
    )

    core = ov.Core()
    ov_model = core.read_model(str(onnx_path))
    for label, config in (
        ("OpenVINO default (plain export)", {}),
        ("OpenVINO f32 (plain export)", {"INFERENCE_PRECISION_HINT": "f32"}),
    ):
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, **config})
        request = compiled.create_infer_request()
        actual = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        precision = {"<Type: 'bfloat16'>": "bf16", "<Type: 'float32'>": "fp32"}.get(actual, actual)
        paths.append(
            Timed(
                label,
                "peer",
                precision,
                (lambda r: lambda: r.infer({0: xn}))(request),
                f"openvino {ov.__version__}, INFERENCE_PRECISION_HINT={actual} ({'default' if not config else 'set'})",
            )
        )
    return paths


# ------------------------------------------------------------------------------------------------
# effnet paths
# ------------------------------------------------------------------------------------------------


def effnet_paths(args: argparse.Namespace, source: Any, size: int, workdir: Path) -> list[Timed]:
    pixels = random_pixels(args.batch_size, size)
    specs: list[tuple[str, str, dict]] = [
        ("effnet torch eager", "torch", {"precision": "fp32"}),
        ("effnet torch fast", "torch", {"precision": "fp32", "fast": True}),
        ("effnet torch bf16", "torch", {"precision": "bf16"}),
        ("effnet onnxruntime", "onnxruntime", {"precision": "fp32"}),
        ("effnet openvino f32", "openvino", {"precision": "fp32"}),
        ("effnet openvino bf16", "openvino", {"precision": "bf16"}),
    ]
    if not args.no_compile:
        specs[3:3] = [
            ("effnet torch compiled", "torch", {"precision": "fp32", "compile": True}),
            ("effnet torch bf16 compiled", "torch", {"precision": "bf16", "compile": True}),
        ]
    if args.int8 is not None:
        specs += [
            (
                "effnet openvino int8",
                "openvino",
                {"precision": "int8", "model_path": args.int8, "float_precision": "bf16"},
            ),
            (
                "effnet openvino int8 (float parts fp32)",
                "openvino",
                {"precision": "int8", "model_path": args.int8, "float_precision": "fp32"},
            ),
        ]
    for spec in args.tflite or ():  # LiteRT: .tflite files made by `effnet export tflite` (here or elsewhere)
        precision, _, path = spec.partition("=")
        specs.append((f"effnet litert {precision}", "litert", {"precision": precision, "model_path": path}))
    out = []
    for name, backend_name, options in specs:
        if args.only and not any(s in name for s in args.only):
            continue
        log(f"building {name}")
        t = time.perf_counter()
        if backend_name == "openvino":
            options = {**options, "batch_size": args.batch_size}  # static input shape
        try:
            backend = create_backend(backend_name, source, threads=args.threads, **options)
        except effnet.EffnetError as e:
            log(f"  skipped {name}: {e}")
            continue
        details = backend.describe() if hasattr(backend, "describe") else {}
        out.append(
            Timed(
                name,
                "effnet",
                backend.precision,
                (lambda b: lambda: b(pixels))(backend),
                json.dumps(details) if details else "",
                build_s=time.perf_counter() - t,
            )
        )
    return out


def make_int8(args: argparse.Namespace, source: Any, workdir: Path) -> str | None:
    if args.int8_model:
        return args.int8_model
    if not args.calibration:
        return None
    from effnet.quantize import quantize_openvino

    log(f"quantizing to INT8 with NNCF on {args.calibration} (subset {args.subset_size})")
    report = quantize_openvino(source, args.calibration, subset_size=args.subset_size, output_dir=workdir / "int8")
    log(
        f"  {report.calibration_images} images, {report.seconds:.0f} s; int8 inputs {report.quantized_ops}, "
        f"float inputs {report.float_ops}"
    )
    return str(report.path)


# ------------------------------------------------------------------------------------------------
# Interleaved timing and the table
# ------------------------------------------------------------------------------------------------


def interleave(paths: list[Timed], rounds: int, per_round: int, warmup: int) -> None:
    for p in paths:
        t = time.perf_counter()
        p.call()
        p.first_ms = (time.perf_counter() - t) * 1e3
        for _ in range(warmup):
            p.call()
        log(f"warm: {p.name} (first call {p.first_ms:.0f} ms)")
    for r in range(rounds):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]  # rotate: no path always runs first
        for p in order:
            ts = []
            for _ in range(per_round):
                t = time.perf_counter()
                p.call()
                ts.append((time.perf_counter() - t) * 1e3)
            p.times.append(ts)
        log(f"round {r + 1}/{rounds} done")


def paired_ratio(a: Timed, b: Timed) -> float:
    """Median over rounds of (a's round median / b's round median)."""
    return float(np.median([np.median(x) / np.median(y) for x, y in zip(a.times, b.times, strict=True)]))


def fastest(paths: list[Timed], group: str, precision: str) -> Timed | None:
    cands = [p for p in paths if p.group == group and p.precision == precision]
    return min(cands, key=lambda p: np.median(p.all_ms)) if cands else None


def by_name(paths: list[Timed], name: str) -> Timed | None:
    return next((p for p in paths if p.name == name), None)


def render(paths: list[Timed], args: argparse.Namespace, meta: dict) -> tuple[str, dict]:
    batch = args.batch_size
    base = by_name(paths, "ONNX Runtime (plain export)")
    ovd = by_name(paths, "OpenVINO default (plain export)")
    lines = [
        f"Run {meta['date']}, batch {batch}, {args.threads} threads, {args.rounds} rounds x {args.per_round} "
        f"calls per path, interleaved. Load average before / after: {meta['load_before']} / {meta['load_after']}.",
        "",
        "| path | precision | ms/img median | ms/img min | p90 | vs ORT plain | vs OV default | first call ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = []
    for p in paths:
        s = latency_stats(p.all_ms)
        r_ort = paired_ratio(p, base) if base else float("nan")
        r_ov = paired_ratio(p, ovd) if ovd else float("nan")
        rows.append(
            {
                "name": p.name,
                "group": p.group,
                "precision": p.precision,
                "note": p.note,
                "ms_per_img": {k: v / batch for k, v in s.items()},
                "ratio_vs_ort_plain": r_ort,
                "ratio_vs_ov_default": r_ov,
                "first_call_ms": p.first_ms,
                "build_s": p.build_s,
            }
        )
        lines.append(
            f"| {p.name} | {p.precision} | {s['median'] / batch:.1f} | {s['min'] / batch:.1f} | "
            f"{s['p90'] / batch:.1f} | {r_ort:.2f} | {r_ov:.2f} | {p.first_ms:.0f} |"
        )

    targets = []

    def target(label: str, a: Timed | None, b: Timed | None, limit: float, lower_is_better: bool = True) -> None:
        if a is None or b is None:
            targets.append({"target": label, "measured": None, "limit": limit, "met": None})
            return
        r = paired_ratio(a, b)
        targets.append(
            {
                "target": label,
                "path": a.name,
                "peer": b.name,
                "measured": r,
                "limit": limit,
                "met": r <= limit if lower_is_better else r >= limit,
            }
        )

    target(
        "effnet fp32 (fastest) <= 0.75x ONNX Runtime fp32 (plain export)", fastest(paths, "effnet", "fp32"), base, 0.75
    )
    target("effnet bf16 (fastest) <= 0.8x OpenVINO default (bf16)", fastest(paths, "effnet", "bf16"), ovd, 0.8)
    target("effnet int8 <= 0.5x OpenVINO default (bf16)", fastest(paths, "effnet", "int8"), ovd, 0.5)
    target(
        "effnet torch eager fp32 <= 1.0x geffnet eager (issue 2)",
        by_name(paths, "effnet torch eager"),
        by_name(paths, "geffnet eager"),
        1.0,
    )
    lines += ["", "| target | path | measured ratio | met |", "| --- | --- | ---: | --- |"]
    for t in targets:
        m = "n/a" if t["measured"] is None else f"{t['measured']:.2f}"
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else f"no ({m} vs {t['limit']})")
        lines.append(f"| {t['target']} | {t.get('path', '-')} | {m} | {met} |")
    lines += ["", "Notes per path:", ""]
    lines += [f"- **{p.name}**: {p.note}" for p in paths if p.note]
    return "\n".join(lines) + "\n", {"rows": rows, "targets": targets}


# ------------------------------------------------------------------------------------------------
# classify throughput vs pure inference
# ------------------------------------------------------------------------------------------------


def classify_section(args: argparse.Namespace, source: Any, weights: str) -> tuple[str, dict]:
    """images/s of Classifier.iter_classify on a folder vs the same backend's pure inference images/s."""
    from effnet.predict import Classifier
    from effnet.preprocess import find_images

    images = find_images([args.images])
    lines = ["| backend options | pure inference img/s | classify img/s | ratio |", "| --- | ---: | ---: | ---: |"]
    results = []
    for options in json.loads(args.classify_options):
        clf = Classifier(source.model, weights, threads=args.threads, **options)
        size = source.preprocess.input_size
        pixels = random_pixels(1, size)
        clf.probabilities(pixels)

        def pure(n: int) -> float:
            t = time.perf_counter()
            for _ in range(n):
                clf.probabilities(pixels)
            return n / (time.perf_counter() - t)

        # pure, classify, pure: the mean of the two pure runs brackets the classify run.
        p1 = pure(min(len(images), 20))
        t = time.perf_counter()
        n = sum(1 for r in clf.iter_classify(images, batch_size=1) if r.ok)
        c = n / (time.perf_counter() - t)
        p2 = pure(min(len(images), 20))
        pure_ips = (p1 + p2) / 2
        results.append(
            {"options": options, "pure_img_s": pure_ips, "classify_img_s": c, "ratio": c / pure_ips, "images": n}
        )
        lines.append(f"| {json.dumps(options)} | {pure_ips:.2f} | {c:.2f} | {c / pure_ips:.2f} |")
    return "\n".join(lines) + "\n", {"classify": results}


# ------------------------------------------------------------------------------------------------
# OpenVINO per-layer profile: why int8 is (not) faster than bf16
# ------------------------------------------------------------------------------------------------


def profile_openvino(xml_paths: dict[str, tuple[str, dict]], size: int, threads: int, runs: int = 5) -> str:
    import openvino as ov

    core = ov.Core()
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, size, size)).astype(np.float32)
    lines = []
    for label, (xml, config) in xml_paths.items():
        compiled = core.compile_model(
            core.read_model(xml), "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads, **config}
        )
        req = compiled.create_infer_request()
        totals: dict[tuple[str, str], list[float]] = {}
        for i in range(runs + 1):
            req.infer({0: x})
            if i == 0:
                continue
            for info in req.get_profiling_info():
                if info.status != info.Status.EXECUTED:
                    continue
                key = (info.node_type, info.exec_type)
                totals.setdefault(key, [0.0] * runs)[i - 1] += info.real_time.total_seconds() * 1e3
        med = sorted(((float(np.median(v)), k) for k, v in totals.items()), reverse=True)
        total = sum(m for m, _ in med)
        lines += [
            f"**{label}** (sum of layer medians {total:.1f} ms)",
            "",
            "| layer type | kernel (exec type) | ms | share |",
            "| --- | --- | ---: | ---: |",
        ]
        lines += [f"| {k[0]} | {k[1]} | {m:.1f} | {m / total:.0%} |" for m, k in med[:14]]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# GPU section
# ------------------------------------------------------------------------------------------------


def gpu_section(args: argparse.Namespace, source: Any) -> tuple[str, dict]:
    if not torch.cuda.is_available():
        return "GPU section skipped: no CUDA device (torch.cuda.is_available() is False).\n", {"gpu": None}
    from effnet.optimize import fold_batchnorm

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    size = source.preprocess.input_size
    ref = reference_model(source.model).to(dev)
    ours = fold_batchnorm(effnet.create_model(source.model, pretrained=source.checkpoint or False)).to(dev)
    ours_cl = fold_batchnorm(effnet.create_model(source.model, pretrained=source.checkpoint or False)).to(
        dev, memory_format=torch.channels_last
    )
    rows, lines = [], ["| path | batch | ms/batch median | img/s |", "| --- | ---: | ---: | ---: |"]
    for batch in (1, args.gpu_large_batch):
        x = torch.randn(batch, 3, size, size, device=dev)
        xcl = x.contiguous(memory_format=torch.channels_last)
        cands: list[tuple[str, Callable[[], Any]]] = [
            ("geffnet eager fp32", lambda: ref(x)),
            ("effnet eager fp32 (BN folded)", lambda: ours(x)),
            ("effnet channels_last fp16", lambda: _autocast(ours_cl, xcl, torch.float16)),
            ("effnet channels_last bf16", lambda: _autocast(ours_cl, xcl, torch.bfloat16)),
        ]
        if not args.no_compile:
            compiled = torch.compile(ours_cl, mode="reduce-overhead")  # CUDA graphs
            cands.append(("effnet compiled fp16 (CUDA graphs)", lambda c=compiled: _autocast(c, xcl, torch.float16)))
        for name, fn in cands:
            with torch.inference_mode():
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
                ts = []
                for _ in range(args.gpu_iterations):
                    t = time.perf_counter()
                    fn()
                    torch.cuda.synchronize()
                    ts.append((time.perf_counter() - t) * 1e3)
            med = float(np.median(ts))
            rows.append({"path": name, "batch": batch, "ms_median": med, "img_s": batch * 1e3 / med})
            lines.append(f"| {name} | {batch} | {med:.2f} | {batch * 1e3 / med:.0f} |")
    header = f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}\n\n"
    return header + "\n".join(lines) + "\n", {"gpu": rows}


def _autocast(model: Callable, x: torch.Tensor, dtype: torch.dtype) -> Any:
    with torch.autocast("cuda", dtype=dtype):
        return model(x)


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-b5")
    ap.add_argument("--weights", default=None, help="checkpoint (default: random weights saved to a temp file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-round", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--calibration", default=None, help="image folder: quantize to INT8 and add the int8 path")
    ap.add_argument("--subset-size", type=int, default=300)
    ap.add_argument("--int8-model", default=None, help="an existing INT8 IR (model.xml) instead of --calibration")
    ap.add_argument(
        "--tflite",
        nargs="*",
        default=None,
        metavar="PRECISION=FILE",
        help="LiteRT paths: .tflite files from `effnet export tflite` (e.g. int8=b5_int8.tflite)",
    )
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile paths (minutes to build)")
    ap.add_argument("--only", nargs="*", default=None, help="effnet paths whose names contain one of these")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--images", default=None, help="folder for the classify-vs-inference section")
    ap.add_argument(
        "--classify-options",
        default='[{"backend": "torch"}]',
        help="JSON list of Classifier option sets for the classify section",
    )
    ap.add_argument("--profile", action="store_true", help="OpenVINO per-layer profile, bf16 vs int8")
    ap.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the GPU section (default: when CUDA is available)",
    )
    ap.add_argument("--gpu-large-batch", type=int, default=64)
    ap.add_argument("--gpu-iterations", type=int, default=50)
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--plot", default=None, help="draw every path's latency distribution here (.png or .svg)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="effnet-bench-"))
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        model = effnet.create_model(args.model)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
        weights = str(workdir / f"{args.model}-random.pth")
        torch.save(model.state_dict(), weights)
    source = resolve_source(args.model, weights)
    size = source.preprocess.input_size
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "lscpu": lscpu(),
        "python": platform.python_version(),
        "versions": _versions(),
    }
    args.int8 = make_int8(args, source, workdir)

    paths: list[Timed] = []
    if not args.no_peers:
        log("building peers")
        paths += peer_paths(args.model, size, args.batch_size, args.threads, workdir)
    paths += effnet_paths(args, source, size, workdir)
    interleave(paths, args.rounds, args.per_round, args.warmup)
    meta["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    table, data = render(paths, args, meta)
    if args.plot:
        from effnet.bench import plot_latencies

        plot_latencies(
            {f"{p.name} ({p.precision})": p.all_ms for p in paths},
            args.plot,
            f"{args.model}, CPU, batch {args.batch_size}, {args.threads} threads: {args.rounds} interleaved rounds "
            f"x {args.per_round} calls",
        )
        log(f"latency plot: {args.plot}")

    report = [
        f"## {args.model}, CPU, batch {args.batch_size}, {args.threads} threads",
        "",
        "```",
        meta["lscpu"],
        "```",
        "",
        f"Versions: {meta['versions']}",
        "",
        table,
    ]
    if args.images:
        log("classify section")
        text, extra = classify_section(args, source, weights)
        report += ["### effnet classify vs pure inference", "", text]
        data.update(extra)
    if args.profile and args.int8:
        log("OpenVINO profile")
        from effnet.export import exported_artifact

        with exported_artifact("openvino", source) as fp32_xml:
            report += [
                "### OpenVINO per-layer time, bf16 vs int8 (batch 1)",
                "",
                profile_openvino(
                    {
                        "fp32 IR, bf16": (str(fp32_xml), {"INFERENCE_PRECISION_HINT": "bf16"}),
                        "INT8 IR (float parts bf16)": (args.int8, {"INFERENCE_PRECISION_HINT": "bf16"}),
                    },
                    size,
                    args.threads,
                ),
            ]
    if args.gpu or (args.gpu is None and torch.cuda.is_available()):
        log("GPU section")
        text, extra = gpu_section(args, source)
        report += ["### GPU", "", text]
        data.update(extra)
    elif args.gpu is None:
        report += ["### GPU", "", "GPU section skipped: no CUDA device.", ""]
    text = "\n".join(report)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, **data}, indent=2, default=str))
    return 0


def _versions() -> str:
    out = [f"effnet {effnet.__version__}", f"torch {torch.__version__}"]
    for mod in ("onnxruntime", "openvino", "nncf", "geffnet"):
        try:
            out.append(f"{mod} {getattr(__import__(mod), '__version__', '?')}")
        except ImportError:
            pass
    return ", ".join(out)


if __name__ == "__main__":
    sys.exit(main())
