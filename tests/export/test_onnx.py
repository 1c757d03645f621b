"""ONNX export: clean static graph, names and shapes, metadata, parity with PyTorch (B5), dynamic sizes."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import effnet
from effnet.errors import EffnetError
from effnet.export import export_onnx, prepare_for_export
from effnet.labels import imagenet_labels
from effnet.preprocess import normalize

pytestmark = pytest.mark.slow


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def b5_static(b5_ort) -> onnx.ModelProto:
    return onnx.load(str(b5_ort.model_path))


def test_static_graph_is_clean(b5_static):
    onnx.checker.check_model(b5_static, full_check=True)
    ops = Counter(n.op_type for n in b5_static.graph.node)
    assert "Pad" not in ops and "BatchNormalization" not in ops and "Identity" not in ops, ops
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in effnet.create_model("efficientnet-b5").modules())
    assert ops["Conv"] == convs == 194
    assert ops["Softmax"] == 1 and ops["Gemm"] == 1


def test_static_graph_has_tf_same_pads_in_the_convs(b5_static):
    """design.md: at 456 the strided convs pad (before, after) = (0,1), (0,1), (1,2), (1,1), (2,2)."""
    strided = []
    for node in b5_static.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and list(attrs["strides"]) == [2, 2]:
            strided.append((list(attrs["kernel_shape"]), list(attrs["pads"])))
    assert strided == [
        ([3, 3], [0, 0, 1, 1]),  # stem on 456
        ([3, 3], [0, 0, 1, 1]),  # dw k3 on 228
        ([5, 5], [1, 1, 2, 2]),  # dw k5 on 114
        ([3, 3], [1, 1, 1, 1]),  # dw k3 on 57
        ([5, 5], [2, 2, 2, 2]),  # dw k5 on 29
    ]


def test_names_and_shapes_are_data_and_prob(b5_static):
    (inp,), (out,) = b5_static.graph.input, b5_static.graph.output
    assert inp.name == "data" and _dims(inp) == ["batch", 3, 456, 456]
    assert out.name == "prob" and _dims(out) == ["batch", 1000]
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_metadata_describes_preprocessing_and_labels(b5_static, b5_checkpoint, b5_source):
    meta = {p.key: p.value for p in b5_static.metadata_props}
    assert meta["model"] == "efficientnet-b5"
    assert meta["weights"] == b5_checkpoint.name
    assert meta["channel_order"] == "RGB" and meta["layout"] == "NCHW"
    assert json.loads(meta["mean"]) == list(b5_source.preprocess.mean)
    assert json.loads(meta["std"]) == list(b5_source.preprocess.std)
    assert int(meta["input_size"]) == 456 and meta["output"] == "prob"
    labels = json.loads(meta["labels"])
    assert labels == [c.label for c in imagenet_labels()]
    assert json.loads(meta["synsets"])[0] == "n01440764"


def test_onnxruntime_probabilities_match_pytorch(b5_ort, b5_pixels, b5_reference):
    probs = b5_ort(b5_pixels)
    assert probs.shape == (2, 1000) and probs.dtype == np.float32
    assert np.abs(probs - b5_reference["probs"]).max() < 1e-5
    assert (probs.argmax(1) == b5_reference["probs"].argmax(1)).all()


def test_dynamic_export_is_correct_at_456_380_224(b5_source, b5_torch, tmp_path):
    path = export_onnx(b5_source, tmp_path / "b5_dynamic.onnx", dynamic=True, batch_size=None, logits=True)
    proto = onnx.load(str(path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert _dims(inp) == ["batch", 3, "height", "width"] and out.name == "logits"
    ops = Counter(n.op_type for n in proto.graph.node)
    # Only the size-dependent (strided) convs need in-graph pads; BN is still folded.
    assert ops["Pad"] == 5 and "BatchNormalization" not in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for size in (456, 380, 224):
        pixels = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        x = normalize(pixels[0], b5_source.preprocess)[None]
        with torch.inference_mode():
            ref = b5_torch.model(torch.from_numpy(x)).numpy()
        (logits,) = session.run(None, {"data": x})
        assert logits.shape == (1, 1000)
        assert np.abs(logits - ref).max() < 1e-3, size


def test_prepare_for_export_leaves_the_model_untouched():
    model = effnet.create_model("efficientnet-lite0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exportable = prepare_for_export(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in exportable.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_lower_opset_and_fixed_batch(lite0_source, tmp_path):
    path = export_onnx(lite0_source, tmp_path / "lite0.onnx", opset=13, batch_size=1)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 13
    assert _dims(proto.graph.input[0]) == [1, 3, 224, 224]
    assert "Pad" not in Counter(n.op_type for n in proto.graph.node)


@pytest.mark.parametrize("opset", [12, 99])
def test_unsupported_opset_is_refused_before_any_work(lite0_source, tmp_path, opset):
    with pytest.raises(EffnetError, match="opset must be between"):
        export_onnx(lite0_source, tmp_path / "x.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []
