"""One explanation: the attribution map of one image, its summary, and its pictures (overlay, heatmap).

Made by :class:`effnet.saliency.Explainer`; drawn with matplotlib (:mod:`effnet.figures`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EffnetError
from .labels import Prediction, short_label

__all__ = ["Explanation"]


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
        ax_map.set_title(f"{self.method}: {short_label(target.label)}", fontsize=10)
        for ax in (ax_crop, ax_map):
            ax.set_axis_off()
        preds = self.predictions[::-1]
        ax_bars.barh(
            range(len(preds)),
            [100 * p.probability for p in preds],
            color=["#d62728" if p.class_index == target.class_index else "#2f6fde" for p in preds],
        )
        ax_bars.set_yticks(range(len(preds)), [short_label(p.label, 28) for p in preds], fontsize=9)
        ax_bars.set_xlim(0, 100)
        ax_bars.set_xlabel("probability (%), fp32 torch model")
        for i, p in enumerate(preds):
            ax_bars.text(min(100 * p.probability + 1, 80), i, f"{100 * p.probability:.1f}%", va="center", fontsize=9)
        ax_bars.set_title(f"top-{len(preds)} (red: the class explained)", fontsize=10)
        fig.suptitle(Path(self.path).name if self.path != "<image>" else "uploaded image", fontsize=11)
        return figure_bytes(fig, "png", dpi=90, tight_layout=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`overlay_png` to ``path`` (atomically)."""
        from .figures import write_bytes

        return write_bytes(path, self.overlay_png(), "explanation")
