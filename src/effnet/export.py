"""Export an EfficientNet to ONNX and to the OpenVINO "converted model".

Two artifacts, as on the Open Model Zoo card:

* **ONNX** (:func:`export_onnx`): input ``data`` float32 [N, 3, H, W], normalized
  RGB exactly as the PyTorch model takes it; output ``prob`` (softmax) or, with
  ``logits=True``, ``logits``. The batch dimension is dynamic unless fixed.
  The static graph has every TF SAME pad inside the Conv ``pads`` attribute (ONNX
  allows asymmetric pads; there is no Pad node) and every batch norm folded into
  its convolution. ``dynamic=True`` makes height and width dynamic too: each
  size-dependent SAME pad is then computed in the graph from the input's shape.
* **OpenVINO IR** (:func:`export_openvino`): the same network with its input
  ``data`` taking raw 0-255 pixel values in **BGR** order; the channel flip,
  mean and scale are folded into the graph with ``PrePostProcessor``. Output
  ``prob``; FP32 weights, or FP16-compressed ones.

Why a custom ONNX symbolic: ``torch.onnx.export`` cannot express asymmetric conv
padding, so ``F.pad`` + conv exports as a Pad node fed by a chain of shape ops
that its constant folding does not remove. In the export copy of the model each
size-dependent SAME convolution is replaced by one whose ONNX symbolic emits the
final graph directly (Conv with explicit pads, or Shape arithmetic + Pad + Conv
when dynamic). Its PyTorch forward computes the same thing, so tracing still
checks shapes.

Backends use :func:`exported_artifact`, which caches the exports under
``$EFFNET_HOME/exports/`` keyed by model, weights, options and versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import secrets
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .backends import ModelSource
from .errors import EffnetError
from .factory import Pretrained, create_model
from .labels import get_labels
from .model import EfficientNet
from .optimize import fold_batchnorm
from .padding import SameConv2d, same_pad

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "MAX_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "LOGITS_NAME",
    "require",
    "prepare_for_export",
    "onnx_metadata",
    "export_onnx",
    "export_openvino",
    "exported_artifact",
    "exports_dir",
]

INPUT_NAME = "data"
OUTPUT_NAME = "prob"
LOGITS_NAME = "logits"
# 17 is read by every current runtime (ORT, OpenVINO, TensorRT >= 8.6). 13 is the lowest the
# graph is written for (Softmax over one axis; Max on int64 in the dynamic pads).
DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET: int = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)

ExportKind = Literal["onnx", "openvino"]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional package, or fail with the ``pip install`` line that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EffnetError(
            f"{purpose} needs the Python package {module!r}, which is not installed or cannot be imported "
            f"({e}): pip install 'effnet[{extra}]'"
        ) from None


# --------------------------------------------------------------------------------------------
# Model preparation: fold BN (effnet.optimize.fold_batchnorm), swap SAME convs for ONNX-friendly ones
# --------------------------------------------------------------------------------------------


class _StaticSameConv(torch.autograd.Function):
    """Conv with fixed, possibly asymmetric pads; exports as one ONNX Conv with ``pads``."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel, stride, pads, dilation, groups):  # type: ignore[override]
        top, left, bottom, right = pads
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, kernel, stride, pads, dilation, groups):
        # ONNX Conv pads: [top, left, bottom, right] (all begins, then all ends).
        return g.op(
            "Conv",
            x,
            weight,
            bias,
            kernel_shape_i=list(kernel),
            strides_i=list(stride),
            pads_i=list(pads),
            dilations_i=list(dilation),
            group_i=groups,
        )


