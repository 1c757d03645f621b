"""Which lower-precision paths keep the fp32 model's answers: the accuracy status ``auto`` ranks by."""

from __future__ import annotations

__all__ = ["ACCURACY_GATE", "VERIFIED_ON", "accuracy_status"]

# A lower-precision path is verified when its top-1 agreement with the fp32 torch model on real weights
# (Lite0/1/2 on ../shared/imagenet/sample, images the quantizer did not calibrate on) is at least this: the
# gate of OpenVINO int8 (tests/perf/test_quantize.py) and of LiteRT (tests/export/test_litert.py).
ACCURACY_GATE = 0.97
# (backend, precision) -> the model families on which that gate was met. A path absent here is verified only
# at fp32 (parity tests) or not at all. Full-int8 LiteRT (litert-torch 0.10 PT2E, per-channel weights, 20
# calibration images) measured 91.25 % (73/80 held-out images) on Lite0, below the gate, so it is verified
# nowhere; and on B0-B7 it quantizes SiLU, sigmoid and the squeeze-excite gate too, which Lite (ReLU6, no SE)
# does not even exercise.
VERIFIED_ON: dict[tuple[str, str], tuple[str, ...]] = {
    ("openvino", "int8"): ("efficientnet-lite", "efficientnet-b"),  # NNCF keeps the SE gate in float
    ("litert", "int8-float-act"): (),  # dynamic range: 96.25 % (77/80) on Lite0, just below the gate
    ("litert", "int8"): (),
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
