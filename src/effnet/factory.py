"""``create_model``: build a variant and, optionally, load weights into it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import torch

from .errors import EffnetError, UnknownNameError
from .features import EfficientNetFeatures
from .model import EfficientNet, adapt_input_conv
from .specs import Variant, get_variant
from .weights.convert import convert_state_dict
from .weights.load import load_into, read_checkpoint
from .weights.native import read_native_info
from .weights.preprocessing import LITE_MEAN, LITE_STD, TF_CROP_PADDING, Preprocess, pretrained_cfg
from .weights.records import DEFAULT_WEIGHTS, WeightsRecord, default_record, fetch, find_record, list_weights

__all__ = ["Pretrained", "create_model", "resolve_weights", "resolve_name", "default_cfg", "default_preprocess"]


Pretrained = bool | str | os.PathLike | WeightsRecord


def resolve_weights(name: str, pretrained: Pretrained) -> tuple[WeightsRecord | None, Path | None]:
    """Turn ``pretrained`` into (record or None, local file or None) without downloading anything.

    ``True`` is the model's default record; a ``WeightsRecord`` or a record name is
    that record; any other string or path is a checkpoint file. An effnet-native
    ``.safetensors`` file brings its own record (model, padding, classes, labels,
    preprocessing) from its metadata: both are returned.
    """
    if pretrained is False or pretrained is None:
        return None, None
    if pretrained is True:
        return default_record(name), None
    if isinstance(pretrained, WeightsRecord):
        record = pretrained
    elif isinstance(pretrained, str) and (named := find_record(pretrained)) and not Path(pretrained).exists():
        record = named
    else:
        path = Path(pretrained)
        info = read_native_info(path)
        if info is None:
            return None, path
        record = info.to_record(path)
        if record.model != name:
            raise UnknownNameError(f"{path} holds weights for {record.model}, not {name}")
        return record, path
    if record.model != name:
        raise UnknownNameError(f"weights {record.name!r} are for {record.model}, not {name}")
    return record, None


def resolve_name(name: str) -> tuple[Variant, WeightsRecord | None]:
    """A model name, a timm architecture name or a weights record name -> (variant, record or None).

    ``"tf_efficientnet_b5.ap_in1k"`` -> (B5, that record); ``"tf_efficientnet_b5"`` and ``"efficientnet-b5"``
    -> (B5, None). A ``<arch>.<tag>`` name whose tag is not recorded raises :class:`UnknownNameError`
    listing the recorded weights of that architecture.
    """
    record = find_record(name.strip())
    if record is not None:
        return get_variant(record.model), record
    arch, dot, tag = name.strip().partition(".")
    variant = get_variant(arch)
    if dot:
        known = ", ".join(list_weights(variant.name)) or "none"
        raise UnknownNameError(f"unknown weights {name!r}; weights recorded for {variant.name}: {known}")
    return variant, None


def default_preprocess(variant: Variant) -> tuple[Preprocess, WeightsRecord | None]:
    """The preprocessing of a model run without its own record (random init, a foreign checkpoint file):
    its default record's, or the TF reference eval preprocessing at the variant's resolution when no
    weights are recorded for it (then the record is None)."""
    if variant.name in DEFAULT_WEIGHTS:
        record = default_record(variant.name)
        return record.preprocess, record
    size = variant.resolution
    if variant.fixed_stem_head:  # the Lite family (specs._lite)
        return Preprocess(size, size + TF_CROP_PADDING, mean=LITE_MEAN, std=LITE_STD), None
    return Preprocess(size, size + TF_CROP_PADDING), None


def default_cfg(variant: Variant, num_classes: int = 1000) -> dict[str, Any]:
    """``pretrained_cfg`` of a model built without weights (:func:`default_preprocess`)."""
    p, record = default_preprocess(variant)
    return pretrained_cfg(p, num_classes=num_classes, record=record.name if record else None)


@overload
def create_model(
    name: str,
    pretrained: Pretrained = ...,
    num_classes: int | None = ...,
    *,
    features_only: Literal[False] = ...,
    out_indices: Sequence[int] = ...,
    **kwargs: Any,
) -> EfficientNet: ...
@overload
def create_model(
    name: str,
    pretrained: Pretrained = ...,
    num_classes: int | None = ...,
    *,
    features_only: Literal[True],
    out_indices: Sequence[int] = ...,
    **kwargs: Any,
) -> EfficientNetFeatures: ...
def create_model(
    name: str,
    pretrained: Pretrained = False,
    num_classes: int | None = None,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] = (0, 1, 2, 3, 4),
    **kwargs: Any,
) -> EfficientNet | EfficientNetFeatures:
    """Build ``name`` in eval mode: an effnet model (``"efficientnet-b5"``), a timm architecture name
    (``"tf_efficientnet_b5"``, see :data:`effnet.specs.TIMM_ALIASES`) or a weights record name, timm style
    (``"tf_efficientnet_b5.ap_in1k"``: with ``pretrained=True`` those weights are loaded; without, only their
    ``pretrained_cfg`` is attached and nothing is downloaded).

    ``pretrained``: ``False`` (random init), ``True`` (the default weights record,
    downloaded and verified into the cache once), a record name such as
    ``"tf_efficientnet_b5.ap_in1k"``, or the path of a checkpoint file in any
    supported format (effnet, timm/gen-efficientnet, lukemelas; .pth or .safetensors).
    ``num_classes`` defaults to the weights' own (1000 for ImageNet, the file's for an effnet-native
    file); another value keeps the pretrained body and gives a new classifier.
    Extra keyword arguments go to :class:`EfficientNet` (``padding``, ``bn_eps``, ``input_size``...);
    by default the model is built the way the weights record says (TF SAME and eps 1e-3 for TF ports).

    ``model.pretrained_cfg`` (timm's dict; mean/std in timm's 0-1 units, see
    :func:`effnet.weights.preprocessing.pretrained_cfg`) says how images must be preprocessed for the loaded
    weights: the record's, an effnet-native file's own, or (random init, a plain checkpoint file) the model's
    default record's.

    ``embedding_stage=K`` ends the network after stage K (0-based) with no head convolution, the
    classifier (new) reading that stage's pooled output; a file ``effnet train`` cut that way is rebuilt
    so without asking.

    Backbone options (timm's names): ``in_chans`` adapts the pretrained RGB stem (:func:`adapt_input_conv`);
    ``drop_path_rate``, ``drop_rate`` set stochastic depth and head dropout; ``features_only=True`` returns
    an :class:`EfficientNetFeatures` with the maps ``out_indices`` selects (strides 2, 4, 8, 16, 32).
    """
    variant, named = resolve_name(name)
    if named is not None and not isinstance(pretrained, bool):
        raise EffnetError(
            f"{name!r} names weights already: pass pretrained=True to load them (or False), not "
            f"pretrained={pretrained!r}; to load a file, name the model: "
            f"create_model({variant.name!r}, pretrained=PATH)"
        )
    record, path = resolve_weights(variant.name, named if named is not None and pretrained else pretrained)
    built_for = record if record is not None else named  # the weights the architecture is built for
    own_classes = built_for.num_classes if built_for is not None else 1000
    classes = own_classes if num_classes is None else num_classes
    # The network is built as the weights were made (a file of effnet train's probe may end at a stage),
    # loaded, and only then cut where asked: a pretrained body ending at ``embedding_stage``, a new classifier.
    built_stage = built_for.embedding_stage if built_for is not None else None
    cut_at = kwargs.pop("embedding_stage", built_stage)
    if built_for is not None:
        kwargs = {"padding": built_for.padding, "bn_eps": built_for.bn_eps, **kwargs}
    model = EfficientNet(variant, num_classes=classes, embedding_stage=built_stage, **kwargs)
    if record is not None and path is None:
        path = fetch(record)
    if path is not None:
        state = read_checkpoint(path)
        fmt = record.key_format if record else None
        if model.in_chans != 3:  # adapt the checkpoint's stem, once its keys are effnet's
            converted, unmapped = convert_state_dict(state, model.plan, fmt)
            stem = converted.get("stem.conv.weight")
            if stem is not None and not unmapped:
                state, fmt = {**converted, "stem.conv.weight": adapt_input_conv(stem, model.in_chans)}, "effnet"
        load_into(
            model,
            state,
            model.plan,
            key_format=fmt,
            source=str(path),
            skip_classifier=classes != own_classes,
        )
        if record is not None and record.temperature != 1.0 and classes == own_classes and cut_at == built_stage:
            # A calibrated file (effnet train's temperature scaling): logits / T, folded into the classifier
            # so every consumer of the model (classify, eval, serve, exports) gets calibrated probabilities.
            head = model.classifier
            if isinstance(head, torch.nn.Linear):
                with torch.no_grad():
                    head.weight.div_(record.temperature)
                    head.bias.div_(record.temperature)
    if cut_at != built_stage:
        if cut_at is None:
            raise EffnetError(f"{path} holds a network that ends at stage {built_stage}: it has no later stages")
        model.truncate(cut_at)
    if built_for is not None:
        model.pretrained_cfg = pretrained_cfg(built_for.preprocess, num_classes=classes, record=built_for.name)
    else:
        model.pretrained_cfg = default_cfg(variant, classes)
    if features_only:
        return EfficientNetFeatures(model, out_indices).eval()
    return model.eval()
