"""Read ``keras.applications.EfficientNetB*`` weights (``.weights.h5`` and legacy ``.h5``) into effnet.

Keras names every layer of the model (keras/src/applications/efficientnet.py): ``stem_conv``, ``stem_bn``,
``block{S}{L}_{expand_conv,expand_bn,dwconv,bn,se_reduce,se_expand,project_conv,project_bn}`` (stage ``S``
from 1, block letter ``L`` from ``a``), ``top_conv``, ``top_bn``, ``predictions``, and the input
``normalization``. :func:`keras_name_table` maps those names to effnet modules from the resolved architecture;
layers are never matched by position.

Two file layouts are read with h5py, no Keras needed:

- Keras 3 ``model.save_weights("x.weights.h5")``: ``layers/<path>/vars/0..n`` with the layer's name in the
  ``vars`` group's ``name`` attribute. Variables are stored by index, in the order the layer creates them in
  ``build()`` (:data:`KERAS_VARIABLES`): that order is the format.
- Legacy HDF5 (tf.keras ``save_weights("x.h5")``, Keras' published ImageNet files, and Keras 3
  ``model.save("x.h5")``): ``[model_weights/]<layer>/<layer>/<var>[:0]`` listed by the ``layer_names`` and
  ``weight_names`` attributes.

Layouts: Keras keeps channels last. Conv kernels are HWIO (-> OIHW), depthwise kernels H W C 1 (-> C 1 H W),
dense kernels (in, out) (-> (out, in)). The model's first layers, ``Rescaling(1/255)`` and
``Normalization(mean, variance)``, are not effnet modules: they become the eval preprocessing
``(x - 255 mean) / (255 sqrt(variance))`` on 0-255 pixels (:class:`KerasWeights`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import CheckpointError
from ..specs import ArchPlan

__all__ = ["KERAS_VARIABLES", "KerasWeights", "keras_name_table", "read_keras_layers", "read_keras_weights"]

LayerKind = Literal["conv", "conv_bias", "depthwise", "bn", "dense", "normalization"]

# Variable names of each layer kind, in the order Keras 3 creates (and so numbers) them:
# Conv2D/DepthwiseConv2D build(): kernel[, bias]; BatchNormalization: gamma, beta, moving_mean, moving_variance;
# Dense: kernel, bias; Normalization: mean, variance, count.
KERAS_VARIABLES: dict[LayerKind, tuple[str, ...]] = {
    "conv": ("kernel",),
    "conv_bias": ("kernel", "bias"),
    "depthwise": ("kernel",),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
    "normalization": ("mean", "variance", "count"),
}
_BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
NORMALIZATION_LAYER = "normalization"
# keras.applications.efficientnet.IMAGENET_STDDEV_RGB. Keras' ImageNet files store these standard deviations
# as the Normalization *variance*, and EfficientNet(weights="imagenet") adds Rescaling(1 / sqrt(stddev)) to
# compensate (tensorflow/tensorflow#49930): for such a file the effective divisor is the stddev itself.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class KerasWeights:
    """A Keras checkpoint converted to effnet key names, and its in-graph input normalization."""

    state: dict[str, torch.Tensor]
    mean: tuple[float, float, float]  # on 0-255 pixels
    std: tuple[float, float, float]
    imagenet_rescale: bool  # the variance held Keras' ImageNet stddevs (see IMAGENET_STDDEV_RGB)


def keras_name_table(plan: ArchPlan) -> dict[str, tuple[str, LayerKind]]:
    """Keras layer name -> (effnet module, layer kind), for every weighted layer of ``plan``."""
    table: dict[str, tuple[str, LayerKind]] = {
        "stem_conv": ("stem.conv", "conv"),
        "stem_bn": ("stem.bn", "bn"),
        "top_conv": ("head.conv", "conv"),
        "top_bn": ("head.bn", "bn"),
        "predictions": ("classifier", "dense"),
    }
    for b in plan.blocks:
        if b.index >= 26:
            raise CheckpointError(f"stage {b.stage + 1} has {b.index + 1} blocks; Keras names blocks a-z")
        k, e = f"block{b.stage + 1}{chr(ord('a') + b.index)}_", f"stages.{b.stage}.{b.index}."
        if b.has_expand:
            table[k + "expand_conv"] = (e + "expand.conv", "conv")
            table[k + "expand_bn"] = (e + "expand.bn", "bn")
        table[k + "dwconv"] = (e + "depthwise.conv", "depthwise")
        table[k + "bn"] = (e + "depthwise.bn", "bn")
        if b.se_channels:
            table[k + "se_reduce"] = (e + "se.reduce", "conv_bias")
            table[k + "se_expand"] = (e + "se.expand", "conv_bias")
        table[k + "project_conv"] = (e + "project.conv", "conv")
        table[k + "project_bn"] = (e + "project.bn", "bn")
    return table


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keras_layers(path: str | os.PathLike) -> dict[str, list[tuple[str | None, np.ndarray]]]:
    """Every weighted layer of a Keras HDF5 file: name -> [(variable name or None for Keras 3, array)]."""
    from .._optional import require

    h5py = require("h5py", "keras", "reading Keras .h5 files")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Keras checkpoint {p} does not exist or is not a file")
    layers: dict[str, list[tuple[str | None, np.ndarray]]] = {}
    try:
        with h5py.File(p, "r") as f:
            if "layers" in f and isinstance(f["layers"], h5py.Group) and "layer_names" not in f.attrs:
                # Keras 3: layers/<auto name>/vars/<i>, the real layer name in vars.attrs["name"].
                def visit(name: str, obj: object) -> None:
                    if isinstance(obj, h5py.Group) and name.endswith("vars") and len(obj):
                        keys = sorted(obj, key=int)
                        layers[_text(obj.attrs.get("name", name))] = [(None, np.asarray(obj[k])) for k in keys]

                f["layers"].visititems(visit)
            else:
                g = f["model_weights"] if "model_weights" in f else f
                if "layer_names" not in g.attrs:
                    raise CheckpointError(f"{p}: not a Keras weights file (no 'layers' group, no 'layer_names')")
                for lname in (_text(n) for n in g.attrs["layer_names"]):
                    names = [_text(w) for w in g[lname].attrs.get("weight_names", [])]
                    if names:
                        # "stem_conv/kernel:0" (tf.keras) or "stem_conv/kernel" (Keras 3)
                        layers[lname] = [(w.rsplit("/", 1)[-1].split(":")[0], np.asarray(g[lname][w])) for w in names]
    except OSError as e:
        raise CheckpointError(f"cannot read Keras HDF5 file {p}: {e}") from None
    return layers


def _variables(layer: str, kind: LayerKind, stored: list[tuple[str | None, np.ndarray]]) -> dict[str, np.ndarray]:
    expected = KERAS_VARIABLES[kind]
    if all(n is None for n, _ in stored):  # Keras 3: by index, in build() order
        if len(stored) != len(expected):
            raise CheckpointError(f"Keras layer {layer!r}: {len(stored)} variables, expected {expected}")
        return dict(zip(expected, (a for _, a in stored), strict=True))
    # tf.keras calls the depthwise kernel "depthwise_kernel"
    out = {("kernel" if n == "depthwise_kernel" else str(n)): a for n, a in stored}
    if set(out) != set(expected):
        raise CheckpointError(f"Keras layer {layer!r}: variables {sorted(out)}, expected {list(expected)}")
    return out


def _to_torch(kind: LayerKind, var: str, a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if var == "kernel":
        if kind in ("conv", "conv_bias"):
            t = t.permute(3, 2, 0, 1)  # HWIO -> OIHW
        elif kind == "depthwise":
            t = t.permute(2, 3, 0, 1)  # H W C 1 -> C 1 H W
        elif kind == "dense":
            t = t.t()  # (in, out) -> (out, in)
    return t.contiguous()


def _normalization(stored: list[tuple[str | None, np.ndarray]] | None, where: str) -> tuple[tuple, tuple, bool]:
    if stored is None:
        raise CheckpointError(
            f"{where}: no '{NORMALIZATION_LAYER}' layer; keras.applications EfficientNet models start with "
            "Rescaling(1/255) and Normalization, whose statistics become the preprocessing"
        )
    v = _variables(NORMALIZATION_LAYER, "normalization", stored)
    mean, var = v["mean"].reshape(-1).astype(float), v["variance"].reshape(-1).astype(float)
    if mean.shape != (3,) or var.shape != (3,):
        raise CheckpointError(f"{where}: Normalization over {mean.shape} channels, expected 3 (RGB)")
    imagenet = bool(np.allclose(var, IMAGENET_STDDEV_RGB, atol=1e-6))
    # Keras Normalization: (x - mean) / max(sqrt(variance), 1e-7), after Rescaling(1/255).
    std = np.asarray(IMAGENET_STDDEV_RGB) if imagenet else np.maximum(np.sqrt(var), 1e-7)
    return tuple(float(255 * m) for m in mean), tuple(float(255 * s) for s in std), imagenet


def read_keras_weights(path: str | os.PathLike, plan: ArchPlan) -> KerasWeights:
    """Convert a Keras EfficientNet checkpoint for ``plan``; every missing or unknown layer is one error."""
    layers = read_keras_layers(path)
    table = keras_name_table(plan)
    missing = [k for k in table if k not in layers]
    unknown = [k for k in layers if k not in table and k != NORMALIZATION_LAYER]
    if missing or unknown:
        parts = [f"{path} does not fit {plan.variant.name} (Keras layer names):"]
        if missing:
            parts.append(
                f"  {len(missing)} missing: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
            )
        if unknown:
            parts.append(
                f"  {len(unknown)} unknown: " + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            )
        raise CheckpointError("\n".join(parts))
    state: dict[str, torch.Tensor] = {}
    for lname, (module, kind) in table.items():
        for var, a in _variables(lname, kind, layers[lname]).items():
            name = _BN_NAMES[var] if kind == "bn" else ("weight" if var == "kernel" else var)
            state[f"{module}.{name}"] = _to_torch(kind, var, a)
    mean, std, imagenet = _normalization(layers.get(NORMALIZATION_LAYER), str(path))
    return KerasWeights(state=state, mean=mean, std=std, imagenet_rescale=imagenet)
