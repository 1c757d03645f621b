"""Export an EfficientNet to ONNX and to the OpenVINO "converted model", and cache the exports.

Two artifacts, as on the Open Model Zoo card:

* **ONNX** (:func:`export_onnx`, :mod:`effnet.export.onnx`): normalized RGB input ``data``, output ``prob``;
  TF SAME pads inside the Conv ``pads`` attribute, batch norm folded.
* **OpenVINO IR** (:func:`export_openvino`, :mod:`effnet.export.openvino`): raw BGR 0-255 input with the
  channel flip, mean and scale folded into the graph.

Both have a static 1x3xHxW input by default, like the card's model, so tools that take a file
(benchmark_app, OVMS) run them as they are; a dynamic batch is an option. Backends use
:func:`exported_artifact` (:mod:`effnet.export.cache`), which caches exports with a dynamic batch under
``$EFFNET_HOME/exports/``.
"""

from ._common import DEFAULT_OPSET, INPUT_NAME, LOGITS_NAME, MIN_OPSET, OUTPUT_NAME, ExportKind, metadata
from .cache import exported_artifact, exports_dir, int8_model_dir, int8_model_path
from .graph import prepare_for_export
from .onnx import MAX_OPSET, export_onnx, onnx_metadata
from .openvino import export_openvino

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "MAX_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "LOGITS_NAME",
    "ExportKind",
    "prepare_for_export",
    "onnx_metadata",
    "metadata",
    "export_onnx",
    "export_openvino",
    "exported_artifact",
    "exports_dir",
    "int8_model_dir",
    "int8_model_path",
]
