"""Each PyTorch fast path against fp32 eager: BN folding, channels_last, torch.compile, bf16.

fp32 paths: max|delta logits| / max(1, max|logits|) < 1e-4 (see perf_helpers.max_rel_delta).
bf16: top-1 agreement with fp32 on Lite0's real weights over the 100 sample images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import effnet
from effnet.backends import create_backend
from effnet.errors import EffnetError
from effnet.optimize import (
    Bf16Model,
    InferenceConfig,
    bf16_supported,
    fold_batchnorm,
    optimize_for_inference,
    to_channels_last,
)
from tests.perf.perf_helpers import (
    EXAMPLES,
    calibrated_random_model,
    example_batch,
    fp32_margin,
    max_rel_delta,
    run_batches,
    tiny_model,
    top1_agreement,
)

needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bf16 (AVX512_BF16/AMX)")


def _input(size: int) -> torch.Tensor:
    return example_batch(size)


def _check_input_dependent(logits: torch.Tensor) -> None:
    # A comparison of two near-constant outputs would pass whatever the transform did.
    assert logits.abs().max() > 0.1 and (logits[0] - logits[1]).abs().max() > 0.1


def test_fold_batchnorm_removes_every_bn_and_keeps_outputs():
    model = tiny_model()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the input model must stay untouched"
    x = _input(64)
    with torch.inference_mode():
        ref, out = model(x), folded(x)
    _check_input_dependent(ref)
    assert max_rel_delta(out, ref) < 1e-4


def test_fold_batchnorm_at_another_size_uses_the_dynamic_same_path():
    model = tiny_model()
    x = _input(57)  # odd, not the declared 64: every SAME conv pads dynamically (SameConv2d.forward_dynamic)
    with torch.inference_mode():
        assert max_rel_delta(fold_batchnorm(model)(x), model(x)) < 1e-4


def test_fold_batchnorm_refuses_a_model_without_conv_bn_pairs():
    with pytest.raises(EffnetError, match="no conv"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_channels_last_keeps_outputs():
    model = tiny_model()
    fast = to_channels_last(fold_batchnorm(model))
    assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = _input(64)
    with torch.inference_mode():
        out = fast(x.contiguous(memory_format=torch.channels_last))
    with torch.inference_mode():
        assert max_rel_delta(out, model(x)) < 1e-4


@pytest.mark.slow
def test_fast_backend_matches_eager_on_b5(tmp_path):
    from effnet.source import resolve_source

    checkpoint = tmp_path / "b5.pth"
    torch.save(calibrated_random_model("efficientnet-b5", 456, affine=False).state_dict(), checkpoint)
    source = resolve_source("efficientnet-b5", checkpoint)
    pixels = np.stack(
        [np.asarray(Image.open(EXAMPLES / n).convert("RGB").resize((456, 456))) for n in ("chelsea.png", "coffee.png")]
    )
    eager = create_backend("torch", source)
    fast = create_backend("torch", source, fast=True)
    assert fast.describe()["bn_folded"] and fast.describe()["channels_last"]
    assert not eager.describe()["bn_folded"]
    ref = eager.logits(pixels)
    _check_input_dependent(ref)
    assert max_rel_delta(fast.logits(pixels), ref) < 1e-4


@pytest.mark.slow
def test_compiled_matches_eager():
    model = tiny_model()
    compiled = optimize_for_inference(model, InferenceConfig(compile=True))
    x = _input(64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out, ref = compiled(x), model(x)
    _check_input_dependent(ref)
    assert max_rel_delta(out, ref) < 1e-4


@needs_bf16
@pytest.mark.slow
def test_compiled_bf16_stays_close_to_fp32():
    """No real weights for a compile-sized model: a loose logits bound (bf16 has an 8-bit mantissa)."""
    model = tiny_model()
    compiled = optimize_for_inference(model, InferenceConfig(precision="bf16", compile=True))
    x = _input(64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out, ref = compiled(x), model(x)
    assert out.dtype == torch.float32  # the head runs fp32
    assert max_rel_delta(out, ref) < 0.15  # measured 0.07: bf16 rounding through 7 blocks
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_bf16_model_keeps_the_head_in_fp32():
    if not bf16_supported():
        with pytest.raises(EffnetError, match="native bfloat16"):
            Bf16Model(tiny_model())
        return
    m = Bf16Model(fold_batchnorm(tiny_model()))
    assert m.model.stages[0][0].depthwise.conv.weight.dtype == torch.bfloat16
    assert m.model.head.conv.weight.dtype == torch.float32
    assert m.model.classifier.weight.dtype == torch.float32


def test_torch_backend_rejects_unknown_precision(lite0_source):
    with pytest.raises(EffnetError, match="int8 runs on the openvino backend"):
        create_backend("torch", lite0_source, precision="int8")


@needs_bf16
def test_bf16_top1_agreement_on_lite0_real_weights(lite0_source, sample_crops, fp32_probs):
    """Measured: 98 of 100 (OpenVINO's own bf16 also gives 98). Every flip must be a close call in fp32."""
    backend = create_backend("torch", lite0_source, precision="bf16")
    assert backend.precision == "bf16"
    agreement, flips = top1_agreement(run_batches(backend, sample_crops), fp32_probs)
    assert agreement >= 0.98, f"top-1 agreement {agreement:.0%}, flipped images {flips}"
    assert all(fp32_margin(fp32_probs, i) < 0.05 for i in flips), (
        f"bf16 flipped a confident fp32 answer: {[(i, fp32_margin(fp32_probs, i)) for i in flips]}"
    )


def test_fast_backend_on_lite0_real_weights(lite0_source, sample_crops, fp32_probs):
    backend = create_backend("torch", lite0_source, fast=True)
    probs = run_batches(backend, sample_crops)
    assert np.abs(probs - fp32_probs).max() < 1e-4
    assert top1_agreement(probs, fp32_probs)[0] == 1.0


def test_default_torch_backend_is_plain_eager(lite0_source):
    backend = create_backend("torch", lite0_source)
    assert isinstance(backend.model, effnet.EfficientNet)
    assert any(isinstance(m, nn.BatchNorm2d) for m in backend.model.modules())
    assert backend.describe()["path"] == "fp32 eager"
