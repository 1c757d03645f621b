"""Which lower-precision paths keep the fp32 model's answers: the accuracy status ``auto`` ranks by."""

from __future__ import annotations

__all__ = ["ACCURACY_GATE", "VERIFIED_ON", "accuracy_status"]

# A lower-precision path is verified when its top-1 agreement with the fp32 torch model on real weights is at
# least this: the gate of OpenVINO int8 (tests/perf/test_quantize.py) and of LiteRT (tests/litert_convert).
ACCURACY_GATE = 0.97
# (backend, precision) -> the models (or model-name prefixes) on which that gate was met. A path absent here is
# verified only at fp32 (parity tests) or not at all.
#
# LiteRT (litert-torch 0.10, ai-edge-quantizer 0.10; benchmarks/litert_agreement.py, docs/export.md): met on
# both of issue 22's sets: the 100 sample images after calibrating on the same 100 (its "done when"), and the
# larger set, five views of each of the 80 sample images left out of calibration (calibrated on
# sample[1::5]). On the 80 eval crops alone every int8-weight path, weight-only included, stays at 77/80
# (96.25 %) on Lite0: it flips the same three images (17, 23, 84), on which fp32's top two classes are
# 0.5-7.5 points apart. Lite3/4 have no real weights here, and B0-B7 quantize SiLU, sigmoid and the
# squeeze-excite gate too, which Lite (ReLU6, no SE) does not exercise: unverified.
_LITE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
VERIFIED_ON: dict[tuple[str, str], tuple[str, ...]] = {
    ("openvino", "int8"): ("efficientnet-lite", "efficientnet-b"),  # NNCF keeps the SE gate in float
    # full int8, conv + ReLU6 as one quantized op: done when / views: Lite0 97/100, 390/400; Lite1 98/100,
    # 395/400; Lite2 99/100, 396/400
    ("litert", "int8"): _LITE,
    # dynamic range (no calibration): Lite0 97/100 and 487/500, Lite1 98/100 and 489/500, Lite2 99/100, 495/500
    ("litert", "int8-float-act"): _LITE,
    ("litert", "fp16"): _LITE,  # fp16 weights: 100/100 and 500/500 on each
}


def accuracy_status(model: str, backend: str, precision: str) -> str:
    """``verified``, or ``unverified`` with why, for ``backend`` at ``precision`` on ``model``."""
    if precision == "fp32":
        return "verified"
    families = VERIFIED_ON.get((backend, precision))
    if families is None:
        return "verified" if precision in ("bf16", "fp16") and backend != "litert" else "unverified"
    if any(model.startswith(f) for f in families):
        return "verified"
    where = f"was met on {', '.join(families)} only" if families else "was not met (docs/performance.md)"
    return f"unverified for this model (top-1 agreement with fp32 >= {ACCURACY_GATE:.0%} {where}; opt-in only)"