class _DynamicSameConv(torch.autograd.Function):
    """TF SAME conv at any input size; exports as Shape arithmetic -> Pad -> Conv."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel, stride, dilation, groups):  # type: ignore[override]
        kh, kw = kernel
        top, bottom = same_pad(int(x.shape[-2]), kh, stride[0], dilation[0])
        left, right = same_pad(int(x.shape[-1]), kw, stride[1], dilation[1])
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, kernel, stride, dilation, groups):
        def const(values: list[int]):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]  # dilated kernel extent
        hw = g.op("Slice", g.op("Shape", x), const([2]), const([4]))
        s = const(list(stride))
        # out = ceil(in / s); total = max((out - 1) * s + span - in, 0); before = total // 2.
        out = g.op("Div", g.op("Add", hw, const([v - 1 for v in stride])), s)
        total = g.op(
            "Max",
            g.op("Sub", g.op("Add", g.op("Mul", g.op("Sub", out, const([1, 1])), s), const(span)), hw),
            const([0, 0]),
        )
        before = g.op("Div", total, const([2, 2]))
        after = g.op("Sub", total, before)
        pads = g.op("Concat", const([0, 0]), before, const([0, 0]), after, axis_i=0)
        padded = g.op("Pad", x, pads, mode_s="constant")
        return g.op(
            "Conv",
            padded,
            weight,
            bias,
            kernel_shape_i=list(kernel),
            strides_i=list(stride),
            dilations_i=list(dilation),
            group_i=groups,
        )


class _ExportSameConv(nn.Conv2d):
    """Stand-in for a :class:`SameConv2d` in an export copy: same weights, ONNX-friendly SAME padding.

    ``pads`` = (top, left, bottom, right) fixes the padding (static export); ``None``
    computes it from the input's shape (dynamic export).
    """

    def __init__(self, conv: SameConv2d, pads: tuple[int, int, int, int] | None) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
        )
        self.weight = conv.weight
        self.bias = (
            conv.bias
            if conv.bias is not None
            else nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype), requires_grad=False)
        )
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is None:
            return _DynamicSameConv.apply(
                x, self.weight, self.bias, self.kernel_size, self.stride, self.dilation, self.groups
            )
        return _StaticSameConv.apply(
            x, self.weight, self.bias, self.kernel_size, self.stride, self.pads, self.dilation, self.groups
        )


def _swap_same_convs(module: nn.Module, dynamic: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, SameConv2d):
            if dynamic:
                setattr(module, name, _ExportSameConv(child, None))
            elif child.input_size is None:
                raise EffnetError(f"{name}: SAME conv without a declared input size cannot be exported statically")
            elif child.static_pad is not None:
                left, right, top, bottom = child.static_pad
                setattr(module, name, _ExportSameConv(child, (top, left, bottom, right)))
            # else: symmetric SAME pads already sit in the conv's own ``padding``.
        else:
            _swap_same_convs(child, dynamic)


class _Exportable(nn.Module):
    """The graph that is exported: model, then softmax unless logits are wanted."""

    def __init__(self, model: nn.Module, logits: bool) -> None:
        super().__init__()
        self.model = model
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.logits else torch.softmax(y, dim=1)


def prepare_for_export(model: EfficientNet, *, dynamic: bool = False, logits: bool = False) -> nn.Module:
    """An export copy of ``model``: BN folded, SAME convs swapped, softmax appended (unless ``logits``).

    Static export needs the model built for its input size (``model.input_size``),
    since that is where the SAME pads are frozen.
    """
    if not dynamic and model.input_size is None:
        raise EffnetError("static export needs a model built with an input size (create_model(..., input_size=N))")
    folded = fold_batchnorm(model)
    _swap_same_convs(folded, dynamic)
    return _Exportable(folded, logits).eval()


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def _resolve(source: ModelSource | str, weights: Pretrained | None, progress: bool) -> ModelSource:
    if isinstance(source, ModelSource):
        if weights is not None:
            raise EffnetError("pass weights inside the ModelSource, not both")
        return source
    from .predict import resolve_source

    return resolve_source(source, weights, progress=progress)


def _load_model(source: ModelSource) -> EfficientNet:
    return create_model(source.model, pretrained=source.checkpoint or False, input_size=source.preprocess.input_size)


def _check_options(opset: int, batch_size: int | None) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise EffnetError(f"ONNX opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if batch_size is not None and batch_size < 1:
        raise EffnetError(f"batch size must be >= 1 (or None for a dynamic batch), got {batch_size}")


def _onnx_bytes(
    model: EfficientNet, size: int, *, dynamic: bool, logits: bool, opset: int, batch_size: int | None
) -> bytes:
    """Trace the export copy of ``model`` into serialized ONNX (needs the ``onnx`` package: torch uses it)."""
    require("onnx", "onnx", "ONNX export")
    exportable = prepare_for_export(model, dynamic=dynamic, logits=logits)
    output = LOGITS_NAME if logits else OUTPUT_NAME
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {}, output: {}}
    if batch_size is None:
        axes[INPUT_NAME][0] = axes[output][0] = "batch"
    if dynamic:
        axes[INPUT_NAME].update({2: "height", 3: "width"})
    example = torch.zeros(batch_size or 1, 3, size, size)
    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False) honours autograd.Function symbolics and needs no
    # onnxscript; its deprecation and tracer warnings are expected here and say nothing to a user.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exportable,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[output],
            dynamic_axes={k: v for k, v in axes.items() if v},
            opset_version=opset,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _weights_name(source: ModelSource) -> str:
    if source.record is not None:
        return source.record.name
    return source.checkpoint.name if source.checkpoint is not None else "random-init"


def onnx_metadata(source: ModelSource, *, logits: bool = False, dynamic: bool = False) -> dict[str, str]:
    """``metadata_props`` of an export: everything a consumer needs to feed it and read it."""
    p = source.preprocess
    labels = get_labels(source.record.labels if source.record else "imagenet-1k")
    return {
        "model": source.model,
        "weights": _weights_name(source),
        "input": INPUT_NAME,
        "output": LOGITS_NAME if logits else OUTPUT_NAME,
        "layout": "NCHW",
        "channel_order": p.channel_order,
        "normalization": "(pixel - mean) / std on 0-255 pixel values",
        "mean": json.dumps(list(p.mean)),
        "std": json.dumps(list(p.std)),
        "input_size": str(p.input_size),
        "dynamic_size": json.dumps(dynamic),
        "resize_size": str(p.resize_size),
        "interpolation": p.interpolation,
        "labels": json.dumps([c.label for c in labels]),
        "synsets": json.dumps([c.synset for c in labels]),
        "effnet_version": __version__,
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


def _writable_dir(directory: Path, what: str) -> Path:
    """Create ``directory`` if needed and prove it is writable, before minutes of work are spent."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".effnet-probe-")
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), directory)
        raise EffnetError(f"cannot write {what} to {directory}: {blocker} is not a directory") from None
    except OSError as e:
        raise EffnetError(f"cannot write {what} to {directory}: {e.strerror or e}") from None
    return directory


