"""Where the model looked: attribution maps (Captum) over the model's input crop, drawn as overlays.

Explanations always come from the **fp32 PyTorch model of the same weights** (``ModelSource.build_model``),
whatever backend classifies: gradients need the torch graph, and an int8 or bf16 engine would explain a
different function. The crop is the one every backend sees (:func:`effnet.pipeline.decode_crop`, the
weights record's preprocessing), so the map lies on exactly the pixels that were classified.

Methods (Captum, the PyTorch project's interpretability library, rather than hand-written hooks):

- ``gradcam``: Grad-CAM (Selvaraju et al., 2017) on the last feature map (``model.head``: 15x15 for B5,
  7x7 for Lite0), ReLU'd and upsampled bilinearly to the crop. One forward and one backward pass.
- ``integrated-gradients``: Sundararajan et al., 2017, from a black image (``normalize`` of zeros), summed
  over colour channels, positive part, box-filtered (1/28 of the crop) so that regions read as regions.
  ``IG_STEPS`` forward/backward passes.
- ``occlusion``: Zeiler & Fergus, 2014: the drop in the target's logit when a square patch (1/7 of the crop,
  stride half of it) is replaced by the mean colour; no gradients at all. About 150-200 forward passes.

The summary of a map (``Explanation.summary``): its peak (crop pixels), and the share of the positive
attribution inside the crop's centre (the middle half in each direction, a quarter of the area: a map
spread evenly gives 0.25).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._optional import require
from .errors import EffnetError, ImageError
from .explanation import Explanation
from .factory import Pretrained
from .labels import ClassLabel, Prediction, top_k
from .pipeline import image_name
from .preprocess import MAX_IMAGE_PIXELS, ImageSource, crop_box, load_image, normalize, resize_crop
from .saliency_budget import (
    DEFAULT_CHUNK_S,
    DEFAULT_MEMORY_MB,
    IG_STEPS,
    PassCost,
    internal_batch,
    occlusion_geometry,
    stop_hooks,
)
from .source import ModelSource, resolve_source, weights_label

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["METHODS", "Explanation", "Explainer", "explain", "resolve_target"]

METHODS = ("gradcam", "integrated-gradients", "occlusion")
TOP1 = "top1"


def resolve_target(target: str | int, labels: Sequence[ClassLabel]) -> int | None:
    """``"top1"`` -> None (the model's own top-1), else a class index from an index, a synset or a label.

    A label matches the whole label or one of its comma-separated names, case-insensitively.
    """
    if isinstance(target, int) and not isinstance(target, bool):
        index = target
    elif isinstance(target, str) and target.strip().lower() == TOP1:
        return None
    elif isinstance(target, str) and target.strip().isdigit():
        index = int(target.strip())
    elif isinstance(target, str):
        wanted = target.strip().lower()
        for c in labels:
            names = [c.label.lower(), *(n.strip().lower() for n in c.label.split(","))]
            if wanted == c.synset.lower() or wanted in names:
                return c.index
        raise EffnetError(
            f"unknown target class {target!r}: give 'top1', a class index (0-{len(labels) - 1}), a synset or a "
            f"label of this model (e.g. {labels[0].label!r})"
        )
    else:
        raise EffnetError(f"target must be 'top1', a class index or a class name, got {target!r}")
    if not 0 <= index < len(labels):
        raise EffnetError(f"target class index {index} is out of range: this model has {len(labels)} classes")
    return index


class Explainer:
    """Attribution maps from the fp32 torch model of ``source``'s weights (built once, in eval mode).

    Chunks of integrated gradients and occlusion fit ``memory_mb`` of activations and ``chunk_s`` seconds
    (:mod:`effnet.saliency_budget`); :meth:`estimate_s` says what a method costs here before it runs."""

    def __init__(
        self,
        source: ModelSource,
        *,
        device: str = "cpu",
        memory_mb: float = DEFAULT_MEMORY_MB,
        chunk_s: float = DEFAULT_CHUNK_S,
    ) -> None:
        self.captum_attr = require("captum.attr", "explain", "effnet explain")
        import torch

        self.source = source
        self.preprocess = source.preprocess
        self.labels = source.labels
        self.device = torch.device(device)
        self.model = source.build_model().to(self.device, torch.float32).eval()
        for p in self.model.parameters():  # attributions need input gradients only
            p.requires_grad_(False)
        self.memory_mb, self.chunk_s = memory_mb, chunk_s
        self._cost: PassCost | None = None

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @property
    def cost(self) -> PassCost:
        """Per-pass time and memory of this model on this machine, measured on first use."""
        return self.measure_cost()

    def measure_cost(self, should_stop: Callable[[], bool] | None = None, *, again: bool = False) -> PassCost:
        """The per-pass cost, measured now when not yet known (or ``again``); ``should_stop()`` ends the
        measurement at the next module (:class:`~effnet.saliency_budget.ExplainStopped`)."""
        if self._cost is None or again:
            size = self.input_size
            x = self._input(np.zeros((size, size, 3), np.uint8))
            self._cost = PassCost.measure(self.model, x, should_stop=should_stop)
        return self._cost

    @property
    def measured_cost(self) -> PassCost | None:
        """The per-pass cost if it has been measured already (None: the next :attr:`cost` measures it)."""
        return self._cost

    def estimate_s(self, method: str) -> float:
        """Seconds one explanation with ``method`` is expected to take here (passes x measured time per pass)."""
        return self.cost.estimate_s(method, self.input_size)

    def chunk(self, method: str) -> int:
        """Images per forward(+backward) chunk of ``method``: within the memory and time budgets."""
        gradients = method != "occlusion"
        return internal_batch(self.cost, memory_mb=self.memory_mb, chunk_s=self.chunk_s, gradients=gradients)

    def _input(self, crop: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(normalize(crop, self.preprocess)[None]).to(self.device)

    def attribute(self, x: torch.Tensor, method: str, target: int) -> np.ndarray:
        """float32 HxW positive attribution of class ``target`` over the normalized input ``x`` [1, 3, H, W]."""
        import torch

        attr = self.captum_attr
        size = x.shape[-1]
        if method == "gradcam":
            cam = attr.LayerGradCam(self.model, self.model.head).attribute(x, target=target, relu_attributions=True)
            out = attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0]
        elif method == "integrated-gradients":
            black = torch.from_numpy(normalize(np.zeros((size, size, 3), np.uint8), self.preprocess)[None])
            ig = attr.IntegratedGradients(self.model)
            chunk = self.chunk(method)
            out = ig.attribute(
                x, baselines=black.to(x.device), target=target, n_steps=IG_STEPS, internal_batch_size=chunk
            )[0].sum(0)
            # per-pixel IG is speckle; a small box filter (1/28 of the crop) makes regions readable
            r = max(1, size // 56)
            smooth = torch.nn.functional.avg_pool2d(out.clamp(min=0)[None, None], 2 * r + 1, stride=1, padding=r)
            out = smooth[0, 0]
        elif method == "occlusion":
            window, stride = occlusion_geometry(size)
            # baseline 0 in normalized units = the record's mean colour: a patch of "nothing in particular"
            out = (
                attr.Occlusion(self.model)
                .attribute(
                    x,
                    sliding_window_shapes=(3, window, window),
                    strides=(3, stride, stride),
                    target=target,
                    baselines=0.0,
                    perturbations_per_eval=self.chunk(method),
                )[0]
                .sum(0)
            )
        else:
            raise EffnetError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        return np.clip(out.detach().float().cpu().numpy(), 0.0, None).astype(np.float32)

    def explain_crop(
        self,
        crop: np.ndarray,
        *,
        name: str = "<image>",
        method: str = "gradcam",
        target: str | int = TOP1,
        k: int = 5,
        should_stop: Callable[[], bool] | None = None,
    ) -> Explanation:
        """The explanation of one uint8 HWC crop at the model's input size. When ``should_stop()`` turns true,
        the next module's forward raises :class:`~effnet.saliency_budget.ExplainStopped`."""
        import time

        import torch

        if method not in METHODS:
            raise EffnetError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        wanted = resolve_target(target, self.labels)
        x = self._input(crop)
        cost, started = self.cost, time.perf_counter()
        with stop_hooks(self.model, should_stop):
            with torch.no_grad():
                probs = torch.softmax(self.model(x).float(), dim=1)[0].cpu().numpy()
            predictions = top_k(probs, self.labels, min(k, len(self.labels)))
            index = predictions[0].class_index if wanted is None else wanted
            c = self.labels[index]
            chosen = Prediction(index, c.synset, c.label, float(probs[index]))
            with torch.enable_grad():
                heat = self.attribute(x, method, index)
        cost.observe(method, self.input_size, time.perf_counter() - started)
        return Explanation(name, method, chosen, predictions, crop, heat)

    def explain(
        self,
        images: Iterable[ImageSource],
        *,
        method: str = "gradcam",
        target: str | int = TOP1,
        k: int = 5,
        should_stop: Callable[[], bool] | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> list[Explanation]:
        """One :class:`Explanation` per image, in order; an unreadable image (or one above ``max_pixels``,
        checked from its header) carries its error."""
        if method not in METHODS:
            raise EffnetError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        resolve_target(target, self.labels)  # a bad target fails once, before any image
        out = []
        for image in images:
            name = image_name(image)
            try:
                decoded = load_image(image, max_pixels)
                crop = np.array(resize_crop(decoded, self.preprocess))  # = pipeline.decode_crop, keeping the size
            except (ImageError, OSError) as e:
                out.append(Explanation(name, error=str(e) or type(e).__name__))
                continue
            result = self.explain_crop(crop, name=name, method=method, target=target, k=k, should_stop=should_stop)
            result.crop_box = crop_box(*decoded.size, self.preprocess)
            out.append(result)
        return out

    @property
    def weights(self) -> str:
        return weights_label(self.source)


def explain(
    images: Sequence[ImageSource] | ImageSource,
    model: str = "efficientnet-b5",
    weights: Pretrained | None = None,
    *,
    method: str = "gradcam",
    target: str | int = TOP1,
    download: bool = True,
    progress: bool = True,
) -> list[Explanation]:
    """Explain images with the fp32 torch model of ``model``/``weights`` (as :class:`effnet.Classifier`
    resolves them: a record, a checkpoint file, a fine-tuned ``RUN/model.safetensors`` with its own labels).

    >>> e = effnet.explain("examples/chelsea.png", "efficientnet-lite0")[0]
    >>> e.save("chelsea_gradcam.png"); e.summary()["centre_share"]
    """
    if isinstance(images, (str, os.PathLike, bytes)) or not isinstance(images, Sequence):
        images = [images]
    source = resolve_source(model, weights, download=download, progress=progress)
    return Explainer(source).explain(images, method=method, target=target)  # type: ignore[arg-type]
