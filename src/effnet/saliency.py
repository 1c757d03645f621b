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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._optional import require
from .errors import EffnetError, ImageError
from .factory import Pretrained
from .labels import ClassLabel, Prediction, top_k
from .pipeline import image_name
from .preprocess import ImageSource, crop_box, load_image, normalize, resize_crop
from .source import ModelSource, resolve_source, weights_label

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["METHODS", "Explanation", "Explainer", "explain", "resolve_target"]

METHODS = ("gradcam", "integrated-gradients", "occlusion")
IG_STEPS = 32  # Captum's default is 50; 32 keeps the completeness error small for these models (checked: < 5 %)
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


@dataclass
class Explanation:
    """The map for one image, or the error that stopped it (``ok`` is False, every other field empty)."""

    path: str
    method: str = ""
    target: Prediction | None = None  # the class the map explains, with its probability
    predictions: list[Prediction] = field(default_factory=list)  # top-k of the fp32 torch model
    crop: np.ndarray | None = None  # uint8 HWC RGB: the model's input crop
    attribution: np.ndarray | None = None  # float32 HxW at the crop's size, >= 0
    error: str | None = None
    crop_box: tuple[float, float, float, float] | None = None  # (left, top, width, height) in the original image

    @property
    def ok(self) -> bool:
        return self.error is None

    def _map(self) -> np.ndarray:
        if self.attribution is None:
            raise EffnetError(f"{self.path}: no explanation ({self.error})")
        return self.attribution

    def explained(self) -> Prediction:
        """The class the map explains (set together with the map)."""
        if self.target is None:
            raise EffnetError(f"{self.path}: no explanation ({self.error})")
        return self.target

    def peak(self) -> tuple[int, int]:
        """(x, y) of the largest attribution, in crop pixels (the first one on ties)."""
        a = self._map()
        y, x = np.unravel_index(int(np.argmax(a)), a.shape)
        return int(x), int(y)

    def region_share(self, top: int, bottom: int, left: int, right: int) -> float:
        """Share of the positive attribution inside rows ``top:bottom``, columns ``left:right`` (0-1)."""
        a = self._map()
        total = float(a.sum())
        return float(a[top:bottom, left:right].sum()) / total if total > 0 else 0.0

    def centre_share(self) -> float:
        """Share of the positive attribution in the middle half of the crop in each direction."""
        h, w = self._map().shape
        return self.region_share(h // 4, h - h // 4, w // 4, w - w // 4)

    def quadrant_shares(self) -> dict[str, float]:
        """Share of the positive attribution in each quadrant of the crop."""
        h, w = self._map().shape
        my, mx = h // 2, w // 2
        return {
            "top_left": self.region_share(0, my, 0, mx),
            "top_right": self.region_share(0, my, mx, w),
            "bottom_left": self.region_share(my, h, 0, mx),
            "bottom_right": self.region_share(my, h, mx, w),
        }

    def summary(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        h, w = self._map().shape
        x, y = self.peak()
        target = self.explained()
        return {
            "path": self.path,
            "method": self.method,
            "target": target.to_dict(),
            "predictions": [p.to_dict() for p in self.predictions],
            "peak": {"x": x, "y": y, "x_fraction": round(x / w, 4), "y_fraction": round(y / h, 4)},
            "centre_share": round(self.centre_share(), 4),
            "quadrant_shares": {k: round(v, 4) for k, v in self.quadrant_shares().items()},
            "crop_size": [w, h],
            "crop_box": None if self.crop_box is None else [round(v, 2) for v in self.crop_box],
        }

    def heatmap_png(self) -> bytes:
        """The map alone as an RGBA PNG at the crop's size (jet colours, transparent where the map is weak):
        what a page lays over the photo at :attr:`crop_box`."""
        import io

        from PIL import Image

        from .figures import pyplot

        pyplot("drawing an explanation", extra="explain")
        from matplotlib import colormaps

        a = self._map()
        heat = a / a.max() if a.max() > 0 else a
        rgba = colormaps["jet"](heat)
        rgba[..., 3] = 0.6 * np.sqrt(heat)
        buf = io.BytesIO()
        Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(buf, format="PNG")
        return buf.getvalue()

    def overlay_png(self, alpha: float = 0.5) -> bytes:
        """The picture: the input crop, the crop under the heatmap, and the top-k labels as bars."""
        from .figures import figure_bytes, pyplot

        plt = pyplot("drawing an explanation", extra="explain")
        crop, a, target = self.crop, self._map(), self.explained()
        if crop is None:
            raise EffnetError(f"{self.path}: no input crop to draw the explanation on")
        heat = a / a.max() if a.max() > 0 else a
        fig, (ax_crop, ax_map, ax_bars) = plt.subplots(
            1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1, 1.25]}
        )
        ax_crop.imshow(crop)
        ax_crop.set_title("model input", fontsize=10)
        ax_map.imshow(crop)
        ax_map.imshow(heat, cmap="jet", alpha=alpha * heat**0.5, vmin=0, vmax=1)  # faint where the map is weak
        x, y = self.peak()
        ax_map.plot([x], [y], marker="+", color="white", markersize=14, markeredgewidth=2)
        ax_map.set_title(f"{self.method}: {_short(target.label)}", fontsize=10)
        for ax in (ax_crop, ax_map):
            ax.set_axis_off()
        preds = self.predictions[::-1]
        ax_bars.barh(
            range(len(preds)),
            [100 * p.probability for p in preds],
            color=["#d62728" if p.class_index == target.class_index else "#2f6fde" for p in preds],
        )
        ax_bars.set_yticks(range(len(preds)), [_short(p.label, 28) for p in preds], fontsize=9)
        ax_bars.set_xlim(0, 100)
        ax_bars.set_xlabel("probability (%), fp32 torch model")
        for i, p in enumerate(preds):
            ax_bars.text(min(100 * p.probability + 1, 80), i, f"{100 * p.probability:.1f}%", va="center", fontsize=9)
        ax_bars.set_title(f"top-{len(preds)} (red: the class explained)", fontsize=10)
        fig.suptitle(Path(self.path).name if self.path != "<image>" else "uploaded image", fontsize=11)
        fig.tight_layout()
        return figure_bytes(fig, "png", dpi=90)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`overlay_png` to ``path`` (atomically)."""
        from .figures import write_bytes

        return write_bytes(path, self.overlay_png(), "explanation")


def _short(label: str, width: int = 40) -> str:
    name = label.split(",")[0]
    return name if len(name) <= width else name[: width - 1] + "…"


class Explainer:
    """Attribution maps from the fp32 torch model of ``source``'s weights (built once, in eval mode)."""

    def __init__(self, source: ModelSource, *, device: str = "cpu") -> None:
        self.captum_attr = require("captum.attr", "explain", "effnet explain")
        import torch

        self.source = source
        self.preprocess = source.preprocess
        self.labels = source.labels
        self.device = torch.device(device)
        self.model = source.build_model().to(self.device, torch.float32).eval()
        for p in self.model.parameters():  # attributions need input gradients only
            p.requires_grad_(False)

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
            out = ig.attribute(x, baselines=black.to(x.device), target=target, n_steps=IG_STEPS, internal_batch_size=8)[
                0
            ].sum(0)
            # per-pixel IG is speckle; a small box filter (1/28 of the crop) makes regions readable
            r = max(1, size // 56)
            smooth = torch.nn.functional.avg_pool2d(out.clamp(min=0)[None, None], 2 * r + 1, stride=1, padding=r)
            out = smooth[0, 0]
        elif method == "occlusion":
            window = max(8, size // 7)
            stride = max(4, window // 2)
            # baseline 0 in normalized units = the record's mean colour: a patch of "nothing in particular"
            out = (
                attr.Occlusion(self.model)
                .attribute(
                    x,
                    sliding_window_shapes=(3, window, window),
                    strides=(3, stride, stride),
                    target=target,
                    baselines=0.0,
                    perturbations_per_eval=8,
                )[0]
                .sum(0)
            )
        else:
            raise EffnetError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        return np.clip(out.detach().float().cpu().numpy(), 0.0, None).astype(np.float32)

    def explain_crop(
        self, crop: np.ndarray, *, name: str = "<image>", method: str = "gradcam", target: str | int = TOP1, k: int = 5
    ) -> Explanation:
        """The explanation of one uint8 HWC crop at the model's input size."""
        import torch

        if method not in METHODS:
            raise EffnetError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        wanted = resolve_target(target, self.labels)
        x = self._input(crop)
        with torch.no_grad():
            probs = torch.softmax(self.model(x).float(), dim=1)[0].cpu().numpy()
        predictions = top_k(probs, self.labels, min(k, len(self.labels)))
        index = predictions[0].class_index if wanted is None else wanted
        c = self.labels[index]
        chosen = Prediction(index, c.synset, c.label, float(probs[index]))
        with torch.enable_grad():
            heat = self.attribute(x, method, index)
        return Explanation(name, method, chosen, predictions, crop, heat)

    def explain(
        self, images: Iterable[ImageSource], *, method: str = "gradcam", target: str | int = TOP1, k: int = 5
    ) -> list[Explanation]:
        """One :class:`Explanation` per image, in order; an unreadable image carries its error."""
        if method not in METHODS:
            raise EffnetError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        resolve_target(target, self.labels)  # a bad target fails once, before any image
        out = []
        for image in images:
            name = image_name(image)
            try:
                decoded = load_image(image)
                crop = np.array(resize_crop(decoded, self.preprocess))  # = pipeline.decode_crop, keeping the size
            except (ImageError, OSError) as e:
                out.append(Explanation(name, error=str(e) or type(e).__name__))
                continue
            result = self.explain_crop(crop, name=name, method=method, target=target, k=k)
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
