#!/usr/bin/env bash
# One-step setup for a fresh machine: a virtual environment in .venv with effnet, its optional
# backends and everything the tests need. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --upgrade pip
# The CPU build of torch first: a bare `torch` requirement would resolve to a multi-GB CUDA build.
$py -m pip install -q torch==2.13.0
$py -m pip install -q -e ".[onnx,openvino,quantize,serve,ray,litert-runtime,explain,plots,video,audit,test]"
# Reference implementations for the parity tests only. --no-deps: they declare torchvision,
# which would pull a CUDA torch; neither needs it for what the tests use.
$py -m pip install -q --no-deps geffnet==1.0.2 efficientnet_pytorch==0.7.1
# torchvision's EfficientNet code for its parity test, as the unmodified wheel (never installed: its C++
# extension is a CUDA build and `import torchvision` fails beside the CPU torch; the test reads the pure-Python
# model file from the wheel, see tests/parity/torchvision_reference.py).
ls .venv/wheels/torchvision-0.28.0-*.whl >/dev/null 2>&1 \
    || $py -m pip download -q --no-deps --only-binary=:all: torchvision==0.28.0 -d .venv/wheels
# Headless Chromium for the browser test of `effnet serve`: Debian's package, driven by the playwright
# package (never `playwright install`, which downloads a browser build). Only where apt-get exists and we
# are root; without it that one test skips.
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "setup: could not install chromium; the browser test will skip" >&2
fi
$py -c "import effnet, torch; print('effnet', effnet.__version__, 'torch', torch.__version__)"
