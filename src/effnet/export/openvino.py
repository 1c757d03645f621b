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
from ..source import ModelSource
from ._common import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, check_batch, load_model, metadata, resolve, writable_dir
from .onnx import onnx_bytes

__all__ = ["export_openvino"]


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
        **metadata(source),
        "output": OUTPUT_NAME,
        "channel_order": "BGR",
        "pixel_range": "0-255 (raw, mean/scale inside the graph)",
        "mean_std_order": p.channel_order,
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
    batch_size: int | None = 1,
    name: str | None = None,
    progress: bool = True,
) -> Path:
    """Export the OpenVINO IR (``NAME.xml`` + ``NAME.bin``) into ``output_dir``; return the xml path.

    ``name`` defaults to the model name. ``fp16`` stores FP16-compressed weights
    (the plugin still decides the execution precision).
    """
    check_batch(batch_size)
    directory = Path(output_dir)
    writable_dir(directory, "the OpenVINO IR")
    source = resolve(source, weights, progress)
    ov = require("openvino", "openvino", "OpenVINO export")
    stem = name or source.model
    if not stem or Path(stem).name != stem:
        raise EffnetError(f"IR name must be a plain file name, got {stem!r}")
    model = ov_model(source, batch_size)
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