def _atomic_write(target: Path, write: Callable[[Path], None], what: str) -> None:
    """``write`` into a temporary file next to ``target``, then rename it into place."""
    # A fresh name rather than mkstemp: the writer creates the file, so it gets the umask's
    # permissions (mkstemp's 0600 would survive the rename).
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as e:
        raise EffnetError(f"cannot write {what} {target}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(
    source: ModelSource | str,
    output: str | os.PathLike,
    *,
    weights: Pretrained | None = None,
    dynamic: bool = False,
    logits: bool = False,
    opset: int = DEFAULT_OPSET,
    batch_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Export to ONNX at ``output`` and return its path.

    ``source`` is a :class:`ModelSource` or a model name (then ``weights`` as in
    :class:`effnet.predict.Classifier`: ``None`` = the default record, a record
    name, or a checkpoint file). The file appears only once complete.
    """
    _check_options(opset, batch_size)
    target = Path(output)
    if target.is_dir():
        raise EffnetError(f"ONNX output {target} is a directory; give a file name such as {target / 'model.onnx'}")
    _writable_dir(target.parent, "the ONNX model")
    source = _resolve(source, weights, progress)
    onnx = require("onnx", "onnx", "ONNX export")
    data = _onnx_bytes(
        _load_model(source),
        source.preprocess.input_size,
        dynamic=dynamic,
        logits=logits,
        opset=opset,
        batch_size=batch_size,
    )
    proto = _finish_onnx(data, onnx_metadata(source, logits=logits, dynamic=dynamic))
    _atomic_write(target, lambda tmp: onnx.save_model(proto, str(tmp)), "the ONNX model")
    return target


# --------------------------------------------------------------------------------------------
# OpenVINO
# --------------------------------------------------------------------------------------------


def _ov_model(source: ModelSource, batch_size: int | None) -> Any:
    """The card's converted model in memory: raw BGR 0-255 input, normalization inside, output ``prob``."""
    ov = require("openvino", "openvino", "OpenVINO export")
    from openvino.preprocess import PrePostProcessor

    p = source.preprocess
    data = _onnx_bytes(
        _load_model(source), p.input_size, dynamic=False, logits=False, opset=DEFAULT_OPSET, batch_size=batch_size
    )
    with tempfile.TemporaryDirectory(prefix="effnet-ov-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_path.write_bytes(data)
        model = ov.convert_model(str(onnx_path))
    ppp = PrePostProcessor(model)
    inp = ppp.input(INPUT_NAME)
    inp.tensor().set_element_type(ov.Type.f32).set_layout(ov.Layout("NCHW"))
    inp.model().set_layout(ov.Layout("NCHW"))
    steps = inp.preprocess()
    if p.channel_order == "RGB":
        steps.reverse_channels()  # the IR takes BGR, as OpenCV decodes; the network wants RGB
    # After the flip the channels are in the network's order, which is the order mean/std are given in.
    steps.mean(list(p.mean)).scale(list(p.std))
    ppp.output(OUTPUT_NAME).tensor().set_element_type(ov.Type.f32)
    model = ppp.build()
    model.set_friendly_name(source.model)
    labels = get_labels(source.record.labels if source.record else "imagenet-1k")
    info = {
        "model": source.model,
        "weights": _weights_name(source),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "layout": "NCHW",
        "channel_order": "BGR",
        "pixel_range": "0-255 (raw, mean/scale inside the graph)",
        "mean": json.dumps(list(p.mean)),
        "std": json.dumps(list(p.std)),
        "mean_std_order": p.channel_order,
        "input_size": str(p.input_size),
        "resize_size": str(p.resize_size),
        "interpolation": p.interpolation,
        "labels": json.dumps([c.label for c in labels]),
        "synsets": json.dumps([c.synset for c in labels]),
        "effnet_version": __version__,
    }
    for key, value in info.items():
        model.set_rt_info(value, ["effnet", key])
    return model


def export_openvino(
    source: ModelSource | str,
    output_dir: str | os.PathLike,
    *,
    weights: Pretrained | None = None,
    fp16: bool = False,
    batch_size: int | None = None,
    name: str | None = None,
    progress: bool = True,
) -> Path:
    """Export the OpenVINO IR (``NAME.xml`` + ``NAME.bin``) into ``output_dir``; return the xml path.

    ``name`` defaults to the model name. ``fp16`` stores FP16-compressed weights
    (the plugin still decides the execution precision).
    """
    _check_options(DEFAULT_OPSET, batch_size)
    directory = Path(output_dir)
    _writable_dir(directory, "the OpenVINO IR")
    source = _resolve(source, weights, progress)
    ov = require("openvino", "openvino", "OpenVINO export")
    stem = name or source.model
    if not stem or Path(stem).name != stem:
        raise EffnetError(f"IR name must be a plain file name, got {stem!r}")
    model = _ov_model(source, batch_size)
    try:
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".effnet-ir-"))
    except OSError as e:
        raise EffnetError(f"cannot write the OpenVINO IR to {directory}: {e.strerror or e}") from None
    xml = directory / f"{stem}.xml"
    try:
        ov.save_model(model, str(tmp / xml.name), compress_to_fp16=fp16)
        # The .bin first: the .xml is what readers open, so it must never point at an older .bin.
        os.replace(tmp / f"{stem}.bin", directory / f"{stem}.bin")
        os.replace(tmp / xml.name, xml)
    except (OSError, RuntimeError) as e:
        raise EffnetError(f"cannot write the OpenVINO IR {xml}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


# --------------------------------------------------------------------------------------------
# Cache of exported artifacts, for the backends
# --------------------------------------------------------------------------------------------


def exports_dir() -> Path:
    """``$EFFNET_HOME/exports`` (or the platform cache directory's ``exports``)."""
    from .weights.download import default_cache_dir

    return default_cache_dir() / "exports"


def _cache_key(kind: ExportKind, source: ModelSource, options: dict[str, Any]) -> dict[str, Any]:
    if source.record is not None:
        weights: dict[str, Any] = {"record": source.record.name, "sha256": source.record.sha256}
    elif source.checkpoint is None:
        raise ValueError("random-init sources have no cache key: their weights differ on every run")
    else:
        st = source.checkpoint.stat()
        # mtime + size instead of hashing: a re-saved checkpoint gets a new mtime, and hashing
        # hundreds of MB on every start would cost what the cache is there to save.
        weights = {"file": str(source.checkpoint.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    versions = {"effnet": __version__, "torch": torch.__version__}
    if kind == "openvino":
        versions["openvino"] = require("openvino", "openvino", "the openvino backend").__version__
    return {
        "kind": kind,
        "model": source.model,
        "weights": weights,
        "preprocess": source.preprocess.to_dict(),
        "options": options,
        "versions": versions,
    }


def _build(kind: ExportKind, source: ModelSource, directory: Path, options: dict[str, Any]) -> Path:
    if kind == "onnx":
        return export_onnx(source, directory / "model.onnx", progress=False, **options)
    return export_openvino(source, directory, name="model", progress=False, **options)


def _artifact(kind: ExportKind, directory: Path) -> Path:
    return directory / ("model.onnx" if kind == "onnx" else "model.xml")


@contextlib.contextmanager
def exported_artifact(
    kind: ExportKind, source: ModelSource, *, cache_dir: Path | None = None, **options: Any
) -> Iterator[Path]:
    """Yield the path of an export of ``source`` (``model.onnx`` or ``model.xml``), from the cache if present.

    The cache entry is a directory built under a temporary name and renamed into
    place in one step, so it is complete whenever it exists; concurrent builders
    both succeed and one result is kept. Random-init sources (no checkpoint) and
    unwritable caches get a temporary export, deleted when the block ends.
    """
    root = cache_dir or exports_dir()
    if source.checkpoint is not None:
        key = _cache_key(kind, source, options)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        entry = root / f"{source.model}-{kind}-{digest}"
        if _artifact(kind, entry).is_file():
            yield _artifact(kind, entry)
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
        except OSError as e:
            print(
                f"effnet: export cache {root} is not writable ({e.strerror or e}); exporting to a temporary directory",
                file=sys.stderr,
            )
        else:
            try:
                _build(kind, source, building, options)
                (building / "export.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
                try:
                    os.rename(building, entry)
                except OSError:
                    if not _artifact(kind, entry).is_file():  # not a lost race: a real failure
                        raise
            finally:
                shutil.rmtree(building, ignore_errors=True)
            yield _artifact(kind, entry)
            return
    with tempfile.TemporaryDirectory(prefix="effnet-export-") as tmp:
        yield _build(kind, source, Path(tmp), options)
