"""ONNX export: input ``data`` float32 [N, 3, H, W], normalized RGB exactly as the PyTorch model takes it;
output ``prob`` (softmax) or, with ``logits=True``, ``logits``.

The graph has a static batch of 1 by default, as the card's model (1x3x456x456): tools pointed at a file
(benchmark_app, OVMS, TensorRT) need no shape. ``batch_size=None`` makes the batch dynamic; ``dynamic=True``
makes height and width dynamic too (each size-dependent SAME pad is then computed in the graph). The static
graph has every TF SAME pad inside the Conv ``pads`` attribute (ONNX allows asymmetric pads; there is no Pad
node) and every batch norm folded into its convolution.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .._optional import require
from .._version import __version__
from ..device import resolve_device
from ..errors import EffnetError
from ..factory import Pretrained
from ..fileio import atomic_write, new_output_dir
from ..model import EfficientNet
from ..source import ModelSource
from ._common import (
    DEFAULT_OPSET,
    INPUT_NAME,
    LOGITS_NAME,
    MIN_OPSET,
    OUTPUT_NAME,
    check_batch,
    load_model,
    metadata,
    resolve,
)
from .graph import prepare_for_export

__all__ = ["MAX_OPSET", "export_onnx", "onnx_metadata", "onnx_bytes"]

MAX_OPSET: int = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)


def _check_options(opset: int, batch_size: int | None) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise EffnetError(f"ONNX opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    check_batch(batch_size)


def onnx_bytes(
    model: EfficientNet,
    size: int,
    *,
    dynamic: bool,
    logits: bool,
    opset: int,
    batch_size: int | None,
    device: str = "cpu",
) -> bytes:
    """Trace the export copy of ``model`` into serialized ONNX (needs the ``onnx`` package: torch uses it).

    ``device`` is where the trace runs (cpu, cuda, cuda:N, auto; :mod:`effnet.device`); the graph is the same.
    """
    require("onnx", "onnx", "ONNX export")
    where = resolve_device(device)
    exportable = prepare_for_export(model, dynamic=dynamic, logits=logits).to(where)
    output = LOGITS_NAME if logits else OUTPUT_NAME
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {}, output: {}}
    if batch_size is None:
        axes[INPUT_NAME][0] = axes[output][0] = "batch"
    if dynamic:
        axes[INPUT_NAME].update({2: "height", 3: "width"})
    example = torch.zeros(batch_size or 1, 3, size, size, device=where)
    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False) honours autograd.Function symbolics and needs no
    # onnxscript; its deprecation and tracer warnings are expected here and say nothing to a user.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exportable,
            (example,),
            buffer,  # type: ignore[arg-type]  # torch.onnx.export writes to file-likes too
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[output],
            dynamic_axes={k: v for k, v in axes.items() if v},
            opset_version=opset,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def onnx_metadata(source: ModelSource, *, logits: bool = False, dynamic: bool = False) -> dict[str, str]:
    """``metadata_props`` of an export: everything a consumer needs to feed it and read it."""
    return {
        **metadata(source, output=LOGITS_NAME if logits else OUTPUT_NAME, artifact="onnx"),
        "output": LOGITS_NAME if logits else OUTPUT_NAME,
        "channel_order": source.preprocess.channel_order,
        "normalization": "(pixel - mean) / std on 0-255 pixel values",
        "dynamic_size": "true" if dynamic else "false",
    }


def _remove_identities(graph: Any) -> None:
    """Drop Identity nodes (the exporter adds them for deduplicated initializers) by rewiring consumers."""
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)


def _finish_onnx(data: bytes, metadata: dict[str, str]) -> Any:
    onnx = require("onnx", "onnx", "ONNX export")
    proto = onnx.load_from_string(data)
    _remove_identities(proto.graph)
    proto.producer_name = "effnet"
    proto.producer_version = __version__
    proto.doc_string = f"{metadata['model']} ({metadata['weights']}) exported by effnet {__version__}"
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def export_onnx(
    source: ModelSource | str,
    output: str | os.PathLike,
    *,
    weights: Pretrained | None = None,
    dynamic: bool = False,
    logits: bool = False,
    opset: int = DEFAULT_OPSET,
    batch_size: int | None = 1,
    progress: bool = True,
    device: str = "cpu",
) -> Path:
    """Export to ONNX at ``output`` and return its path (traced on ``device``).

    ``source`` is a :class:`ModelSource` or a model name (then ``weights`` as in
    :class:`effnet.predict.Classifier`: ``None`` = the default record, a record
    name, or a checkpoint file). The file appears only once complete.
    """
    _check_options(opset, batch_size)
    target = Path(output)
    if target.is_dir():
        raise EffnetError(f"ONNX output {target} is a directory; give a file name such as {target / 'model.onnx'}")
    with new_output_dir(target.parent, "the ONNX model"):  # a failure leaves no empty folder behind
        source = resolve(source, weights, progress)
        onnx = require("onnx", "onnx", "ONNX export")
        data = onnx_bytes(
            load_model(source),
            source.preprocess.input_size,
            dynamic=dynamic,
            logits=logits,
            opset=opset,
            batch_size=batch_size,
            device=device,
        )
        proto = _finish_onnx(data, onnx_metadata(source, logits=logits, dynamic=dynamic))
        atomic_write(target, lambda tmp: onnx.save_model(proto, str(tmp)), "the ONNX model")
    return target
