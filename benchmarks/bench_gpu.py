#!/usr/bin/env python
"""effnet's GPU paths against timm on the same GPU, interleaved in one run, plus end-to-end eval from JPEGs.

Model-only section, per batch size (default 1 and 256): every path is built (compile and CUDA-graph
capture timed as its setup), warmed up, then ``--rounds`` rounds each run ``--per-round`` calls of every
path in a rotating order; the table shows the median per-call latency and images/s, and each path's
ratio to timm's best path at that batch. All paths do the same job: uint8 NHWC crops already on the
device -> normalized on the device -> model -> softmax -> probabilities copied to the host.

  timm (when installed): ``timm.create_model("tf_efficientnet_b5")`` eager fp32, eager bf16 autocast
  channels_last, ``torch.compile`` bf16 channels_last (default mode; large batch) and
  ``mode="reduce-overhead"`` (CUDA graphs; batch 1): the issue's two targets.
  effnet: the torch backend's paths (eager, fast, CUDA graphs fp32/bf16/fp16, compiled, compiled+graphs).

End-to-end section: ``effnet.evaluate.evaluate`` (what ``effnet eval`` runs) over the JPEG folder
(repeated ``--e2e-repeat`` times) with all CPU cores decoding, against the same path's pure-inference
images/s at the same batch, measured right before and after it (the issue's target: >= 0.8).

Writes a markdown report to stdout (GPU, driver, versions first); ``--write-docs`` puts it into
docs/performance.md between the ``bench_gpu`` markers; ``--json FILE`` the raw numbers. The CPU dry run
(no timm, no CUDA paths, tiny sizes) exercises the same code:

    python benchmarks/bench_gpu.py --device cpu --batch-sizes 1,2 --model efficientnet-lite0 --rounds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effnet.backends import create_backend  # noqa: E402
from effnet.device import describe_device, resolve_device  # noqa: E402
from effnet.predict import Classifier  # noqa: E402
from effnet.preprocess import normalize_tensor  # noqa: E402
from effnet.source import resolve_source  # noqa: E402

DOC_BEGIN, DOC_END = "<!-- bench_gpu:begin -->", "<!-- bench_gpu:end -->"
TIMM_NAMES = {"efficientnet-b5": "tf_efficientnet_b5", "efficientnet-lite0": "tf_efficientnet_lite0"}

# effnet paths: name -> (torch backend options, needs CUDA, compiles)
EFFNET_PATHS: dict[str, tuple[dict[str, Any], bool, bool]] = {
    "effnet eager fp32": ({}, False, False),
    "effnet fast fp32 (BN folded, channels_last)": ({"fast": True}, False, False),
    # auto's fallbacks on CUDA (AUTO_RANKING_CUDA): measured so the rule can become a ranking
    "effnet fast bf16": ({"fast": True, "precision": "bf16"}, True, False),
    "effnet fast fp16": ({"fast": True, "precision": "fp16"}, True, False),
    "effnet graphs fp32": ({"cuda_graphs": True}, True, False),
    "effnet graphs bf16": ({"cuda_graphs": True, "precision": "bf16"}, True, False),
    "effnet graphs fp16": ({"cuda_graphs": True, "precision": "fp16"}, True, False),
    "effnet compiled bf16": ({"compile": True, "precision": "bf16"}, True, True),
    "effnet compiled+graphs bf16 (reduce-overhead)": (
        {"compile": True, "cuda_graphs": True, "precision": "bf16"},
        True,
        True,
    ),
    "effnet compiled+graphs fp16 (reduce-overhead)": (
        {"compile": True, "cuda_graphs": True, "precision": "fp16"},
        True,
        True,
    ),
}


@dataclass
class Built:
    name: str
    group: str  # "timm" or "effnet"
    precision: str
    call: Callable[[], Any]
    setup_s: float
    times_ms: list[float] = dataclasses.field(default_factory=list)


def log(msg: str) -> None:
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------
# timm, the peer
# ------------------------------------------------------------------------------------------------


def timm_paths(args, source, device: torch.device, batch: int, pixels: torch.Tensor) -> list[Built]:
    try:
        import timm
    except ImportError:
        return []
    p = source.preprocess
    name = args.timm_model or TIMM_NAMES.get(source.model)
    if name is None:
        log(f"no timm name for {source.model}: pass --timm-model")
        return []
    base = timm.create_model(name, pretrained=False).eval().to(device)
    cl = timm.create_model(name, pretrained=False).eval().to(device, memory_format=torch.channels_last)
    cuda = device.type == "cuda"

    def runner(model, *, channels_last: bool, dtype: torch.dtype | None):
        def call():
            with torch.inference_mode():
                x = normalize_tensor(pixels, p, channels_last=channels_last)  # effnet's own, on the device
                if dtype is None:
                    y = model(x)
                else:
                    with torch.autocast(device.type, dtype=dtype):
                        y = model(x)
                return torch.softmax(y.float(), dim=1).cpu()

        return call

    specs: list[tuple[str, str, Callable]] = [
        ("timm eager fp32", "fp32", runner(base, channels_last=False, dtype=None))
    ]
    if cuda:
        specs.append(
            ("timm eager bf16 autocast channels_last", "bf16", runner(cl, channels_last=True, dtype=torch.bfloat16))
        )
        if not args.no_compile:
            if batch > 1:
                compiled = torch.compile(cl)
                specs.append(
                    (
                        "timm compiled bf16 channels_last",
                        "bf16",
                        runner(compiled, channels_last=True, dtype=torch.bfloat16),
                    )
                )
            if batch == 1 or args.all_compile:
                ro = torch.compile(cl, mode="reduce-overhead")
                specs.append(
                    (
                        "timm compiled reduce-overhead bf16 channels_last",
                        "bf16",
                        runner(ro, channels_last=True, dtype=torch.bfloat16),
                    )
                )
    out = []
    for label, precision, call in specs:
        log(f"batch {batch}: building {label}")
        start = time.perf_counter()
        for _ in range(3):  # compile / record CUDA graphs / cuDNN autotune, outside the measurement
            call()
        sync(device)
        out.append(Built(label, "timm", precision, call, time.perf_counter() - start))
    return out


# ------------------------------------------------------------------------------------------------
# effnet
# ------------------------------------------------------------------------------------------------


def effnet_paths(args, source, device: torch.device, batch: int, pixels: torch.Tensor) -> list[Built]:
    out = []
    for label, (options, needs_cuda, compiles) in EFFNET_PATHS.items():
        if (needs_cuda and device.type != "cuda") or (compiles and args.no_compile):
            continue
        if compiles and batch == 1 and "graphs" not in label and not args.all_compile:
            continue  # batch 1 is launch bound: the compiled path without graphs is not a contender there
        if args.paths and not any(s in label for s in args.paths):
            continue
        if args.skip and any(s in label for s in args.skip):
            continue
        log(f"batch {batch}: building {label}")
        start = time.perf_counter()
        opts = dict(options)
        if opts.get("cuda_graphs") or opts.get("compile"):
            opts["prepared_sizes"] = (batch,)
        backend = create_backend("torch", source, device=str(device), **opts)
        backend(pixels)  # first call (lazy cuDNN algorithm choice); graphs/compile were prepared at load
        sync(device)
        setup = time.perf_counter() - start
        out.append(Built(label, "effnet", backend.precision, lambda b=backend: b(pixels), setup))
    return out


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------


def interleave(paths: list[Built], device: torch.device, rounds: int, per_round: int) -> None:
    for r in range(rounds):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]
        for p in order:
            for _ in range(per_round):
                sync(device)
                t = time.perf_counter()
                p.call()  # ends with a copy to the host: synchronous
                p.times_ms.append((time.perf_counter() - t) * 1e3)


def model_section(args, source, device: torch.device, batch: int) -> list[dict[str, Any]]:
    size = source.preprocess.input_size
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    paths = timm_paths(args, source, device, batch, pixels) + effnet_paths(args, source, device, batch, pixels)
    log(f"batch {batch}: {len(paths)} paths built; {args.rounds} interleaved rounds")
    interleave(paths, device, args.rounds, args.per_round)
    rows = []
    for p in paths:
        ms = float(np.median(p.times_ms))
        rows.append(
            {"path": p.name, "group": p.group, "precision": p.precision, "batch": batch, "ms": ms,
             "img_s": batch * 1e3 / ms, "setup_s": p.setup_s, "calls": len(p.times_ms)}
        )  # fmt: skip
    del paths
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def upload_ms(device: torch.device, batch: int, size: int, repeat: int = 5) -> float | None:
    """Median time to copy one uint8 batch from pinned host memory to the device: what overlapping the next
    batch's upload with this batch's compute could save per batch (not done: docs/gpu.md)."""
    if device.type != "cuda":
        return None
    host = torch.empty((batch, size, size, 3), dtype=torch.uint8, pin_memory=True)
    times = []
    with torch.cuda.device(device):
        for _ in range(repeat + 1):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            host.to(device, non_blocking=True)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return float(np.median(times[1:]))


def e2e_section(args, source, device: torch.device, decode: str = "pillow") -> dict[str, Any]:
    from effnet.evaluate import evaluate, find_dataset

    label = args.e2e_path or (
        "effnet graphs bf16" if device.type == "cuda" else "effnet fast fp32 (BN folded, channels_last)"
    )
    options = dict(EFFNET_PATHS[label][0])
    batch = args.e2e_batch or (64 if device.type == "cuda" else 2)
    if options.get("cuda_graphs") or options.get("compile"):
        options["prepared_sizes"] = (batch,)
    clf = Classifier(
        source.model,
        source.checkpoint or False,
        backend="torch",
        device=str(device),
        decode=decode,
        progress=False,
        **options,
    )
    dataset = find_dataset(args.data, labels=clf.labels)
    dataset = dataclasses.replace(dataset, samples=dataset.samples * args.e2e_repeat)
    workers = args.workers or os.cpu_count() or 1
    size = source.preprocess.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)

    def pure() -> float:  # host uint8 crops in, probabilities out: what evaluate() asks of the backend
        clf.backend(pixels)
        start = time.perf_counter()
        n = max(3, args.rounds)
        for _ in range(n):
            clf.backend(pixels)
        return n * batch / (time.perf_counter() - start)

    log(f"e2e: {label}, batch {batch}, {len(dataset.samples)} images, {workers} decoding threads, decode {decode}")
    before = pure()
    report = evaluate(clf, dataset, batch_size=batch, workers=workers)
    after = pure()
    result = {
        "path": label, "batch": batch, "images": report.count, "workers": workers, "decode": decode,
        "e2e_img_s": report.images_per_second, "pure_img_s": (before + after) / 2,
        "decode_wait_s": report.decode_wait_seconds, "seconds": report.seconds,
        "decode_counts": report.decode, "upload_ms": upload_ms(device, batch, size),
    }  # fmt: skip
    result["ratio"] = result["e2e_img_s"] / result["pure_img_s"]
    result["batch_ms"] = batch * 1e3 / result["pure_img_s"]
    return result


def ranking_figures(rows: list[dict[str, Any]]) -> str:
    """The figures that would replace AUTO_RANKING_CUDA's "unmeasured": per precision and batch, the rule's
    first choice (CUDA graphs) against its fallback (the eager fast path)."""
    lines = [
        "auto on CUDA (`AUTO_RANKING_CUDA`, a rule until measured: CUDA graphs first, the eager fast path if "
        "capture fails). Measured here:",
        "",
        "| precision | batch | graphs ms | eager fast ms | graphs / eager |",
        "|---|---:|---:|---:|---:|",
    ]
    found = False
    for precision in ("fp32", "bf16", "fp16"):
        for b in sorted({r["batch"] for r in rows}):
            at = {r["path"]: r for r in rows if r["batch"] == b and r["group"] == "effnet"}
            graphs = at.get(f"effnet graphs {precision}")
            fast = next((r for name, r in at.items() if name.startswith(f"effnet fast {precision}")), None)
            if graphs and fast:
                found = True
                lines.append(
                    f"| {precision} | {b} | {graphs['ms']:.2f} | {fast['ms']:.2f} | {graphs['ms'] / fast['ms']:.2f} |"
                )
    return "\n".join(lines) + "\n" if found else ""


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def versions(device: torch.device) -> str:
    info = describe_device(device)
    parts = [f"torch {torch.__version__}"]
    for mod in ("timm", "torchvision", "triton"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            parts.append(f"{mod} not installed")
    if device.type == "cuda":
        gpu = (
            f"{info['gpu']} ({info['gpu_memory_gib']} GiB, compute {info['compute_capability']}), "
            f"driver {info.get('driver') or 'unknown'}, CUDA {info['cuda']}, cuDNN {info['cudnn']}"
        )
    else:
        gpu = "no GPU: device cpu (a dry run of the script, not a GPU measurement)"
    cpu = platform.processor() or platform.machine()
    return f"{gpu}; {', '.join(parts)}; host {cpu}, {os.cpu_count()} logical CPUs"


def markdown(args, source, device, rows: list[dict], e2e: list[dict] | None) -> str:
    batches = sorted({r["batch"] for r in rows})
    weights = "random weights" if source.checkpoint is None else str(source.checkpoint.name)
    today = datetime.date.today().isoformat()
    lines = [
        f"Measured {today} by `benchmarks/bench_gpu.py` ({' '.join(sys.argv[1:]) or 'defaults'}).",
        "",
        f"{versions(device)}.",
        "",
        f"{source.model} ({weights}) at {source.preprocess.input_size}x{source.preprocess.input_size}; every "
        "path: uint8 crops on the device -> normalize -> model -> softmax -> host. Interleaved: "
        f"{args.rounds} rounds x {args.per_round} calls per path; median per call. Setup: build + compile/"
        "capture + first calls.",
        "",
    ]
    for b in batches:
        at = [r for r in rows if r["batch"] == b]
        timm_rows = [r for r in at if r["group"] == "timm"]
        best = min(timm_rows, key=lambda r: r["ms"]) if timm_rows else None
        lines += [f"Batch {b}" + (f" (timm's best: {best['path']})" if best else " (timm not installed)"), ""]
        lines += ["| path | precision | ms/batch | img/s | vs timm best | setup s |", "|---|---|---:|---:|---:|---:|"]
        for r in sorted(at, key=lambda r: r["ms"]):
            ratio = ""
            if best:  # latency ratio at batch 1 (lower is better), throughput ratio at larger batches
                ratio = f"{r['ms'] / best['ms']:.2f}x latency" if b == 1 else f"{r['img_s'] / best['img_s']:.2f}x img/s"
            lines.append(
                f"| {r['path']} | {r['precision']} | {r['ms']:.2f} | {r['img_s']:.1f} | {ratio} | {r['setup_s']:.1f} |"
            )
        lines.append("")
    lines.append(ranking_figures(rows))
    for e in e2e or []:
        upload = "" if e["upload_ms"] is None else f"{e['upload_ms']:.2f}"
        lines += [
            f"End to end (`effnet.evaluate.evaluate`, JPEG files, decode {e['decode']} in "
            f"{e['workers']} threads) against pure inference of the same path; upload: one pinned uint8 batch "
            "to the GPU (what overlapping uploads with compute could save per batch):",
            "",
            "| path | decode | batch | images | e2e img/s | pure inference img/s | ratio | waiting for decoding s "
            "| batch ms | upload ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {e['path']} | {e['decode']} | {e['batch']} | {e['images']} | {e['e2e_img_s']:.1f} "
            f"| {e['pure_img_s']:.1f} | {e['ratio']:.2f} | {e['decode_wait_s']:.1f} | {e['batch_ms']:.2f} | {upload} |",
            "",
        ]
        if e["decode_counts"]:
            lines += [f"decode counts: {e['decode_counts']}", ""]
    return "\n".join(lines)


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text(encoding="utf-8")
    block = f"{DOC_BEGIN}\n{text}\n{DOC_END}"
    if DOC_BEGIN in doc and DOC_END in doc:
        head, rest = doc.split(DOC_BEGIN, 1)
        doc = head + block + rest.split(DOC_END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n## GPU: effnet against timm (bench_gpu.py)\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".performance-", suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(doc)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    ap.add_argument("--model", default="efficientnet-b5")
    ap.add_argument(
        "--weights", default=None, help="checkpoint (default: random weights; speed does not depend on them)"
    )
    ap.add_argument("--timm-model", default=None, help="timm name of the peer (default: tf_<model>)")
    ap.add_argument("--batch-sizes", default="1,256")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip every torch.compile path (each compiles at load)")
    ap.add_argument("--all-compile", action="store_true", help="every compiled path at every batch size")
    ap.add_argument("--paths", nargs="*", default=None, help="effnet paths whose names contain one of these")
    ap.add_argument("--skip", nargs="*", default=None, help="effnet paths whose names contain one of these: left out")
    ap.add_argument("--data", default=str(REPO / ".." / "shared" / "imagenet" / "sample"), help="JPEGs for e2e")
    ap.add_argument("--e2e-path", default=None, choices=list(EFFNET_PATHS))
    ap.add_argument("--e2e-batch", type=int, default=None)
    ap.add_argument("--e2e-repeat", type=int, default=4, help="passes over the --data images")
    ap.add_argument("--workers", type=int, default=None, help="decoding threads (default: all CPU cores)")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--write-docs", action="store_true", help="put the report into docs/performance.md")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
    source = resolve_source(args.model, args.weights if args.weights else False, progress=False)
    # End to end first: it compiles nothing, so a time limit that cuts the run short still leaves it.
    e2e: list[dict[str, Any]] = []
    if not args.no_e2e:
        for decode in ("pillow", "gpu") if device.type == "cuda" else ("pillow",):
            e = e2e_section(args, source, device, decode)
            log(
                f"e2e ({decode}): {e['e2e_img_s']:.1f} img/s vs pure inference {e['pure_img_s']:.1f} ({e['ratio']:.2f})"
            )
            e2e.append(e)
    rows: list[dict] = []
    for b in (int(x) for x in args.batch_sizes.split(",")):
        rows += model_section(args, source, device, b)
        print(markdown(args, source, device, [r for r in rows if r["batch"] == b], None), flush=True)
    text = markdown(args, source, device, rows, e2e)
    print("\n## Full report\n\n" + text)
    if args.write_docs:
        if device.type != "cuda":
            log("not writing docs/performance.md from a CPU dry run")
        else:
            write_docs(REPO / "docs" / "performance.md", text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "e2e": e2e, "versions": versions(device)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
