"""The OpenVINO IR, the card's "converted model": the ONNX network with input ``data`` taking raw 0-255
pixel values in **BGR** order; the channel flip, mean and scale are folded into the graph with
``PrePostProcessor``. Output ``prob``; FP32 weights, or FP16-compressed ones. Static batch 1 by default,
as on the card; ``batch_size=None`` for a dynamic batch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import EffnetError
from ..factory import Pretrained
from ..fileio import new_output_dir, write_error
from ..source import ModelSource
from ._common import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, check_batch, load_model, metadata, resolve
from .onnx import onnx_bytes

__all__ = ["export_openvino", "write_ir"]


def ov_model(source: ModelSource, batch_size: int | None) -> Any:
    """The card's converted model in memory: raw BGR 0-255 input, normalization inside, output ``prob``."""
    ov = require("openvino", "openvino", "OpenVINO export")
    from openvino.preprocess import PrePostProcessor

    p = source.preprocess
    data = onnx_bytes(
        load_model(source), p.input_size, dynamic=False, logits=False, opset=DEFAULT_OPSET, batch_size=batch_size
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
    info = {
        **metadata(source, output=OUTPUT_NAME, artifact="openvino"),
        "output": OUTPUT_NAME,
        "channel_order": "BGR",
        "pixel_range": "0-255 (raw, mean/scale inside the graph)",
        "mean_std_order": p.channel_order,
    }
    for key, value in info.items():
        model.set_rt_info(value, ["effnet", key])
    return model


def _ir_bytes(model: Any, fp16: bool) -> int:
    """About how many bytes the IR's .bin takes: its constants (halved when compressed to FP16)."""
    total = sum(op.get_byte_size() for op in model.get_ordered_ops() if op.get_type_name() == "Constant")
    return total // 2 if fp16 else total


def write_ir(
    model: Any, directory: Path, stem: str, *, fp16: bool = False, extra: dict[str, str] | None = None
) -> Path:
    """Save ``model`` as ``directory/STEM.xml`` + ``.bin`` (and ``extra`` text files) next to whatever else is
    there; return the xml path.

    Each file is written under a temporary folder in ``directory`` and renamed into place, the .bin before
    the .xml (readers open the .xml, so it must never point at an older .bin), so each file is old or new,
    never partial; other files in ``directory`` are left alone. ``directory`` must exist.
    """
    ov = require("openvino", "openvino", "OpenVINO export")
    xml = directory / f"{stem}.xml"
    try:
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".effnet-ir-"))
    except OSError as e:
        raise write_error(e, directory, "the OpenVINO IR to") from None
    try:
        ov.save_model(model, str(tmp / xml.name), compress_to_fp16=fp16)
        names = [f"{stem}.bin", xml.name]
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
            names.insert(1, name)
        for name in names:  # files made by open(): their mode follows the umask, unlike the 0700 folder
            os.replace(tmp / name, directory / name)
    except (OSError, RuntimeError) as e:
        # OpenVINO's writer reports a full disk as "basic_ios::clear: iostream error"; write_error says why.
        raise write_error(e, xml, "the OpenVINO IR", needed=_ir_bytes(model, fp16)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def export_openvino(
    source: ModelSource | str,
    output_dir: str | os.PathLike,
    *,
    weights: Pretrained | None = None,
    fp16: bool = False,
    batch_size: int | None = 1,
    name: str | None = None,
    progress: bool = True,
) -> Path:
    """Export the OpenVINO IR (``NAME.xml`` + ``NAME.bin``) into ``output_dir``; return the xml path.

    ``name`` defaults to the model name. ``fp16`` stores FP16-compressed weights
    (the plugin still decides the execution precision). Other files in ``output_dir`` are kept; a failed
    export leaves no folder it created behind.
    """
    check_batch(batch_size)
    if name is not None and (not name or Path(name).name != name):
        raise EffnetError(f"IR name must be a plain file name, got {name!r}")
    with new_output_dir(output_dir, "the OpenVINO IR") as directory:
        source = resolve(source, weights, progress)
        model = ov_model(source, batch_size)
        return write_ir(model, directory, name or source.model, fp16=fp16)
