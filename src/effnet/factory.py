"""``create_model``: build a variant and, optionally, load weights into it."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UnknownNameError
from .model import EfficientNet
from .specs import get_variant
from .weights.load import load_into, read_checkpoint
from .weights.records import WeightsRecord, default_record, fetch, find_record

Pretrained = bool | str | os.PathLike | WeightsRecord


def resolve_weights(name: str, pretrained: Pretrained) -> tuple[WeightsRecord | None, Path | None]:
    """Turn ``pretrained`` into (record or None, local file or None) without loading anything.

    ``True`` is the model's default record; a ``WeightsRecord`` or a record name is
    that record; any other string or path is a checkpoint file.
    """
    if pretrained is False or pretrained is None:
        return None, None
    if pretrained is True:
        return default_record(name), None
    if isinstance(pretrained, WeightsRecord):
        record = pretrained
    elif isinstance(pretrained, str) and find_record(pretrained) and not Path(pretrained).exists():
        record = find_record(pretrained)
    else:
        return None, Path(pretrained)
    if record.model != name:
        raise UnknownNameError(f"weights {record.name!r} are for {record.model}, not {name}")
    return record, None


def create_model(
    name: str,
    pretrained: Pretrained = False,
    num_classes: int = 1000,
    **kwargs,
) -> EfficientNet:
    """Build ``name`` (e.g. ``"efficientnet-b5"``) in eval mode.

    ``pretrained``: ``False`` (random init), ``True`` (the default weights record,
    downloaded and verified into the cache once), a record name such as
    ``"tf_efficientnet_b5.ap_in1k"``, or the path of a checkpoint file in any
    supported format (effnet, timm/gen-efficientnet, lukemelas; .pth or .safetensors).
    ``num_classes != 1000`` keeps the pretrained body and gives a new classifier.
    Extra keyword arguments go to :class:`EfficientNet` (``padding``, ``bn_eps``, ``input_size``...).
    """
    variant = get_variant(name)
    model = EfficientNet(variant, num_classes=num_classes, **kwargs)
    record, path = resolve_weights(variant.name, pretrained)
    if record is not None:
        path = fetch(record)
    if path is not None:
        state = read_checkpoint(path)
        load_into(
            model,
            state,
            model.plan,
            key_format=record.key_format if record else None,
            source=str(path),
            skip_classifier=num_classes != 1000,
        )
    return model.eval()
