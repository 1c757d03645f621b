"""Inference backends behind one small protocol.

A backend takes a batch of center-cropped RGB pixels (uint8, NHWC, exactly what
the weights record's resize and crop produce, :mod:`effnet.pipeline`) and returns
class probabilities. Each backend applies the input convention of its own artifact:
the PyTorch model and the ONNX export take normalized RGB
(:func:`effnet.preprocess.normalize`), the OpenVINO IR takes raw BGR pixels with
mean/scale folded in. Preprocessing up to the crop is therefore shared by all of
them, and cannot drift.

Every backend takes the common options ``precision``, ``threads`` and ``cache_dir``
(a backend that needs no export ignores ``cache_dir``), so ``backend="auto"`` can fall
back from one to the next with the same call.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from ..device import device_kind, parse_device, resolve_device
from ..errors import EffnetError, UnknownNameError
from ..source import ModelSource, OutputKindError, is_distribution
from .accuracy import ACCURACY_GATE, VERIFIED_ON, accuracy_status

__all__ = [
    "Backend",
    "BackendFactory",
    "AutoChoice",
    "AutoRanking",
    "AUTO_RANKING",
    "AUTO_RANKING_CUDA",
    "ACCURACY_GATE",
    "accuracy_status",
    "VERIFIED_ON",
    "DEVICE_BACKENDS",
    "ModelSource",
    "register",
    "available_backends",
    "installed_backends",
    "auto_candidates",
    "resolve_auto",
    "create_backend",
    "WORKLOADS",
    "workload_options",
    "infer_stream",
]


class Backend(Protocol):
    name: str
    precision: str  # what actually runs ("fp32", "bf16", ...), never a silent default

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB -> float32 [N, num_classes] probabilities."""
        ...

    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] normalized input (what the PyTorch model takes) -> probabilities.

        The KServe v2 tensor API feeds this; each backend converts to its own input convention.
        """
        ...


BackendFactory = Callable[..., Backend]
T = TypeVar("T")

# What a job asks of its backend. ``latency``: one input at a time, answered as soon as possible (one image,
# a server that does not batch). ``throughput``: many inputs, as many per second as possible (a folder, a
# dataset, a Ray actor, a batching server). Backends with a configuration for each get its options here; the
# others run the same either way. OpenVINO's THROUGHPUT hint sizes parallel streams for the cores (measured
# 1.12x B5, 1.25x Lite0 per Ray node over LATENCY's one stream: docs/distributed.md; local eval:
# docs/performance.md "Bulk jobs").
WORKLOADS = ("latency", "throughput")
_WORKLOAD_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {"openvino": {"throughput": {"mode": "throughput"}}}


def workload_options(backend: str, workload: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``options`` for ``backend`` running ``workload``: the workload's configuration, under what the caller set."""
    if workload not in WORKLOADS:
        raise EffnetError(f"workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    return {**_WORKLOAD_OPTIONS.get(backend, {}).get(workload, {}), **(options or {})}


def infer_stream(backend: Backend, jobs: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
    """``(tag, uint8 NHWC crops)`` -> ``(tag, probabilities)``, in input order; an empty batch gives 0 rows.

    A backend with its own ``infer_stream`` (OpenVINO: an asynchronous infer queue) keeps several calls in
    flight, so every stream stays fed while the next batch is decoded; the others run one call at a time.
    """
    own = getattr(backend, "infer_stream", None)
    if own is not None:
        return own(jobs)
    return ((tag, backend(x) if len(x) else np.empty((0, 0), np.float32)) for tag, x in jobs)


_FACTORIES: dict[str, Callable[[], BackendFactory]] = {}
_PACKAGES: dict[str, str] = {}  # backend -> the import name it needs


def register(name: str, loader: Callable[[], BackendFactory], package: str | None = None) -> None:
    """Register a backend; ``loader`` imports lazily so optional packages stay optional."""
    _FACTORIES[name] = loader
    _PACKAGES[name] = package or name


def available_backends() -> tuple[str, ...]:
    """Every registered backend name (installed or not)."""
    return tuple(_FACTORIES)


def installed_backends() -> tuple[str, ...]:
    """The registered backends whose package can be imported here."""
    return tuple(n for n in _FACTORIES if importlib.util.find_spec(_PACKAGES[n]) is not None)


@dataclass(frozen=True)
class AutoChoice:
    """One entry of the ranking: a backend, the options that make it fast, what it measured, and whether its
    accuracy is verified (``auto`` never picks an ``unverified`` path; it stays opt-in by name)."""

    backend: str
    options: Mapping[str, Any]
    measured: str  # the figure it was ranked by
    accuracy: str = "verified"  # "verified" (fp32 parity, or top-1 agreement >= ACCURACY_GATE) or "unverified"


@dataclass(frozen=True)
class AutoRanking:
    """The fastest paths per precision, as measured once on one machine: data, so it can be re-measured."""

    measured_on: str  # date, machine, workload
    source: str  # where the full table is
    paths: Mapping[str, tuple[AutoChoice, ...]]


# docs/performance.md "The table": B5, batch 1, 2 threads, one interleaved run (15 rounds x 3 calls) on
# 2026-11-26 00:07. Compiled torch paths are left out: their first call compiles for 10-30 s.
AUTO_RANKING = AutoRanking(
    measured_on="2026-11-26, AMD EPYC (family 26) under KVM, 2 cores, AVX-512 VNNI/BF16, no AMX; B5 batch 1",
    source="docs/performance.md",
    paths={
        "fp32": (
            AutoChoice("openvino", {"precision": "fp32"}, "70.2 ms"),
            AutoChoice("onnxruntime", {}, "74.9 ms"),
            AutoChoice("torch", {"fast": True}, "111 ms"),
        ),
        "bf16": (
            AutoChoice("openvino", {"precision": "bf16"}, "40.4 ms"),
            AutoChoice("torch", {"precision": "bf16"}, "73 ms"),
        ),
        "int8": (
            AutoChoice("openvino", {"precision": "int8"}, "32.9 ms"),
            # Second: one interleaved run on 2026-12-05 (quiet, batch 1, 2 threads) put LiteRT full int8 behind
            # OpenVINO int8 on B5 (82.6 vs 70.3 ms) and on Lite0 (3.0 vs 2.3 ms), docs/performance.md; issue
            # 22's own B5 run had found it ahead (0.71-0.74x of openvino bf16).
            AutoChoice(
                "litert",
                {"precision": "int8"},
                "82.6 ms (1.18x openvino int8 in the same run, 2026-12-05)",
                # SiLU and the SE gate quantized too: unknown for B5; verified on Lite0/1/2 (backends/accuracy.py),
                # where auto takes it when no INT8 IR is in the export cache and its .tflite is
                accuracy="unverified",
            ),
        ),
    },
)


# On CUDA only the torch backend runs (onnxruntime and OpenVINO run on the CPU here), so there is no
# ranking of backends to measure; which torch path `auto` takes is a RULE, not a measurement of these
# paths (none has run on a GPU yet): capture CUDA graphs at load at the requested precision, because
# batch 1 eager on a GPU is launch bound (issue 11's H200 figures for B5, quoted there, not measured
# here: 12.1 ms bf16 eager against 2.49 ms with CUDA graphs); torch.compile is left out
# because it compiles at load for tens of seconds. If the capture fails, the eager fast path runs.
# benchmarks/gpu_check.sh (bench_gpu.py) prints the measured figures of both choices on the GPU it runs
# on ("auto on CUDA"): once measured, they replace "unmeasured" here and the rule becomes a ranking.
AUTO_RANKING_CUDA = AutoRanking(
    measured_on="unmeasured: a rule, not a measurement (CUDA graphs first, eager fast path if capture fails; "
    "docs/gpu.md)",
    source="docs/gpu.md; benchmarks/bench_gpu.py prints the figures that would replace it",
    paths={
        precision: (
            AutoChoice("torch", {**extra, "cuda_graphs": True}, "unmeasured"),
            AutoChoice("torch", {**extra, "fast": True}, "unmeasured"),
        )
        for precision, extra in (("fp32", {}), ("bf16", {"precision": "bf16"}), ("fp16", {"precision": "fp16"}))
    },
)
# Backends that take effnet device strings; the others run on the CPU (OpenVINO's own ``device`` option
# names OpenVINO devices and is not set from --device).
DEVICE_BACKENDS = ("torch",)


def _device_options(name: str, options: dict[str, Any], device: str, batch_hint: int | None) -> dict[str, Any]:
    """``options`` for backend ``name`` on ``device``: the device where the backend takes one, and the
    caller's batch size as the torch backend's ``batch_size`` when it prepares fixed shapes."""
    if name not in DEVICE_BACKENDS:
        if device != "auto" and device_kind(device) != "cpu":  # auto: the CPU, for a CPU backend
            raise EffnetError(
                f"the {name} backend runs on the CPU here; --device {device} needs --backend torch (or auto)"
            )
        return options
    out = {"device": device, **options}
    # On CUDA the torch backend always prepares fixed shapes (eager too), on the CPU when compiled or graphed.
    if batch_hint is not None and (out.get("cuda_graphs") or out.get("compile") or device != "cpu"):
        out.setdefault("batch_size", batch_hint)
    return out


def auto_candidates(
    precision: str | None = None, ranking: AutoRanking = AUTO_RANKING, model: str | None = None
) -> list[tuple[str, dict]]:
    """The installed (backend, options) paths for ``precision`` (default fp32), fastest first.

    A path whose accuracy the ranking records as ``unverified`` (for the model it was measured on) is a
    candidate only for a ``model`` on which :func:`accuracy_status` says it met the gate."""
    precision = precision or "fp32"
    if precision not in ranking.paths:
        raise EffnetError(f"precision must be one of {', '.join(ranking.paths)}, got {precision!r}")
    installed = installed_backends()

    def verified(c: AutoChoice) -> bool:
        if c.accuracy == "verified":
            return True
        return model is not None and accuracy_status(model, c.backend, c.options.get("precision", precision)) == (
            "verified"
        )

    found = [(c.backend, dict(c.options)) for c in ranking.paths[precision] if c.backend in installed and verified(c)]
    if not found:
        raise EffnetError(f"no installed backend runs {precision}: pip install 'effnet[openvino]'")
    return found


def auto_ranking(device: str = "cpu") -> AutoRanking:
    """The ranking ``auto`` uses on ``device`` (``auto``: CUDA's when CUDA is available)."""
    return AUTO_RANKING_CUDA if resolve_device(device).type == "cuda" else AUTO_RANKING


def resolve_auto(precision: str | None = None, device: str = "cpu") -> tuple[str, dict[str, Any]]:
    """(backend, options) of the fastest installed path for ``precision`` on ``device``; it is not built here."""
    return auto_candidates(precision, auto_ranking(device))[0]


def _factory(name: str) -> BackendFactory:
    try:
        loader = _FACTORIES[name]
    except KeyError:
        raise UnknownNameError(f"unknown backend {name!r}; available: {', '.join(_FACTORIES)}") from None
    return loader()


def _accepted(factory: BackendFactory, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``factory`` takes: auto's fallbacks drop the ones meant for another backend."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def _build(name: str, source: ModelSource, options: dict[str, Any]) -> Backend:
    factory = _factory(name)
    unknown = set(options) - set(_accepted(factory, options))
    if unknown:
        raise EffnetError(f"the {name} backend has no option {', '.join(sorted(unknown))}")
    return factory(source, **options)


def create_backend(name: str, source: ModelSource, **options: Any) -> Backend:
    """Build backend ``name``, or with ``"auto"`` the fastest installed one for ``options["precision"]``.

    ``device`` (cpu, cuda, cuda:N, auto; default cpu) goes to the backends that take one (torch); for the
    others anything but the CPU is an error, and ``auto`` on CUDA ranks the CUDA paths. ``batch_hint``
    (the caller's batch size) becomes the torch backend's ``batch_size`` when it prepares fixed shapes
    (always on CUDA); OpenVINO's own ``batch_size`` makes its shape static, so it stays explicit.
    ``workload`` (``latency`` default, or ``throughput`` for many inputs) selects the backend's configuration
    for the job (:func:`workload_options`); options the caller gives explicitly win.

    ``auto`` checks that its choice really loads: if building it fails (a missing runtime library,
    an export that cannot be made here), it says so in one line on stderr and builds the next one.
    The backend built reports itself in ``.name`` / ``.precision``; ``.auto_choice`` says what auto chose
    (backend, options) and which candidates failed to load.
    """
    device = parse_device(options.pop("device", None) or "cpu")
    batch_hint = options.pop("batch_hint", None)
    workload = options.pop("workload", None) or "latency"
    if name != "auto":
        options = workload_options(name, workload, options)
        return _probed(_build(name, source, _device_options(name, options, device, batch_hint)), source)
    precision = options.pop("precision", None)
    failures: list[str] = []
    candidates = auto_candidates(precision, auto_ranking(device), source.model)
    for n, (backend, chosen) in enumerate(candidates, 1):
        merged = {**chosen, **_accepted(_factory(backend), options)}
        merged = _device_options(backend, workload_options(backend, workload, merged), device, batch_hint)
        if "precision" not in merged and precision is not None:
            merged["precision"] = precision
        try:
            built = _factory(backend)(source, **merged)
        except (EffnetError, ImportError, OSError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            failures.append(f"{backend}: {first}")
            if n < len(candidates):
                print(f"effnet: backend auto: {backend} did not load ({first}); trying the next", file=sys.stderr)
            continue
        try:
            built.auto_choice = {"backend": backend, "options": merged, "fallbacks": failures}  # type: ignore[attr-defined]
        except AttributeError:  # a backend with __slots__: the notice on stderr has said it
            pass
        return _probed(built, source)
    raise EffnetError("backend auto: no installed backend loaded: " + "; ".join(failures))


def _probed(backend: Backend, source: ModelSource) -> Backend:
    """One probe forward pass on a mid-gray crop at load, before any row is written, for every model file
    (and any source that does not say what it outputs): rows said (by the file's metadata or --output-kind) or
    found to be probabilities must be distributions, rows said to be logits must not already be ones. A
    contradiction is refused in one line naming the file, what it was said to output and what the probe saw."""
    model_file = getattr(backend, "model_path", None)
    if source.output != "unknown" and model_file is None:  # the torch model: a softmax by construction
        return backend
    what = model_file or "the model file"
    size = source.preprocess.input_size
    batch = getattr(backend, "static_batch", None) or getattr(backend, "_static_batch", None) or 1
    try:
        rows = np.asarray(backend(np.full((batch, size, size, 3), 128, dtype=np.uint8)), dtype=np.float64)
    except OutputKindError as e:
        raise EffnetError(f"{what} is {e}: pass --output-kind prob") from None
    if is_distribution(rows, 1e-3 if source.output == "unknown" else 0.05):  # int8 outputs are coarser
        return backend
    sums = rows.sum(axis=-1)
    saw = f"row sums {sums.min():.4g}" + ("" if sums.min() == sums.max() else f" to {sums.max():.4g}")
    saw += f", smallest value {rows.min():.4g}"
    if source.output == "unknown":
        raise EffnetError(
            f"{what} carries no metadata saying what it outputs, and its rows are not probabilities (a probe saw "
            f"{saw}): pass --output-kind logits to soft-max them, or --output-kind prob"
        )
    raise EffnetError(
        f"{what} is said to output probabilities, but its rows are not (a probe saw {saw}): pass "
        "--output-kind logits to soft-max them"
    )


def _torch() -> BackendFactory:
    from .torch_backend import TorchBackend

    return TorchBackend


def _onnxruntime() -> BackendFactory:
    from .onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend


def _openvino() -> BackendFactory:
    from .openvino_backend import OpenVINOBackend

    return OpenVINOBackend


def _litert() -> BackendFactory:
    from .litert_backend import LiteRTBackend

    return LiteRTBackend


register("torch", _torch)
register("onnxruntime", _onnxruntime)
register("openvino", _openvino)
register("litert", _litert, package="ai_edge_litert")
