"""torchvision's own EfficientNet code, run beside the CPU torch without torchvision's C++ extension.

torchvision's PyPI wheels for Linux are CUDA builds: `import torchvision` runs `torchvision/__init__.py`,
which loads `torchvision/_C.so`, linked against `libtorch_cuda.so`; beside the CPU torch it fails
("operator torchvision::nms does not exist"). `torchvision/models/efficientnet.py` itself is pure Python and
uses no C++ op: its imports are `torchvision.ops.StochasticDepth` (ops/stochastic_depth.py),
`Conv2dNormActivation` and `SqueezeExcitation` (ops/misc.py), the weights enums (models/_api.py, _meta.py,
_utils.py) and `transforms._presets` (pure tensor/PIL code).

Method: `scripts/setup.sh` downloads the unmodified wheel `torchvision==0.28.0` (the release for torch 2.13)
with `pip download --no-deps` into `<venv>/wheels/`. Here the packages `torchvision`, `torchvision.ops`,
`torchvision.models` and `torchvision.transforms` are registered as bare package objects whose `__path__`
points *inside* the wheel (Python's zipimport reads modules straight from the zip). Their `__init__.py`
files — the ones that load `_C.so` and import every model and op — are not executed; every module that
efficientnet.py imports is torchvision's own file, unmodified. The two names `__init__.py` would have
re-exported (`torchvision.ops.StochasticDepth`, `torchvision.transforms.InterpolationMode`) are taken from
the real modules that define them. Nothing is stubbed. The modules are removed from `sys.modules` again
afterwards, so no other test sees a partial torchvision.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

TORCHVISION_VERSION = "0.28.0"


def torchvision_wheel() -> Path:
    wheels = sorted((Path(sys.prefix) / "wheels").glob(f"torchvision-{TORCHVISION_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(
            f"torchvision {TORCHVISION_VERSION} wheel not found in {Path(sys.prefix) / 'wheels'}: run scripts/setup.sh "
            f"(it runs `pip download torchvision=={TORCHVISION_VERSION} --no-deps -d .venv/wheels`)"
        )
    return wheels[-1]


def load_torchvision_efficientnet() -> types.ModuleType:
    """torchvision.models.efficientnet from the wheel, without torchvision's C++ extension."""
    root = f"{torchvision_wheel()}/torchvision"
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    try:
        packages = {}
        for name, sub in (("torchvision", ""), ("ops", "/ops"), ("models", "/models"), ("transforms", "/transforms")):
            full = name if name == "torchvision" else f"torchvision.{name}"
            pkg = types.ModuleType(full)
            pkg.__path__ = [root + sub]
            pkg.__package__ = full
            sys.modules[full] = pkg
            packages[name] = pkg
        packages["ops"].StochasticDepth = importlib.import_module("torchvision.ops.stochastic_depth").StochasticDepth
        packages["transforms"].InterpolationMode = importlib.import_module(
            "torchvision.transforms.functional"
        ).InterpolationMode
        module = importlib.import_module("torchvision.models.efficientnet")
        if not str(module.__file__).startswith(str(root)):
            raise ImportError(f"loaded {module.__file__}, not the wheel's file")
        return module
    finally:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.modules.update(saved)
