#!/usr/bin/env python
"""Where B5's GPU time goes: torch.profiler over effnet's (and timm's) paths at batch 256 and batch 1.

For each batch size and path: warm-up, then ``--steps`` profiled calls; prints the top ops by device
time (``key_averages().table``) and a summary by kind of kernel (depthwise conv, pointwise conv/GEMM,
elementwise/activation, pooling/SE reductions, copies, other), so the next step of "go past timm" can
attack the biggest part. The profile is of the eager paths (``fast`` bf16 and timm bf16 autocast):
inside a CUDA graph the same kernels run with the launch gaps removed, and the gap between the eager
wall time and the sum of kernel time is the launch overhead the graphs remove.

    python benchmarks/profile_gpu.py --batch-sizes 256,1
    python benchmarks/profile_gpu.py --device cpu --batch-sizes 1 --model efficientnet-lite0 --steps 1  # dry run
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from effnet.backends import create_backend  # noqa: E402
from effnet.device import resolve_device  # noqa: E402
from effnet.preprocess import normalize_tensor  # noqa: E402
from effnet.source import resolve_source  # noqa: E402

# Kernel name patterns -> kind, first match wins (cuDNN/CUTLASS/inductor/aten names).
KINDS: tuple[tuple[str, str], ...] = (
    ("depthwise", r"depthwise|dwconv|conv_depthwise|DepthwiseConv"),
    ("conv/gemm", r"conv|gemm|cutlass|sm\d+_xmma|implicit_convolve|wgrad|dgrad|cudnn|nchwToNhwc|nhwcToNchw|mm"),
    ("pool/reduce (SE)", r"reduce|mean|avg_pool|adaptive|sum"),
    ("copy/layout", r"copy|memcpy|Memcpy|cat|permute|contiguous|to_copy"),
    ("elementwise", r"elementwise|silu|sigmoid|mul|add|vectorized|unrolled|triton_poi|fused|clamp|div|sub"),
)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def summarize(prof, device_type: str, steps: int) -> tuple[str, float]:
    """Markdown table of self time by kind, and the per-call total (ms). On CUDA only kernel events count
    (the aten ops that launch them carry the same device time again)."""
    from torch.autograd import DeviceType

    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for evt in prof.key_averages():
        if device_type == "cuda":
            if evt.device_type != DeviceType.CUDA:
                continue
            t = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0.0)
        else:
            t = evt.self_cpu_time_total
        if not t:
            continue
        k = kind_of(evt.key)
        totals[k] += t
        counts[k] += evt.count
    grand = sum(totals.values()) or 1.0
    lines = ["| kind | self time ms per call | share | launches per call |", "|---|---:|---:|---:|"]
    for k, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | {t / 1e3 / steps:.2f} | {t / grand:.0%} | {counts[k] / steps:.0f} |")
    return "\n".join(lines), grand / 1e3 / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="efficientnet-b5")
    ap.add_argument("--batch-sizes", default="256,1")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=25, help="rows of the top-ops table")
    ap.add_argument("--no-timm", action="store_true")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    source = resolve_source(args.model, False, progress=False)
    size = source.preprocess.input_size
    precision = "bf16" if cuda else "fp32"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"# profile: {source.model} at {size}, device {device}, torch {torch.__version__}\n")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
        calls = {}
        backend = create_backend("torch", source, device=str(device), fast=True, precision=precision)
        calls[f"effnet fast {precision} eager"] = lambda b=backend: b(pixels)
        if cuda and not args.no_timm:
            try:
                import timm

                m = timm.create_model("tf_efficientnet_b5", pretrained=False).eval().to(device)
                m = m.to(memory_format=torch.channels_last)
                p = source.preprocess

                def timm_call(m=m, p=p):
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                        x = normalize_tensor(pixels, p, channels_last=True)
                        return torch.softmax(m(x).float(), 1).cpu()

                calls["timm bf16 autocast channels_last eager"] = timm_call
            except ImportError:
                print("(timm not installed: effnet only)\n")
        for name, call in calls.items():
            for _ in range(3):
                call()
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            with profile(activities=activities) as prof:
                for _ in range(args.steps):
                    call()
                if cuda:
                    torch.cuda.synchronize()
            wall = (time.perf_counter() - start) / args.steps * 1e3
            table, busy = summarize(prof, device.type, args.steps)
            what = "kernel time" if cuda else "op time"
            print(
                f"## {name}, batch {batch}: {wall:.2f} ms per call under the profiler (wall), {busy:.2f} ms {what} "
                f"({busy / wall:.0%}; the rest is launch/host overhead and gaps)\n"
            )
            print(table)
            print()
            print("```")
            print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=70))
            print("```\n")
        del calls, backend
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
