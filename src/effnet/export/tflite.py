"""TFLite / LiteRT export: the crop in (uint8 NHWC RGB), probabilities out, made with ``litert-torch``.

The graph takes exactly what the weights record's resize and crop give, so a phone or edge board feeds its
camera crop as it is: uint8 ``[1, S, S, 3]`` RGB, raw 0-255 values. Inside: cast to float, the record's
normalization, NHWC -> NCHW (the converter folds it into its own NHWC layout), the network with batch norm
folded, softmax. Precisions:

* ``fp32``: float everywhere.
* ``fp16``: float16 weights, float32 compute (ai-edge-quantizer's float-casting weight-only recipe: each
  weight is stored as fp16 and dequantized once when the interpreter prepares the graph): half the file,
  fp32 speed.
* ``int8``: full integer quantization with ``litert-torch``'s PT2E quantizer (static, per-channel symmetric
  weights, activations calibrated on ``--calibration`` images): every op, SiLU and the squeeze-excite gate
  included, runs in int8.
* ``int8-float-act``: int8 weights, dynamic-range (ai-edge-quantizer's ``dynamic_wi8_afp32``): convolutions
  quantize their input on the fly, and SiLU, sigmoid and the SE gate stay float.

Each file gets a sidecar ``NAME.json`` (the metadata of every effnet export, plus the input convention and
precision) that :func:`read_tflite_metadata` reads. The converter stack is the optional ``effnet[litert]``
extra; running a file needs only the runtime (``ai-edge-litert``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._optional import require
from ..errors import EffnetError
from ..fileio import atomic_write, writable_dir
from ..source import ModelSource
from ._common import OUTPUT_NAME, load_model, metadata
from .cache import cache_key, exports_dir, key_digest, locked_build_dir
from .cache_keys import calibration_record
from .graph import prepare_for_export

__all__ = [
    "PRECISIONS",
    "TFLITE_INPUT",
    "export_tflite",
    "read_tflite_metadata",
    "tflite_model_dir",
    "tflite_model_path",
    "cache_tflite",
]

PRECISIONS = ("fp32", "fp16", "int8", "int8-float-act")
TFLITE_INPUT = "pixels"
CONVERTER_EXTRA = "litert"
_FILE = "model.tflite"


class _CropToProbabilities(nn.Module):
    """uint8 NHWC raw RGB crop -> probabilities: the record's normalization in front of the export graph."""

    def __init__(self, source: ModelSource) -> None:
        super().__init__()
        p = source.preprocess
        if p.channel_order != "RGB":
            raise EffnetError(f"tflite export: the crop is RGB; this record's network takes {p.channel_order}")
        self.net = prepare_for_export(load_model(source))
        self.mean: torch.Tensor
        self.inv_std: torch.Tensor
        self.register_buffer("mean", torch.tensor(p.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(p.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32).permute(0, 3, 1, 2)
        return self.net((x - self.mean) * self.inv_std)


def tflite_metadata(source: ModelSource, precision: str) -> dict[str, Any]:
    """The sidecar of a ``.tflite``: effnet's export metadata and the input convention of this file."""
    size = source.preprocess.input_size
    return {
        **metadata(source, output=OUTPUT_NAME, artifact=f"tflite-{precision}"),
        "format": "tflite",
        "precision": precision,
        "input": TFLITE_INPUT,
        "input_dtype": "uint8",
        "input_shape": [1, size, size, 3],
        "layout": "NHWC",
        "channel_order": "RGB",
        "normalization": "inside the graph (raw 0-255 pixels in)",
        "output": OUTPUT_NAME,
    }


def read_tflite_metadata(path: Path) -> dict[str, Any]:
    """The sidecar ``NAME.json`` of an effnet ``.tflite`` ({} for a file made elsewhere)."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        raise EffnetError(f"cannot read the metadata {sidecar}: {e}") from None


def _calibration_batches(source: ModelSource, images: Sequence[Path]) -> Iterable[torch.Tensor]:
    """Each calibration image's crop and its mirror image: twice the activation statistics from the same
    files (on Lite0 with all 100 sample images it moved top-1 agreement from 97 % to 98 %, docs/export.md)."""
    from ..pipeline import iter_batches

    for batch in iter_batches(images, source.preprocess, batch_size=1):
        for d in batch.good:
            if d.crop is not None:
                yield torch.from_numpy(np.ascontiguousarray(d.crop[None]))
                yield torch.from_numpy(np.ascontiguousarray(d.crop[None, :, ::-1]))


def export_tflite(
    source: ModelSource,
    path: str | os.PathLike,
    *,
    precision: str = "fp32",
    calibration: Sequence[Path] | None = None,
) -> Path:
    """Write ``source`` as a ``.tflite`` file (and its ``.json`` sidecar) at ``path``; returns ``path``.

    ``int8`` needs ``calibration`` images (a few hundred are typical; ``../shared/imagenet/sample``'s 100
    work). Needs the converter: ``pip install 'effnet[litert]'``.
    """
    if precision not in PRECISIONS:
        raise EffnetError(f"tflite export: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and not calibration:
        raise EffnetError("tflite export: --precision int8 needs --calibration DIR (images to calibrate on)")
    litert_torch = require("litert_torch", CONVERTER_EXTRA, "the tflite export")
    target = Path(path)
    writable_dir(target.parent, "the tflite export")
    module = _CropToProbabilities(source).eval()
    size = source.preprocess.input_size
    sample = (torch.zeros(1, size, size, 3, dtype=torch.uint8),)
    try:
        edge = _convert(litert_torch, module, sample, precision, source, calibration or ())
    except EffnetError:
        raise
    except Exception as e:  # noqa: BLE001 - the converter raises many types; say which step failed
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EffnetError(f"tflite export of {source.model} ({precision}) failed: {type(e).__name__}: {first}") from e
    atomic_write(target, lambda tmp: edge.export(str(tmp)), "the tflite file")
    meta = tflite_metadata(source, precision)
    atomic_write(
        target.with_suffix(".json"),
        lambda tmp: _write_json(tmp, meta),
        "the tflite metadata",
    )
    return target


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _convert(
    litert_torch: Any,
    module: nn.Module,
    sample: tuple[torch.Tensor, ...],
    precision: str,
    source: ModelSource,
    calibration: Sequence[Path],
) -> Any:
    if precision == "fp32":
        return litert_torch.convert(module, sample)
    if precision in ("fp16", "int8-float-act"):
        # ai-edge-quantizer (installed with litert-torch) on the converted float model. int8-float-act: its
        # dynamic-range recipe: int8 weights; convolutions quantize their input on the fly; every other op
        # (SiLU's sigmoid and multiply, the SE gate, pooling, softmax) stays float. fp16: weight-only with its
        # FLOAT_CASTING algorithm (0.10 has no named float16 recipe; this is what its RecipeManager documents
        # for "weight-only quantization with fp16 weights").
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe, recipe_manager

        edge = litert_torch.convert(module, sample)
        if precision == "fp16":
            manager = recipe_manager.RecipeManager()
            manager.add_weight_only_config(
                regex=".*",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                num_bits=16,
                algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
            )
            rules = manager.get_quantization_recipe()
        else:
            rules = recipe.dynamic_wi8_afp32()
        result = quantizer.Quantizer(bytes(edge.model_content()), rules).quantize()
        return _Bytes(result.quantized_model)
    # Full int8: PT2E static quantization, calibrated on the crops of the calibration images.
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quant = _relu6_fusing_quantizer(pt2e_quantizer.PT2EQuantizer)().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    graph = torch.export.export(module, sample).module()
    prepared = prepare_pt2e(graph, quant)
    seen = 0
    with torch.no_grad():
        for crop in _calibration_batches(source, calibration):
            prepared(crop)
            seen += 1
    if not seen:
        raise EffnetError("tflite export: no calibration image could be read")
    converted = convert_pt2e(prepared, fold_quantize=False)
    return litert_torch.convert(converted, sample, quant_config=quant_config.QuantConfig(pt2e_quantizer=quant))


_CONVS = ("conv1d", "conv2d", "convolution")
_RELU6 = ("hardtanh", "hardtanh_")


def _relu6_fusing_quantizer(base: type) -> type:
    """litert-torch's PT2E quantizer, quantizing a convolution's output after its ReLU6, not before.

    litert-torch 0.10 fuses conv + ReLU into one quantized op but not conv + ReLU6 (``hardtanh``, what
    EfficientNet-Lite uses): the convolution's output got its own int8 scale over the whole pre-activation
    range, which the clamp to [0, 6] then shares, so most of the 256 levels went to values ReLU6 throws away.
    Annotated like conv + ReLU (weights and input on the convolution, the output after the clamp), TFLite
    gets CONV_2D with a fused RELU6 and one int8 output over [0, 6]. Measured on Lite0, calibrated on 20 sample
    images: top-1 agreement with fp32 on the other 80 from 73/80 to 77/80, on five views of each from
    361/400 to 390/400 (docs/export.md).
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class _Quantizer(base):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            config = self.global_config
            if config is not None and config.input_activation is not None:
                for node in model.graph.nodes:
                    conv = node.args[0] if node.op == "call_function" and node.args else None
                    if (
                        _aten_name(node) not in _RELU6
                        or not isinstance(conv, torch.fx.Node)
                        or _aten_name(conv) not in _CONVS
                        or len(conv.users) != 1
                        or "quantization_annotation" in conv.meta
                    ):
                        continue
                    x, weight = conv.args[0], conv.args[1]
                    if not isinstance(x, torch.fx.Node) or not isinstance(weight, torch.fx.Node):
                        continue
                    inputs = {x: config.input_activation, weight: config.weight}
                    conv.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map=inputs, _annotated=True
                    )
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        output_qspec=config.output_activation, _annotated=True
                    )
                    weight.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            return super().annotate(model)

    return _Quantizer


