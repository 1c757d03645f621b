"""OpenVINO IR: the card's converted model (raw BGR input, normalization inside), parity with PyTorch (B5)."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.properties.hint as hints
import pytest

from effnet.errors import EffnetError
from effnet.export import export_openvino
from effnet.labels import imagenet_labels
from effnet.preprocess import load_image, resize_crop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def b5_ir(b5_ov) -> ov.Model:
    return ov.Core().read_model(str(b5_ov.model_path))


def test_ir_names_shapes_and_rt_info(b5_ir):
    (inp,), (out,) = b5_ir.inputs, b5_ir.outputs
    assert "data" in inp.get_names() and inp.get_element_type() == ov.Type.f32
    assert str(inp.get_partial_shape()) == "[?,3,456,456]"
    assert "prob" in out.get_names() and str(out.get_partial_shape()) == "[?,1000]"
    info = lambda key: b5_ir.get_rt_info(["effnet", key]).astype(str)  # noqa: E731
    assert info("channel_order") == "BGR" and info("input") == "data" and info("output") == "prob"
    assert json.loads(info("labels")) == [c.label for c in imagenet_labels()]
    ops = {op.get_type_name() for op in b5_ir.get_ordered_ops()}
    assert "BatchNormInference" not in ops and "Pad" not in ops


def test_ir_fed_raw_bgr_equals_pytorch_fed_normalized_rgb(b5_ir, b5_pixels, b5_reference):
    """No effnet code on the IR side: raw pixels, flipped to BGR, NCHW float, straight into OpenVINO."""
    compiled = ov.Core().compile_model(b5_ir, "CPU", {hints.inference_precision: ov.Type.f32})
    bgr = b5_pixels[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    probs = compiled(bgr)[compiled.output(0)]
    assert np.abs(probs - b5_reference["probs"]).max() < 1e-5
    # Fed RGB instead, the same IR gives other numbers: the channel flip really is inside.
    rgb = b5_pixels.transpose(0, 3, 1, 2).astype(np.float32)
    assert np.abs(compiled(rgb)[compiled.output(0)] - b5_reference["probs"]).max() > 1e-4


def test_openvino_backend_probabilities_match_pytorch(b5_ov, b5_pixels, b5_reference):
    assert b5_ov.precision == "fp32"  # set explicitly; this CPU would default to bf16
    probs = b5_ov(b5_pixels)
    assert probs.shape == (2, 1000) and probs.dtype == np.float32
    assert np.abs(probs - b5_reference["probs"]).max() < 1e-5


def test_fp16_weights_halve_the_bin_and_keep_the_answers(lite0_source, tmp_path, sample_images):
    from effnet.backends import create_backend

    # A dynamic batch: the answers below are computed in batches of 8.
    fp32 = export_openvino(lite0_source, tmp_path / "fp32", batch_size=None)
    fp16 = export_openvino(lite0_source, tmp_path / "fp16", fp16=True, name="lite0", batch_size=None)
    assert fp32.name == "efficientnet-lite0.xml" and fp16.name == "lite0.xml"
    assert sorted(p.name for p in (tmp_path / "fp16").iterdir()) == ["lite0.bin", "lite0.xml"]
    ratio = fp16.with_suffix(".bin").stat().st_size / fp32.with_suffix(".bin").stat().st_size
    assert 0.45 < ratio < 0.55
    ref = create_backend("openvino", lite0_source, model_path=fp32)
    half = create_backend("openvino", lite0_source, model_path=fp16)
    crops = np.stack([np.asarray(resize_crop(load_image(p), lite0_source.preprocess)) for p in sample_images[:8]])
    a, b = ref(crops), half(crops)
    assert (a.argmax(1) == b.argmax(1)).all()
    assert np.abs(a - b).max() < 1e-2


def test_unknown_precision_is_refused(lite0_source):
    from effnet.backends import create_backend

    with pytest.raises(EffnetError, match="precision must be one of"):
        create_backend("openvino", lite0_source, precision="fp8")
