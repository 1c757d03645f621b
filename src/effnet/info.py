"""``model_info``: the weights record, the input/output contract and the measured complexity of a model."""

from __future__ import annotations

from typing import Any

from .factory import Pretrained, create_model, resolve_weights
from .flops import count_complexity
from .specs import get_variant
from .weights.records import DEFAULT_WEIGHTS, default_record, records_for


def model_info(model: str = "efficientnet-b5", weights: Pretrained | None = None) -> dict:
    """Describe ``model``: its default weights record (or ``weights``: a record name, or a file such as an
    effnet-native fine-tuned ``model.safetensors``, which says its own classes, preprocessing and build) and
    I/O spec, and parameters / FLOPs counted from the built network at the record's input size."""
    variant = get_variant(model)
    if weights is not None:
        record, _ = resolve_weights(variant.name, weights)  # nothing downloaded, no tensors read
    else:
        record = default_record(variant.name) if variant.name in DEFAULT_WEIGHTS else None
    size = record.preprocess.input_size if record else variant.resolution
    build: dict[str, Any] = {} if record is None else {"padding": record.padding, "bn_eps": record.bn_eps}
    if record is not None and record.embedding_stage is not None:
        build["embedding_stage"] = record.embedding_stage
    net = create_model(variant.name, num_classes=record.num_classes if record else 1000, input_size=size, **build)
    c = count_complexity(net, (size, size))
    p = record.preprocess if record else None
    plan = net.plan
    return {
        "model": variant.name,
        "architecture": {
            "width": variant.width,
            "depth": variant.depth,
            "resolution": variant.resolution,
            "dropout": variant.dropout,
            "activation": variant.activation,
            "squeeze_excite": variant.squeeze_excite,
            "stem_channels": plan.stem_channels,
            "stage_repeats": list(plan.stage_repeats),
            "stage_channels": list(plan.stage_channels),
            "blocks": len(plan.blocks),
            "head_channels": plan.head_channels,
            "feature_map": [plan.head_channels, *(net.feature_size or ())],
            "padding": "TF SAME" if net.padding_mode == "same" else "symmetric",
            "bn_eps": net.stem.bn.eps,
        },
        "input": {
            "name": "data",
            "shape": [1, 3, size, size],
            "layout": "NCHW",
            "channel_order": p.channel_order if p else "RGB",
            "mean": list(p.mean) if p else None,
            "std": list(p.std) if p else None,
            "note": "pixel values 0-255; the model takes (x - mean) / std",
        },
        "output": {
            "name": "prob",
            "shape": [1, net.num_classes],
            "meaning": "softmax probabilities, "
            + ("ImageNet-1k" if record is None or record.labels == "imagenet-1k" else ", ".join(record.labels[:5]))
            + ("" if record is None or isinstance(record.labels, str) or len(record.labels) <= 5 else ", ..."),
        },
        "complexity": {
            "params": c.params,
            "params_bn_folded": c.params_bn_folded,
            "macs": c.macs,
            "gflops": round(c.flops / 1e9, 3),
            "elementwise_outputs": c.elementwise,
            "convention": "params: PyTorch parameters (BN gamma/beta counted); params_bn_folded: BN folded into "
            "conv biases, the convention of the Open Model Zoo card (30.303 M for B5). "
            "gflops = 2 x multiply-accumulates of conv and linear layers at the input size; "
            "element-wise ops (BN, activations, SE gates, adds) are not included.",
        },
        "weights": record.to_dict() if record else None,
        "other_weights": [r.name for r in records_for(variant.name) if record is None or r.name != record.name],
    }
