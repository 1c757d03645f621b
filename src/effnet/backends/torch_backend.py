"""PyTorch backend: fp32 eager is the reference every other backend is compared with.

Options select faster paths, each verified against fp32 eager in tests/perf:

- ``fast=True``: batch norm folded into the convs and channels_last weights (:mod:`effnet.optimize`);
- ``compile=True``: ``torch.compile`` (inductor, freezing) on top of ``fast`` (on the CPU the first call
  compiles; on CUDA, or with ``prepared_sizes``, compilation happens at load, for the prepared sizes);
- ``precision="bf16"``: bfloat16 stem and blocks (fp32 head) on the ``fast`` path, on CPUs with native
  bf16 and on CUDA GPUs that have it (compute capability >= 8.0; older GPUs run fp16 and say so once);
  ``precision="fp16"``: the same in float16, CUDA only;
- ``device``: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto`` (:mod:`effnet.device`);
- ``cuda_graphs=True`` (CUDA): the model captured as CUDA graphs at load for ``batch_size`` and the
  powers of two below it (compiled: 1 and ``batch_size``); with ``compile`` it is
  ``torch.compile(mode="reduce-overhead")``.

On CUDA one :class:`~effnet.backends.staging.FixedShapeRunner` is the only way into the model: crops,
crops decoded on the GPU, the KServe v2 normalized tensors and :meth:`TorchBackend.logits` are all
padded to a prepared batch size and run by it, on its owner thread (which prepared it), on its own
stream, under its device; so nothing compiles or records after load and concurrent callers never share
a buffer. ``prepared_sizes`` gives the CPU the same runner (its padding and threading are what the CPU
tests check). uint8 crops go to the GPU from a reused pinned buffer and are normalized there (a quarter
of the bytes of float32). ``setup_s`` / ``compile_s`` report what loading cost. The default (CPU,
fp32, no options) is the plain eager model, unchanged.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from ..device import describe_device, resolve_device
from ..errors import EffnetError
from ..optimize import InferenceConfig, optimize_for_inference
from ..pipeline import check_crops
from ..preprocess import normalize_tensor
from ..source import ModelSource
from .staging import FixedShapeRunner, OwnerThread, graph_sizes

R = TypeVar("R")

PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_CUDA_BATCH = 32  # the largest size prepared on CUDA when neither batch_size nor prepared_sizes is given
_NOTED: set[str] = set()  # stderr notes already given in this process


def cuda_precision(precision: str, capability: tuple[int, int]) -> tuple[str, str | None]:
    """The precision a GPU of compute ``capability`` runs for ``precision``, and a note when it differs.

    bf16 tensor cores came with Ampere (8.0); before it bf16 is emulated or missing, so fp16 runs.

    >>> cuda_precision("bf16", (7, 5))[0], cuda_precision("bf16", (8, 0))[0], cuda_precision("fp32", (6, 0))[0]
    ('fp16', 'bf16', 'fp32')
    """
    if precision == "bf16" and tuple(capability) < (8, 0):
        major, minor = capability
        return "fp16", (
            f"bf16 needs a GPU of compute capability 8.0 (Ampere) or newer; this one is {major}.{minor}: running fp16"
        )
    return precision, None


def _note_once(text: str) -> None:
    if text not in _NOTED:
        _NOTED.add(text)
        print(f"effnet: {text}", file=sys.stderr)


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        source: ModelSource,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        fast: bool = False,
        compile: bool = False,
        channels_last: bool | None = None,
        cuda_graphs: bool = False,
        batch_size: int | None = None,
        compile_mode: str | None = None,
        prepared_sizes: Sequence[int] | None = None,
    ) -> None:
        start = time.perf_counter()
        if precision not in PRECISIONS:
            raise EffnetError(
                f"the torch backend runs {', '.join(PRECISIONS)}, got precision {precision!r} "
                "(int8 runs on the openvino backend after `effnet quantize`)"
            )
        if threads is not None:
            if threads < 1:
                raise EffnetError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        if batch_size is not None and batch_size < 1:
            raise EffnetError(f"batch size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        if precision == "fp16" and not cuda:
            raise EffnetError("fp16 runs on CUDA only (CPUs have no fast fp16 convolutions): use bf16 or fp32")
        if cuda_graphs and not cuda:
            raise EffnetError(f"CUDA graphs need --device cuda, got device {self.device}")
        if cuda:
            precision, note = cuda_precision(precision, torch.cuda.get_device_capability(self.device))
            if note:
                _note_once(note)
        self.precision = precision
        self.preprocess = source.preprocess
        model = source.build_model().to(self.device)
        # bf16/fp16, compile and graphs always start from the folded, channels_last model: their fast layout.
        fold = fast or compile or precision != "fp32" or cuda_graphs
        cl = fold if channels_last is None else channels_last
        if compile and cuda_graphs and compile_mode is None:
            compile_mode = "reduce-overhead"  # inductor's own CUDA graphs (cudagraph trees)
        self.inference_config = InferenceConfig(
            precision=precision,  # type: ignore[arg-type]
            fold_bn=fold,
            channels_last=cl,
            compile=compile,
            compile_mode=compile_mode,
        )
        self.model: Any = optimize_for_inference(model, self.inference_config) if fold or cl else model
        self._channels_last = cl
        self._memory_format = torch.channels_last if cl else torch.contiguous_format
        p = source.preprocess
        self._pinned: dict[torch.dtype, torch.Tensor] = {}  # staging buffers, used on the owner thread only
        # Fixed shapes, prepared at load: always on CUDA (eager too: cuDNN picks its algorithms per shape at
        # load, not in a request), and on the CPU when asked (prepared_sizes). A compiled CPU model without
        # prepared_sizes stays lazy (compiles on its first call), as it always was.
        self.batch_sizes: tuple[int, ...] | None = None
        self._runner: FixedShapeRunner | None = None
        self.compile_s: float | None = None
        self.prepare_s: float | None = None
        if cuda or prepared_sizes:
            # prepared_sizes overrides the default set (a benchmark prepares only the size it measures).
            # Graphs and eager: the powers of two (a capture takes a few forward passes). Compiling: only 1
            # and the batch size, since each size is a compile of its own (tens of seconds for B5), and
            # dynamo stops recompiling after torch._dynamo.config.recompile_limit (8) shapes.
            # Without a batch size (a Python caller that gave none), CUDA prepares up to DEFAULT_CUDA_BATCH:
            # larger batches run as chunks of it rather than as one call per image.
            batch = batch_size or (DEFAULT_CUDA_BATCH if cuda else 1)
            if prepared_sizes:
                self.batch_sizes = tuple(sorted(set(prepared_sizes)))
            elif compile:
                self.batch_sizes = tuple(sorted({1, batch}))
            else:
                self.batch_sizes = graph_sizes(batch)
            marker = None
            if compile and compile_mode == "reduce-overhead":
                marker = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
            graphs = cuda_graphs and not compile
            self._runner = FixedShapeRunner(
                self._forward,
                sizes=self.batch_sizes,
                row_shape=(3, p.input_size, p.input_size),
                dtype=torch.float32,
                device=self.device,
                graphs=graphs,
                # reduce-overhead records its graphs on the third call of a shape; eager needs one call
                warmup=3 if graphs or compile else 1,
                step_marker=marker,
                memory_format=self._memory_format,
                owner=OwnerThread(f"effnet-{self.device.type}-runner"),
            )
            self.prepare_s = self._runner.setup_s
            if graphs or compile:
                self.compile_s = self._runner.setup_s
        self.setup_s = time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        """What runs, for benchmark reports."""
        c = self.inference_config
        return {
            "precision": self.precision,
            "bn_folded": c.fold_bn,
            "channels_last": c.channels_last,
            "compiled": c.compile,
            "compile_mode": c.compile_mode,
            "cuda_graphs": bool(self._runner is not None and self._runner.graphs),
            "prepared_batch_sizes": list(self.batch_sizes) if self.batch_sizes else None,
            "threads": torch.get_num_threads(),
            "path": c.describe(),
            "setup_s": self.setup_s,
            "compile_s": self.compile_s,
            "prepare_s": self.prepare_s,
            **describe_device(self.device),
        }

    # -- on the owner thread -------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized float32 NCHW on the device -> float32 logits (what the runner prepares and captures)."""
        return self.model(x).float()  # a bf16/fp16 model casts inside (head in fp32)

    def _owned(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` where the model lives: the runner's owner thread, or here when there is no runner."""
        if self._runner is None:
            return fn(*args)
        return self._runner.owner.run(fn, *args)

    def _on_device(self) -> contextlib.AbstractContextManager[Any]:
        return self._runner.on_device() if self._runner is not None else torch.inference_mode()

    def _logits_on_device(self, x: torch.Tensor) -> torch.Tensor:
        if self._runner is not None:
            return self._runner(x)  # on the owner thread already: runs here
        return self._forward(x)

    def _upload(self, data: np.ndarray | torch.Tensor, ready: Any = None) -> torch.Tensor:
        """``data`` on the device. numpy goes through a reused pinned buffer (CUDA), safe to refill next
        call because every call ends with a synchronizing copy back. A CUDA tensor made on another stream
        is used after its ``ready`` event, and kept from the allocator until this stream is done with it."""
        if isinstance(data, torch.Tensor):
            if ready is not None:
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(ready)
                if data.device == self.device:
                    data.record_stream(stream)
            return data.to(self.device, non_blocking=True)
        host = torch.from_numpy(np.ascontiguousarray(data))
        if self.device.type != "cuda":
            return host
        buf = self._pinned.get(host.dtype)
        if buf is None or buf.numel() < host.numel():
            buf = self._pinned[host.dtype] = torch.empty(host.numel(), dtype=host.dtype, pin_memory=True)
        staged = buf[: host.numel()].view(host.shape)
        staged.copy_(host)
        return staged.to(self.device, non_blocking=True)

    def _pixel_logits(self, pixels: np.ndarray | torch.Tensor, ready: Any) -> torch.Tensor:
        x = normalize_tensor(self._upload(pixels, ready), self.preprocess, channels_last=self._channels_last)
        return self._logits_on_device(x)

    def _probabilities(self, pixels: np.ndarray | torch.Tensor, ready: Any) -> np.ndarray:
        with self._on_device():
            return torch.softmax(self._pixel_logits(pixels, ready), dim=1).cpu().numpy()

    def _logits(self, pixels: np.ndarray | torch.Tensor, ready: Any) -> torch.Tensor:
        with self._on_device():
            return self._pixel_logits(pixels, ready).cpu()

    def _tensor_probabilities(self, x: np.ndarray) -> np.ndarray:
        with self._on_device():
            t = self._upload(x).contiguous(memory_format=self._memory_format)
            return torch.softmax(self._logits_on_device(t), dim=1).cpu().numpy()

    # -- the public calls: from any thread -----------------------------------------------------------

    def _checked(self, pixels: np.ndarray | torch.Tensor) -> tuple[np.ndarray | torch.Tensor, Any]:
        """``pixels`` checked as crops, and for a CUDA tensor an event marking it ready on the caller's stream."""
        size = self.preprocess.input_size
        if not isinstance(pixels, torch.Tensor):
            return check_crops(pixels, size, self.name), None
        check_crops(np.broadcast_to(np.uint8(0), tuple(pixels.shape)), size, self.name)  # the shape, no copy
        if not pixels.is_cuda:
            return pixels, None
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(pixels.device))
        return pixels, ready

    def __call__(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB crops (numpy, or a tensor on any device) -> float32 probabilities (numpy)."""
        return self._owned(self._probabilities, *self._checked(pixels))

    def logits(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] RGB crops -> float32 logits, on the host."""
        return self._owned(self._logits, *self._checked(pixels))

    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized input (the model's own convention) -> probabilities, through the same
        prepared shapes as crops (the KServe v2 tensor route)."""
        x = np.asarray(x, dtype=np.float32)
        size = self.preprocess.input_size
        if x.ndim != 4 or x.shape[1:] != (3, size, size) or not len(x):
            raise EffnetError(
                f"{self.name} backend: expected a normalized float tensor of shape [N, 3, {size}, {size}] "
                f"(NCHW, N >= 1), got {list(x.shape)}"
            )
        return self._owned(self._tensor_probabilities, x)
