"""What an explanation costs, and how it is kept within bounds: passes x measured time per pass, chunks sized
by a memory budget and a time budget, and a stop check inside every forward pass.

- **Passes** per method (:func:`passes`): gradcam 1 forward+backward, integrated gradients ``IG_STEPS``
  forward+backward, occlusion one forward per patch position plus one (Captum's baseline), and the one
  forward that ranks the classes first.
- **Time per pass** is measured on this machine (:meth:`PassCost.measure`: the median of ``REPEATS`` forwards
  and ``REPEATS`` forward+backwards of one image at the model's input size, taken the first time a model
  explains, so one slow moment does not set it) and updated from every finished explanation, so the estimate
  follows the load. An estimate older than ``REMEASURE_S`` that would refuse a request is measured again first
  (at most once per ``REMEASURE_S``): a refusal made during a load spike is not permanent.
- **Chunks** (:func:`internal_batch`): the images Captum puts through the model at once. Gradients keep every
  activation of the chunk alive, so a chunk's memory is its image count times the activation bytes of one
  image, measured in the same first pass and counted twice for the gradients (B5 at 456 px: 2.4 GB per image
  by this count, the safe side of the 10.7 GiB that issue 29 measured for a chunk of 8). The chunk is the
  largest that fits the memory budget (``DEFAULT_MEMORY_MB``) *and* takes at most ``DEFAULT_CHUNK_S``
  seconds, at least one image.
- **Stopping**: :func:`stop_hooks` puts a check on every module of the model; when ``should_stop()`` turns
  true (the client hung up, the timeout passed), the next module's forward raises :class:`ExplainStopped`. A
  backward pass cannot be interrupted, but it belongs to one chunk, which the time budget keeps short.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import EffnetError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_CHUNK_S",
    "DEFAULT_MEMORY_MB",
    "IG_STEPS",
    "ExplainStopped",
    "PassCost",
    "REMEASURE_S",
    "REPEATS",
    "internal_batch",
    "occlusion_geometry",
    "passes",
    "stop_hooks",
]

IG_STEPS = 32  # Captum's default is 50; 32 keeps the completeness error small for these models (checked: < 5 %)
DEFAULT_MEMORY_MB = 2048.0  # activations of one chunk with gradients
DEFAULT_CHUNK_S = 2.0  # one chunk's forward+backward: how long a stop request may wait inside a backward pass
REPEATS = 3  # timings per kind of pass; their median is the cost (one timing may fall in a load spike)
REMEASURE_S = 30.0  # an estimate older than this is measured again before it refuses a request
_OVERHEAD_S = 0.5  # decode, resize, drawing the overlay and the heatmap (measured ~0.3 s on 2 busy cores)


class ExplainStopped(EffnetError):
    """The explanation was stopped before it finished (its client went away, or its time ran out)."""


def occlusion_geometry(size: int) -> tuple[int, int]:
    """(window, stride) of the occlusion patch for a square crop of ``size`` pixels."""
    window = max(8, size // 7)
    return window, max(4, window // 2)


def passes(method: str, size: int) -> tuple[int, int]:
    """(forward-only passes, forward+backward passes) of one image for ``method`` at crop ``size``."""
    if method == "gradcam":
        return 1, 1
    if method == "integrated-gradients":
        return 1, IG_STEPS
    if method == "occlusion":
        window, stride = occlusion_geometry(size)
        per_side = (size - window) // stride + 1
        return 2 + per_side * per_side, 0
    raise EffnetError(f"unknown explanation method {method!r}")


@dataclass
class PassCost:
    """Measured seconds of one forward and one forward+backward pass of one image, and its activation bytes."""

    forward_s: float
    backward_s: float  # forward + backward, one image
    activation_bytes: int  # what one image's forward keeps alive for the backward pass
    measured_at: float = field(default_factory=time.monotonic)  # when these times were last taken or corrected

    @classmethod
    def measure(
        cls,
        model: torch.nn.Module,
        x: torch.Tensor,
        repeats: int = REPEATS,
        should_stop: Callable[[], bool] | None = None,
    ) -> PassCost:
        """Time ``repeats`` forwards (no gradients) and ``repeats`` forward+backwards of ``x`` [1, 3, H, W] after
        one untimed warm-up forward and take the median of each; sum the bytes of every leaf module's output on
        the way (what autograd keeps for the backward pass). ``should_stop()`` ends it at the next module
        (:class:`ExplainStopped`), like an explanation."""
        import torch

        total = [0]

        def count(module: torch.nn.Module, args: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                total[0] += out.numel() * out.element_size()

        forwards: list[float] = []
        backwards: list[float] = []
        with stop_hooks(model, should_stop):
            with torch.no_grad():
                model(x)  # untimed: the first pass allocates and initializes kernels (several times slower)
            leaves = [m for m in model.modules() if not any(True for _ in m.children())]
            for i in range(max(1, repeats)):
                handles = [m.register_forward_hook(count) for m in leaves] if i == 0 else []
                try:
                    started = time.perf_counter()
                    with torch.no_grad():
                        model(x)
                    forwards.append(time.perf_counter() - started)
                finally:
                    for h in handles:
                        h.remove()
                started = time.perf_counter()
                with torch.enable_grad():
                    xg = x.detach().clone().requires_grad_(True)
                    model(xg)[0].max().backward()
                backwards.append(time.perf_counter() - started)
        forward_s, backward_s = statistics.median(forwards), statistics.median(backwards)
        # Each saved output has a gradient of the same size during the backward pass: count it twice.
        return cls(forward_s, max(backward_s, forward_s), 2 * total[0])

    def age_s(self) -> float:
        """Seconds since these times were measured or last corrected by a finished explanation."""
        return time.monotonic() - self.measured_at

    def estimate_s(self, method: str, size: int) -> float:
        """Seconds one explanation of ``method`` takes at this rate (passes x time per pass, plus drawing)."""
        forward, backward = passes(method, size)
        return forward * self.forward_s + backward * self.backward_s + _OVERHEAD_S

    def observe(self, method: str, size: int, seconds: float) -> None:
        """Fold a finished explanation's time into the per-pass times (a moving average: the load changes)."""
        predicted = self.estimate_s(method, size) - _OVERHEAD_S
        if predicted <= 0 or seconds <= 0:
            return
        ratio = max(0.2, min(5.0, max(seconds - _OVERHEAD_S, 1e-3) / predicted))
        scale = 0.7 + 0.3 * ratio
        self.forward_s *= scale
        self.backward_s *= scale
        self.measured_at = time.monotonic()


def internal_batch(cost: PassCost, *, memory_mb: float, chunk_s: float, gradients: bool) -> int:
    """Images per chunk: within ``memory_mb`` of activations and ``chunk_s`` seconds, at least 1."""
    per_image_s = cost.backward_s if gradients else cost.forward_s
    by_time = math.floor(chunk_s / per_image_s) if per_image_s > 0 else 64
    by_memory = math.floor(memory_mb * 1e6 / cost.activation_bytes) if cost.activation_bytes > 0 else 64
    if not gradients:
        by_memory *= 4  # no gradients: a forward keeps only a few activations alive at a time
    return max(1, min(64, by_time, by_memory))


@contextlib.contextmanager
def stop_hooks(model: torch.nn.Module, should_stop: Callable[[], bool] | None) -> Iterator[None]:
    """Raise :class:`ExplainStopped` from the next module's forward once ``should_stop()`` is true."""
    if should_stop is None:
        yield
        return

    def check(module: object, args: object) -> None:
        if should_stop():
            raise ExplainStopped("explanation stopped: its client went away or its time ran out")

    handles = [m.register_forward_pre_hook(check) for m in model.modules()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
