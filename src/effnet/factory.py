"""``create_model``: build a variant and, optionally, load weights into it."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UnknownNameError
from .model import EfficientNet
from .specs import get_variant
from .weights.load import load_into, read_checkpoint
from .weights.native import read_native_info
from .weights.records import WeightsRecord, default_record, fetch, find_record

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


def create_model(
    name: str,
    pretrained: Pretrained = False,
    num_classes: int | None = None,
    **kwargs,
) -> EfficientNet:
    """Build ``name`` (e.g. ``"efficientnet-b5"``) in eval mode.

    ``pretrained``: ``False`` (random init), ``True`` (the default weights record,
    downloaded and verified into the cache once), a record name such as
    ``"tf_efficientnet_b5.ap_in1k"``, or the path of a checkpoint file in any
    supported format (effnet, timm/gen-efficientnet, lukemelas; .pth or .safetensors).
    ``num_classes`` defaults to the weights' own (1000 for ImageNet, the file's for an effnet-native
    file); another value keeps the pretrained body and gives a new classifier.
    Extra keyword arguments go to :class:`EfficientNet` (``padding``, ``bn_eps``, ``input_size``...);
    by default the model is built the way the weights record says (TF SAME and eps 1e-3 for TF ports).
    """
    variant = get_variant(name)
    record, path = resolve_weights(variant.name, pretrained)
    own_classes = record.num_classes if record is not None else 1000
    classes = own_classes if num_classes is None else num_classes
    if record is not None:
        kwargs = {"padding": record.padding, "bn_eps": record.bn_eps, **kwargs}
    model = EfficientNet(variant, num_classes=classes, **kwargs)
    if record is not None and path is None:
        path = fetch(record)
    if path is not None:
        state = read_checkpoint(path)
        load_into(
            model,
            state,
            model.plan,
            key_format=record.key_format if record else None,
            source=str(path),
            skip_classifier=classes != own_classes,
        )
    return model.eval()