def _aten_name(node: torch.fx.Node) -> str:
    """``conv2d`` for ``torch.ops.aten.conv2d.default``; "" for anything not an aten call."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return ""
    return target.overloadpacket.__name__ if target.namespace == "aten" else ""


class _Bytes:
    """A converted model held as flatbuffer bytes, with the ``export(path)`` of litert-torch's models."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def export(self, path: str) -> None:
        Path(path).write_bytes(self.data)


def tflite_model_dir(source: ModelSource, precision: str, cache_dir: Path | None = None) -> Path:
    """The export-cache directory of ``source``'s ``.tflite`` at ``precision`` (it may not exist yet)."""
    if source.checkpoint is None:
        raise EffnetError("a .tflite of random-init weights has no cache entry: pass a checkpoint file (--weights)")
    key = cache_key("tflite", source, {"precision": precision})
    return (cache_dir or exports_dir()) / f"{source.model}-tflite-{precision}-{key_digest(key)}"


def tflite_model_path(source: ModelSource, precision: str, cache_dir: Path | None = None) -> Path:
    """The cached ``.tflite`` of ``source`` at ``precision``, or an error saying how to make it."""
    path = tflite_model_dir(source, precision, Path(cache_dir) if cache_dir else None) / _FILE
    if not path.is_file():
        weights = source.record.name if source.record else str(source.checkpoint)
        calibrate = " --calibration IMAGE_DIR" if precision == "int8" else ""
        raise EffnetError(
            f"no {precision} .tflite of {source.model} ({weights}) in the export cache ({path.parent}): create it "
            f"with `effnet export tflite --model {source.model} --weights {weights} --precision {precision}"
            f"{calibrate}` (needs pip install 'effnet[litert]'), or pass a .tflite made elsewhere as model_path"
        )
    return path


def converter_versions() -> dict[str, str | None]:
    """The versions of the packages that convert to ``.tflite`` (None: not installed here)."""
    found: dict[str, str | None] = {}
    for name in ("litert-torch", "ai-edge-litert"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def cache_tflite(
    source: ModelSource,
    made: Path,
    precision: str,
    cache_dir: Path | None = None,
    *,
    calibration: Sequence[Path] | None = None,
) -> Path:
    """Put an exported ``.tflite`` (and its sidecar) into the cache, complete or not at all; returns its path.

    The entry records the converter's versions and the calibration images beside its key. They are not
    in the entry's name: the runtime-only install that looks the file up (``--backend litert``) has no
    converter, so it could not compute them; a re-export (another converter, other calibration images)
    replaces the entry, and says so when the calibration changed.
    """
    entry = tflite_model_dir(source, precision, cache_dir)
    root = entry.parent
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key("tflite", source, {"precision": precision})
    key["versions"] = {**key["versions"], **converter_versions()}
    if calibration:
        key["calibration_set"] = calibration_record(calibration)
    with locked_build_dir(root) as building:
        shutil.copyfile(made, building / _FILE)
        shutil.copyfile(made.with_suffix(".json"), building / Path(_FILE).with_suffix(".json"))
        (building / "export.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        if entry.exists():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                before = json.loads((entry / "export.json").read_text()).get("calibration_set")
                if before and before != key.get("calibration_set"):
                    print(
                        f"effnet: note: replacing the {precision} .tflite in {entry} (calibrated on "
                        f"{before.get('images')} other images)",
                        file=sys.stderr,
                    )
            shutil.rmtree(entry)  # a re-export (new calibration) replaces the old entry
        os.rename(building, entry)
    return entry / _FILE
