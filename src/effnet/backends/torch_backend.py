"""PyTorch backend: fp32 eager is the reference every other backend is compared with.

Options select faster paths, each verified against fp32 eager in tests/perf:

- ``fast=True``: batch norm folded into the convs and channels_last weights (:mod:`effnet.optimize`);
- ``compile=True``: ``torch.compile`` (inductor, freezing) on top of ``fast`` (on the CPU the first call
  compiles; on CUDA compilation happens at load, for the prepared batch sizes);
- ``precision="bf16"``: bfloat16 stem and blocks (fp32 head) on the ``fast`` path, on CPUs with native
  bf16 and on CUDA; ``precision="fp16"``: the same in float16, CUDA only;
- ``device``: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto`` (:mod:`effnet.device`);
- ``cuda_graphs=True`` (CUDA): the model, normalization and softmax captured as CUDA graphs at load for
  ``batch_size`` and the powers of two below it (compiled: 1 and ``batch_size``); other batch sizes run as
  chunks of those, padded
  (:mod:`effnet.backends.staging`). With ``compile`` it is ``torch.compile(mode="reduce-overhead")``.

On CUDA the uint8 crops go to the GPU from pinned memory and are normalized there (a quarter of the
bytes of float32); :meth:`TorchBackend.iter_probabilities` overlaps the next batch's upload with this
one's compute. ``setup_s`` / ``compile_s`` report what loading cost. The default (CPU, fp32, no
options) is the plain eager model, unchanged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..device import describe_device, resolve_device
from ..errors import EffnetError
from ..optimize import InferenceConfig, optimize_for_inference
from ..pipeline import check_crops
from ..preprocess import normalize_tensor
from ..source import ModelSource
from .staging import FixedShapeRunner, Prefetcher, graph_sizes

PRECISIONS = ("fp32", "bf16", "fp16")


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
        p = source.preprocess
        self._pinned: torch.Tensor | None = None
        # Fixed shapes, prepared at load: CUDA graphs, or a compiled model's static shapes on CUDA.
        # On the CPU a compiled model stays lazy (compiles on its first call), as it always was.
        self.batch_sizes: tuple[int, ...] | None = None
        self._runner: FixedShapeRunner | None = None
        self.compile_s: float | None = None
        if cuda and (cuda_graphs or compile):
            # prepared_sizes overrides the default set (a benchmark prepares only the size it measures).
            # Graphs: the powers of two (a capture takes a few forward passes). Compiling: only 1 and the
            # batch size, since each size is a compile of its own (tens of seconds for B5), and dynamo
            # stops recompiling after torch._dynamo.config.recompile_limit (8) shapes.
            if prepared_sizes:
                self.batch_sizes = tuple(sorted(set(prepared_sizes)))
            elif compile:
                self.batch_sizes = tuple(sorted({1, batch_size or 1}))
            else:
                self.batch_sizes = graph_sizes(batch_size or 1)
            marker = None
            if compile and compile_mode == "reduce-overhead":
                marker = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
            self._runner = FixedShapeRunner(
                self._forward,
                sizes=self.batch_sizes,
                row_shape=(p.input_size, p.input_size, 3),
                dtype=torch.uint8,
                device=self.device,
                graphs=cuda_graphs and not compile,
                warmup=3,  # reduce-overhead records its graphs on the third call of a shape
                step_marker=marker,
            )
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
            **describe_device(self.device),
        }

    # -- device side ---------------------------------------------------------------------------------

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC on the device -> float32 probabilities on the device (what a CUDA graph captures)."""
        # (x - mean) / std on 0-255 pixels, as the record says, on the device (inside the CUDA graph).
        x = normalize_tensor(pixels, self.preprocess, channels_last=self._channels_last)
        return torch.softmax(self.model(x).float(), dim=1)  # a bf16/fp16 model casts inside (head in fp32)

    def normalize(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 NHWC crops -> normalized float NCHW on the device (a bf16/fp16 model casts inside)."""
        return normalize_tensor(self.upload(pixels), self.preprocess, channels_last=self._channels_last)

    def upload(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC crops on the device; from numpy via a reused pinned buffer when the device is CUDA."""
        size = self.preprocess.input_size
        if isinstance(pixels, torch.Tensor):  # e.g. crops decoded on the GPU: the shape check without a copy
            check_crops(np.broadcast_to(np.uint8(0), tuple(pixels.shape)), size, self.name)
            return pixels.to(self.device)
        host = torch.from_numpy(np.ascontiguousarray(check_crops(pixels, size, self.name)))
        if self.device.type != "cuda":
            return host
        if self._pinned is None or self._pinned.numel() < host.numel():
            self._pinned = torch.empty(host.numel(), dtype=host.dtype, pin_memory=True)
        staged = self._pinned[: host.numel()].view(host.shape)
        staged.copy_(host)
        # Safe to reuse the buffer next call: every call ends with a synchronizing copy back to the host.
        return staged.to(self.device, non_blocking=True)

    def _probabilities_on_device(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._runner is not None:
            return self._runner(pixels)
        return self._forward(pixels)

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray) -> torch.Tensor:
        return self.model(self.normalize(pixels))

    def __call__(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB crops (numpy, or a tensor on any device) -> float32 probabilities (numpy)."""
        with torch.inference_mode():
            return self._probabilities_on_device(self.upload(pixels)).cpu().numpy()

    def iter_probabilities(self, batches: Iterable[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
        """Probabilities for each uint8 NHWC batch of ``batches``, in order, with uploads ``depth`` ahead.

        On CUDA batch i+1 is copied to the GPU (pinned memory, side stream) while batch i computes, and
        batch i's probabilities come back while batch i+1 runs. On the CPU the same loop runs without
        copies or streams, and each result is what ``self(batch)`` returns.
        """
        cuda = self.device.type == "cuda"
        pending: deque[tuple[torch.Tensor, Any]] = deque()
        with torch.inference_mode():
            for x in Prefetcher(batches, self.device, depth=depth):
                probs = self._probabilities_on_device(x)
                done = None
                if cuda:
                    host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
                    host.copy_(probs, non_blocking=True)
                    done = torch.cuda.Event()
                    done.record()
                    probs = host
                pending.append((probs, done))
                while len(pending) > (1 if cuda else 0):
                    out, event = pending.popleft()
                    if event is not None:
                        event.synchronize()
                    yield out.numpy()
            while pending:
                out, event = pending.popleft()
                if event is not None:
                    event.synchronize()
                yield out.numpy()

    @torch.inference_mode()
    def infer_normalized(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized input (the model's own convention) -> probabilities."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        if self._channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return torch.softmax(self.model(t).float(), dim=1).cpu().numpy()
