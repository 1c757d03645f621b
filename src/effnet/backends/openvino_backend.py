"""OpenVINO backend: the card's converted model (IR), fed raw BGR pixels.

The execution precision is always set explicitly: on CPUs with AVX512_BF16 or AMX
the CPU plugin would otherwise run bf16 by default, silently moving the outputs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .._optional import require
from ..errors import EffnetError
from ..export.cache import exported_artifact, int8_model_path
from ..pipeline import check_crops
from ..preprocess import bgr_nchw, denormalize
from ..source import ModelSource

INSTALL_EXTRA = "openvino"
# effnet precision name -> OpenVINO element type attribute of the inference precision hint.
# int8 is a quantized IR (`effnet quantize`); its remaining float ops run in f32.
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_MODES = {"latency": "LATENCY", "throughput": "THROUGHPUT"}  # ov.properties.hint.PerformanceMode
T = TypeVar("T")


class _Job:
    """One batch of an :meth:`OpenVINOBackend.infer_stream`: its rows fill in as their requests finish."""

    def __init__(self, tag: Any, rows: int, classes: int) -> None:
        self.tag = tag
        self.probs = np.empty((rows, classes), dtype=np.float32)
        self.remaining = rows
        self.done = threading.Event()
        if rows == 0:
            self.done.set()


class OpenVINOBackend:
    """``effnet export openvino`` compiled on an OpenVINO device (default CPU).

    Options: ``precision`` (``fp32`` default, ``bf16``, ``fp16``: the inference
    precision hint, and ``.precision`` reports what the plugin actually runs;
    ``int8``: the IR made by ``effnet quantize``; ``float_precision`` ``fp32`` (default) or ``bf16``
    for its ops that stay in float), ``threads`` (inference threads),
    ``batch_size`` (compile for this static batch size; calls must then use it),
    ``streams`` (parallel inference streams: that many calls may run at once from
    different threads, and one call's batch is split over the streams that are free),
    ``mode`` (OpenVINO's performance hint: ``latency``, one stream with every core, or
    ``throughput``, as many streams as the plugin finds best for the cores; ``streams`` overrides),
    ``fp16_weights`` (the FP16-compressed IR), ``model_path``
    (an existing IR in the same convention, instead of the cached export),
    ``device``, ``cache_dir``.
    """

    name = "openvino"

    def __init__(
        self,
        source: ModelSource,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        streams: int | None = None,
        mode: str | None = None,
        fp16_weights: bool = False,
        model_path: str | os.PathLike | None = None,
        device: str = "CPU",
        cache_dir: str | Path | None = None,
        float_precision: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        ov = require("openvino", INSTALL_EXTRA, "the openvino backend")
        import openvino.properties as props
        import openvino.properties.hint as hints

        if precision not in _HINTS:
            raise EffnetError(f"openvino backend: precision must be one of {', '.join(_HINTS)}, got {precision!r}")
        for option, value in (("threads", threads), ("streams", streams), ("batch_size", batch_size)):
            if value is not None and value < 1:
                raise EffnetError(f"{option} must be >= 1, got {value}")
        self.preprocess = source.preprocess
        self._source = source  # as_probabilities: a file whose output is logits is soft-maxed
        types = {name: getattr(ov.Type, attr) for name, attr in _HINTS.items()}
        # int8 only: the precision of the ops NNCF leaves in float (SE gate, pooling, softmax...);
        # bf16 is faster where the CPU has it (effnet.quantize and docs/performance.md).
        if float_precision is not None and (precision != "int8" or float_precision not in ("fp32", "bf16")):
            raise EffnetError(
                f"openvino backend: float_precision is for precision int8 and is fp32 or bf16, "
                f"got {float_precision!r} with precision {precision!r}"
            )
        hint = types[float_precision] if float_precision is not None else types[precision]
        config: dict[Any, Any] = {hints.inference_precision: hint}
        if mode is not None:
            if mode not in _MODES:
                raise EffnetError(f"openvino backend: mode must be one of {', '.join(_MODES)}, got {mode!r}")
            config[hints.performance_mode] = getattr(hints.PerformanceMode, _MODES[mode])
        if threads is not None:
            config[props.inference_num_threads] = threads
        if streams is not None:
            config[props.num_streams] = streams
        cache = Path(cache_dir) if cache_dir else None
        if model_path is not None:
            artifact: Any = nullcontext(Path(model_path))
        elif precision == "int8":
            artifact = nullcontext(int8_model_path(source, cache))
        else:
            # Built (once) from an ONNX export, so a first run also needs the onnx package.
            artifact = exported_artifact("openvino", source, cache_dir=cache, fp16=fp16_weights)
        core = ov.Core()
        with artifact as path:
            if not Path(path).is_file():
                raise EffnetError(f"openvino backend: no IR at {path}")
            self.model_path = Path(path)
            try:
                model = core.read_model(str(path))
            except RuntimeError as e:
                raise EffnetError(f"openvino backend: cannot read {path}: {e}") from None
            classes = model.output(0).get_partial_shape()[-1]
            source.check_outputs(
                classes.get_length() if classes.is_static else None, path, given=model_path is not None
            )
            # An IR from `effnet quantize` (given as model_path) runs int8 whatever precision was asked.
            quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
            size = self.preprocess.input_size
            try:
                if batch_size is not None:
                    # A static input shape lets the CPU plugin skip per-call shape inference and pick
                    # static kernels: measured 4-5 % faster on B5 at batch 1 (docs/performance.md).
                    model.reshape({model.input(0): [batch_size, 3, size, size]})
                elif model_path is not None and model.input(0).get_partial_shape()[0].is_static:
                    # `effnet export openvino` writes the card's static batch 1: take any batch, as the cache's IR.
                    model.reshape({model.input(0): [-1, 3, size, size]})
                self.compiled = core.compile_model(model, device, config)
            except RuntimeError as e:
                raise EffnetError(f"openvino backend: cannot compile {path} on {device}: {e}") from None
        actual = self.compiled.get_property(hints.inference_precision)
        ran = next((name for name in ("fp32", "bf16", "fp16") if types[name] == actual), str(actual))
        self.inference_precision = ran
        int8 = precision == "int8" or quantized
        self.precision = "int8" if int8 else ran
        self.weights_precision = "int8" if int8 else ("fp16" if fp16_weights else "fp32")
        self.device = device
        self.static_batch = batch_size
        self.streams = self.compiled.get_property(props.num_streams)
        self.threads = self.compiled.get_property(props.inference_num_threads)
        # One infer request per stream, handed out to concurrent callers: requests are not thread-safe,
        # and a caller waits only when every stream is busy.
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        try:
            count = max(1, int(self.streams))
        except (TypeError, ValueError):  # a symbolic value such as AUTO
            count = 1
        for _ in range(count):
            self._requests.put(self.compiled.create_infer_request())
        self._request_count = count
        self._ov = ov
        self.mode = str(self.compiled.get_property(hints.performance_mode))
        try:  # what OpenVINO says keeps every stream busy (benchmark_app's -nireq default)
            self.optimal_requests = max(1, int(self.compiled.get_property(props.optimal_number_of_infer_requests)))
        except (RuntimeError, TypeError, ValueError):
            self.optimal_requests = count

    def describe(self) -> dict[str, Any]:
        """What runs, for benchmark reports."""
        return {
            "precision": self.precision,
            "inference_precision": self.inference_precision,
            "static_batch": self.static_batch,
            "weights_precision": self.weights_precision,
            "device": self.device,
            "mode": self.mode,
            "streams": str(self.streams),
            "infer_requests": self.optimal_requests,
            "threads": self.threads,
            "model": str(self.model_path),
        }

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = check_crops(pixels, self.preprocess.input_size, self.name)
        return self._source.as_probabilities(self._infer(bgr_nchw(pixels)))

    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized input (the PyTorch model's convention) -> probabilities.

        Undoes the normalization (x * std + mean) and flips to BGR, because the IR takes raw BGR
        pixels with mean/scale inside; in float32 this round trip moves the result by ~1e-6.
        """
        raw_rgb = denormalize(x, self.preprocess)
        return self._source.as_probabilities(self._infer(bgr_nchw(raw_rgb, channels_first=True)))

    def infer_stream(self, jobs: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
        """``(tag, uint8 NHWC crops)`` -> ``(tag, probabilities)`` in input order, every stream kept fed.

        Each image is one asynchronous request on an ``AsyncInferQueue`` of OpenVINO's optimal number of
        requests (as ``benchmark_app`` runs): ``start_async`` returns as soon as a request is free, so the next
        batch is taken from the decode-ahead pipeline while the streams still run the last one, and a batch is
        yielded once all its rows are in. A static batch size (``batch_size``) runs one call per batch instead.
        """
        if self.static_batch is not None:
            for tag, pixels in jobs:
                yield tag, self(pixels) if len(pixels) else np.empty((0, 0), np.float32)
            return
        queue_ = self._ov.AsyncInferQueue(self.compiled, self.optimal_requests)
        classes = int(self.compiled.output(0).get_partial_shape()[-1].get_length())
        lock = threading.Lock()
        errors: list[str] = []

        def finished(request: Any, userdata: tuple[_Job, int]) -> None:
            job, row = userdata
            try:
                job.probs[row] = request.get_output_tensor(0).data[0]
            except Exception as e:  # noqa: BLE001 - reported to the consumer, never lost in OpenVINO's thread
                errors.append(f"{type(e).__name__}: {e}")
            with lock:
                job.remaining -= 1
                if job.remaining == 0:
                    job.done.set()

        queue_.set_callback(finished)
        pending: deque[_Job] = deque()
        try:
            for tag, pixels in jobs:
                job = _Job(tag, len(pixels), classes)
                pending.append(job)
                if len(pixels):
                    x = bgr_nchw(check_crops(pixels, self.preprocess.input_size, self.name))
                    for row in range(len(x)):
                        try:
                            queue_.start_async({0: x[row : row + 1]}, (job, row))  # waits for a free request
                        except RuntimeError as e:
                            shape = list(x.shape)
                            raise EffnetError(f"openvino backend: inference on input {shape} failed: {e}") from None
                while pending and pending[0].done.is_set():
                    yield from self._finished(pending.popleft(), errors)
            queue_.wait_all()
            while pending:
                yield from self._finished(pending.popleft(), errors)
        finally:
            queue_.wait_all()  # closed early or failed: no request may still write into a job

    def _finished(self, job: _Job, errors: list[str]) -> Iterator[tuple[Any, np.ndarray]]:
        if errors:
            raise EffnetError(f"openvino backend: inference failed: {errors[0]}")
        yield job.tag, self._source.as_probabilities(job.probs)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        # With several streams (the THROUGHPUT configuration), one call's batch is split over the infer
        # requests that are free, started together and awaited from this thread: the streams run in
        # OpenVINO's own threads. (Splitting from several Python threads, each in a blocking infer(),
        # deadlocked inside Ray actors: both threads stuck in pyopenvino's input copy.)
        requests = [self._requests.get()]
        if self.static_batch is None:
            while len(requests) < min(len(x), self._request_count):
                try:
                    requests.append(self._requests.get_nowait())
                except queue.Empty:  # the others are busy with concurrent calls
                    break
        try:
            if len(requests) == 1:
                requests[0].infer({0: x})
                return np.array(requests[0].get_output_tensor(0).data, dtype=np.float32, copy=True)
            parts = np.array_split(x, len(requests))
            for request, part in zip(requests, parts, strict=True):
                request.start_async({0: np.ascontiguousarray(part)})
            for request in requests:
                request.wait()
            return np.concatenate(
                [np.array(r.get_output_tensor(0).data, dtype=np.float32, copy=True) for r in requests]
            )
        except RuntimeError as e:
            raise EffnetError(f"openvino backend: inference on input {list(x.shape)} failed: {e}") from None
        finally:
            for request in requests:
                self._requests.put(request)
