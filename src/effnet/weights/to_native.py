"""Any supported checkpoint -> an effnet-native safetensors file that needs no other input.

``effnet weights convert`` calls :func:`convert_to_native`. What a file in a foreign format does not say is
taken, in this order, from the record whose checksum it matches (``match_record``), from the file itself
(Keras: its Normalization layer), and from the conventions of the implementation that wrote it
(:func:`conventions`): how that implementation builds the model (padding, BN eps) and preprocesses images.
The model is the one named, or the one variant whose every key and shape the file fits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch

from ..errors import CheckpointError
from ..specs import VARIANTS, build_plan, get_variant
from .convert import OPTIONAL_TENSORS, convert_state_dict, detect_key_format, param_shapes
from .load import read_checkpoint
from .native import NativeInfo, read_native_info, save_native
from .preprocessing import TF_CROP_PADDING
from .records import KeyFormat, Preprocess, match_record

__all__ = ["SOURCE_FORMATS", "KERAS_SUFFIXES", "conventions", "convert_to_native", "read_as_native", "shape_problems"]

SourceFormat = Literal["auto", "effnet", "timm", "lukemelas", "torchvision", "keras"]
SOURCE_FORMATS: tuple[str, ...] = ("auto", "effnet", "timm", "lukemelas", "torchvision", "keras")
KERAS_SUFFIXES = (".h5", ".hdf5")
Padding = Literal["same", "symmetric"]

# torchvision/models/efficientnet.py, EfficientNet_B*_Weights.IMAGENET1K_V1 transforms: (crop_size, resize_size),
# bicubic, ImageNet mean/std.
_TORCHVISION_EVAL: dict[str, tuple[int, int]] = {
    "efficientnet-b0": (224, 256),
    "efficientnet-b1": (240, 256),
    "efficientnet-b2": (288, 288),
    "efficientnet-b3": (300, 320),
    "efficientnet-b4": (380, 384),
    "efficientnet-b5": (456, 456),
    "efficientnet-b6": (528, 528),
    "efficientnet-b7": (600, 600),
}


def conventions(fmt: str, model: str) -> tuple[Padding, float, Preprocess]:
    """How ``fmt``'s implementation builds ``model`` and preprocesses for it: (padding, BN eps, preprocessing).

    TF ports (timm's ``tf_*``, lukemelas, Keras) use TF SAME padding and TF's eps 1e-3. torchvision pads
    symmetrically ((k - 1) // 2, ops/misc.py) and builds B0-B4 with ``nn.BatchNorm2d``'s default eps 1e-5
    (its own PyTorch-trained weights) but B5-B7 with eps 1e-3 (lukemelas' ports of TF weights).
    """
    res = get_variant(model).resolution
    if fmt == "torchvision":
        crop, resize = _TORCHVISION_EVAL.get(model, (res, res))
        eps = 1e-3 if model in ("efficientnet-b5", "efficientnet-b6", "efficientnet-b7") else 1e-5
        return "symmetric", eps, Preprocess(input_size=crop, resize_size=resize)
    if fmt == "lukemelas":
        # lukemelas/EfficientNet-PyTorch README: Resize(image_size) + CenterCrop(image_size).
        return "same", 1e-3, Preprocess(input_size=res, resize_size=res)
    return "same", 1e-3, Preprocess(input_size=res, resize_size=res + TF_CROP_PADDING)


def shape_problems(state: Mapping[str, torch.Tensor], model: str, num_classes: int) -> list[str]:
    """What keeps ``state`` (effnet keys) from filling ``model`` exactly: missing, unexpected, mis-shaped keys."""
    own = param_shapes(build_plan(get_variant(model)), num_classes)
    problems = [f"missing {k}" for k in own if k not in state and not k.endswith(OPTIONAL_TENSORS)]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k}: {tuple(v.shape)} vs model {own[k]}" for k, v in state.items() if k in own and tuple(v.shape) != own[k]
    ]
    return problems


def _classes(state: Mapping[str, torch.Tensor]) -> int:
    w = state.get("classifier.weight")
    return int(w.shape[0]) if w is not None and w.ndim == 2 else 0


def _fits(model: str, state: dict[str, torch.Tensor], fmt: KeyFormat) -> bool:
    """Whether ``state`` (``fmt`` keys) fills every parameter of ``model`` with the right shapes."""
    converted, unmapped = convert_state_dict(state, build_plan(get_variant(model)), fmt)
    return not unmapped and not shape_problems(converted, model, _classes(converted))


def _infer_model(fits, where: Path) -> str:
    matches = [name for name in VARIANTS if fits(name)]
    if len(matches) != 1:
        found = "no model" if not matches else f"several models ({', '.join(matches)})"
        raise CheckpointError(f"{where}: its keys and shapes fit {found}; name it with --model NAME")
    return matches[0]


def _keras(path: Path, model: str | None) -> tuple[str, dict[str, torch.Tensor], Preprocess]:
    from .keras import read_keras_layers, read_keras_weights

    if model is None:
        layers = read_keras_layers(path)

        def fits(name: str) -> bool:
            from .keras import keras_name_table

            return set(keras_name_table(build_plan(get_variant(name)))) == set(layers) - {"normalization"}

        model = _infer_model(fits, path)
    model = get_variant(model).name
    kw = read_keras_weights(path, build_plan(get_variant(model)))
    res = get_variant(model).resolution
    pre = Preprocess(input_size=res, resize_size=res + TF_CROP_PADDING, mean=kw.mean, std=kw.std)
    return model, kw.state, pre


def read_as_native(
    path: str | os.PathLike,
    *,
    from_format: SourceFormat = "auto",
    model: str | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[dict[str, torch.Tensor], NativeInfo]:
    """Read ``path`` in any supported format: (state dict with effnet keys, its NativeInfo)."""
    src = Path(path)
    if not src.is_file():
        raise CheckpointError(f"checkpoint {src} does not exist or is not a file")
    if from_format not in SOURCE_FORMATS:
        raise CheckpointError(f"unknown checkpoint format {from_format!r}; expected one of {SOURCE_FORMATS}")
    native = read_native_info(src)
    if native is not None and from_format in ("auto", "effnet"):
        if model is not None and get_variant(model).name != native.model:
            raise CheckpointError(f"{src} holds weights for {native.model}, not {model}")
        return read_checkpoint(src), native
    record = None
    if from_format == "keras" or (from_format == "auto" and src.suffix.lower() in KERAS_SUFFIXES):
        fmt: str = "keras"
        name, state, keras_pre = _keras(src, model)
    else:
        raw = read_checkpoint(src)
        fmt = detect_key_format(raw) if from_format == "auto" else from_format
        key_format: KeyFormat = fmt
        name = get_variant(model).name if model is not None else _infer_model(lambda n: _fits(n, raw, key_format), src)
        state, unmapped = convert_state_dict(raw, build_plan(get_variant(name)), key_format)
        if unmapped:
            raise CheckpointError(
                f"{src} ({fmt} keys) has keys no {name} parameter matches: {', '.join(unmapped[:10])}"
            )
        record = match_record(src, name)
    padding, eps, preprocess = conventions(fmt, name)
    if fmt == "keras":
        preprocess = keras_pre
    if record is not None:
        padding, eps, preprocess = record.padding, record.bn_eps, record.preprocess
    num_classes = _classes(state)
    if labels is not None:
        names: str | tuple[str, ...] = tuple(labels)
    elif record is not None:
        names = record.labels
    elif num_classes == 1000:
        names = "imagenet-1k"
    else:
        raise CheckpointError(f"{src} has {num_classes} classes, not ImageNet's 1000: pass their names (--labels FILE)")
    info = NativeInfo(
        model=name,
        preprocess=preprocess,
        labels=names,
        num_classes=num_classes,
        padding=padding,
        bn_eps=eps,
        source=record.name if record is not None else f"{fmt}:{src.name}",
    )
    return state, info


def convert_to_native(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    from_format: SourceFormat = "auto",
    model: str | None = None,
    labels: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
) -> NativeInfo:
    """Convert ``path`` to the effnet-native file ``out`` (``.safetensors``, written atomically).

    The tensors are checked against the model strictly before anything is written. ``preprocess`` overrides
    the preprocessing the converter found.
    """
    state, info = read_as_native(path, from_format=from_format, model=model, labels=labels)
    if preprocess is not None:
        info = replace(info, preprocess=preprocess)
    problems = shape_problems(state, info.model, info.num_classes)
    if problems:
        raise CheckpointError(f"{path} does not fit {info.model}: " + "; ".join(problems[:10]))
    save_native(state, out, info)
    return info
