"""INT8 post-training quantization of the OpenVINO IR with NNCF.

The fp32 IR of :func:`effnet.export.exported_artifact` (raw BGR 0-255 input, normalization inside) is
calibrated on real images that go through the weights record's own resize and crop, then saved as
an INT8 IR. ``effnet bench/classify --backend openvino --precision int8`` load it from the export
cache (:func:`int8_model_path`) or from an explicit path.

NNCF settings, and why (NNCF ``nncf.quantize`` docs, its OpenVINO ignored patterns):

- ``model_type=None``: EfficientNet is a CNN. ``ModelType.TRANSFORMER`` adds attention/LayerNorm
  patterns and the ``mixed`` preset that only make sense for transformers.
- ``preset=PERFORMANCE``: symmetric int8 weights and activations, which the CPU's VNNI kernels take
  without zero-point compensation. SiLU outputs have a small negative tail (min -0.28); symmetric
  signed activations cover it.
- Squeeze-excite: NNCF's built-in ``SE_BLOCK`` ignored pattern keeps the ReduceMean -> 1x1 conv ->
  SiLU -> 1x1 conv -> Sigmoid -> Multiply gate out of quantization (a [N, C, 1, 1] gate gains
  nothing from int8 and its sigmoid is sensitive), so the gate and the multiply stay in bf16/fp32.
  Nothing needs to be listed by hand; ``ignored_patterns`` / ``ignored_types`` add more if a model
  shows an accuracy drop.
- ``fast_bias_correction=True`` (default): shifts each quantized conv's bias to undo the mean error
  that int8 weights introduce; the slower full bias correction gave no better agreement here.
- ``subset_size``: 300 calibration images by default, as NNCF recommends; fewer if the folder has fewer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import require
from .errors import EffnetError, ImageError
from .export import OUTPUT_NAME, metadata
from .export.cache import INT8_XML, exported_artifact, int8_cache_key, int8_model_dir
from .export.cache_keys import calibration_record
from .export.openvino import write_ir
from .fileio import new_output_dir
from .files import find_images
from .pipeline import decode_crop
from .source import ModelSource
from .weights.records import Preprocess

DEFAULT_SUBSET_SIZE = 300


@dataclass
class QuantizeReport:
    """What :func:`quantize_openvino` did: where the IR is, what calibrated it, what stayed in float."""

    path: Path
    calibration_images: int
    skipped_images: list[str]
    subset_size: int
    seconds: float
    quantized_ops: dict[str, int] = field(default_factory=dict)
    float_ops: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def calibration_crops(images: Sequence[Path], preprocess: Preprocess, limit: int) -> tuple[list[np.ndarray], list[str]]:
    """Up to ``limit`` uint8 HWC RGB crops, spread evenly over ``images`` (sorted folders group classes).

    Unreadable files are skipped and returned by name, so a stray file does not stop a calibration.
    """
    if limit < 1:
        raise EffnetError(f"calibration subset size must be >= 1, got {limit}")
    if len(images) > limit:
        picks = np.linspace(0, len(images) - 1, limit).round().astype(int)
        images = [images[i] for i in sorted(set(picks.tolist()))]
    crops, skipped = [], []
    for path in images:
        try:
            crops.append(decode_crop(path, preprocess))
        except ImageError as e:
            skipped.append(str(e))
    return crops, skipped


def _op_precisions(model: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Count convolution-like ops whose input is quantized (FakeQuantize feeds them) and those that are not."""
    quantized: Counter[str] = Counter()
    floating: Counter[str] = Counter()
    compute = {"Convolution", "GroupConvolution", "MatMul"}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in compute:
            continue
        src = op.input_value(0).get_node()
        # GroupConvolution's 1x1 SE convs read a [N, C, 1, 1] tensor: report them apart from the big ones.
        name = (
            f"{kind} (SE 1x1)"
            if tuple(op.get_input_partial_shape(0).get_min_shape()[2:]) == (1, 1) and kind == "Convolution"
            else kind
        )
        (quantized if src.get_type_name() == "FakeQuantize" else floating)[name] += 1
    return dict(quantized), dict(floating)


def quantize_openvino(
    source: ModelSource,
    calibration: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    output_dir: str | os.PathLike | None = None,
    cache_dir: Path | None = None,
    ignored_patterns: Sequence[str] = (),
    ignored_types: Sequence[str] = (),
    fast_bias_correction: bool = True,
) -> QuantizeReport:
    """Quantize ``source``'s OpenVINO IR to INT8 with NNCF, calibrated on images from ``calibration``.

    ``calibration`` is a folder (searched recursively) or a list of image files. The INT8 IR goes
    to ``output_dir`` if given, else to the export cache where ``--precision int8`` finds it.
    """
    ov = require("openvino", "quantize", "INT8 quantization")
    nncf = require("nncf", "quantize", "INT8 quantization")
    from .backends.openvino_backend import bgr_nchw

    paths = [calibration] if isinstance(calibration, (str, os.PathLike)) else list(calibration)
    for p in paths:
        if not Path(p).exists():
            raise EffnetError(f"calibration path {p} does not exist")
    images = find_images(paths)
    if not images:
        raise EffnetError(f"no images found for calibration in {', '.join(map(str, paths))}")
    crops, skipped = calibration_crops(images, source.preprocess, subset_size)
    if not crops:
        raise EffnetError(f"none of the {len(images)} calibration images could be read; first error: {skipped[0]}")
    target = Path(output_dir) if output_dir is not None else int8_model_dir(source, cache_dir)
    if target.exists() and not target.is_dir():
        raise EffnetError(f"INT8 output {target} exists and is not a directory")
    hint = "" if output_dir is not None else " (the export cache; pass -o DIR to write the INT8 IR elsewhere)"
    # Writability is proven now, not after minutes of calibration; a folder made here goes if the work fails.
    with new_output_dir(target, "the INT8 IR", hint) as directory:
        start = time.perf_counter()
        with exported_artifact("openvino", source, cache_dir=cache_dir) as fp32_xml:
            model = ov.Core().read_model(str(fp32_xml))
        ignored = None
        if ignored_patterns or ignored_types:
            ignored = nncf.IgnoredScope(patterns=list(ignored_patterns), types=list(ignored_types), validate=False)
        dataset = nncf.Dataset(crops, lambda crop: bgr_nchw(crop[None]))
        settings = {
            "preset": "performance",
            "model_type": None,
            "target_device": "CPU",
            "fast_bias_correction": fast_bias_correction,
            "ignored_patterns": list(ignored_patterns),
            "ignored_types": list(ignored_types),
            "se_blocks": "kept in float by NNCF's SE_BLOCK ignored pattern",
            "nncf": nncf.__version__,
            "openvino": ov.__version__,
        }
        try:
            # NNCF's progress bars print to stdout; keep stdout for the caller's results (--json).
            with contextlib.redirect_stdout(sys.stderr):
                quantized = nncf.quantize(
                    model,
                    dataset,
                    preset=nncf.QuantizationPreset.PERFORMANCE,
                    target_device=nncf.TargetDevice.CPU,
                    subset_size=len(crops),
                    fast_bias_correction=fast_bias_correction,
                    model_type=None,
                    ignored_scope=ignored,
                )
        except (RuntimeError, ValueError, nncf.ValidationError) as e:
            raise EffnetError(f"NNCF quantization of {source.model} failed: {e}") from None
        quantized_ops, float_ops = _op_precisions(quantized)
        calibrated = calibration_record(images)
        # The IR describes itself as every export does (effnet.artifact reads it), as the int8 kind, and says
        # which images calibrated it.
        for key, value in metadata(source, output=OUTPUT_NAME, artifact="openvino-int8").items():
            quantized.set_rt_info(value, ["effnet", key])
        quantized.set_rt_info(json.dumps(calibrated, sort_keys=True), ["effnet", "calibration"])
        _say_if_replaced(directory / "quantize.json", calibrated)
        info = {
            "model": source.model,
            "weights": source.record.name if source.record else str(source.checkpoint or "random-init"),
            "calibration": [str(p) for p in paths],
            "calibration_images": len(crops),
            "calibration_set": calibrated,
            "skipped": skipped,
            "settings": settings,
            "quantized_ops": quantized_ops,
            "float_ops": float_ops,
        }
        if output_dir is None:  # a cache entry: its key, for `effnet weights cache list`
            info["cache_key"] = int8_cache_key(source)
            info["checkpoint"] = str(source.checkpoint)
        # Beside whatever else is in the folder, as `export openvino -o DIR` does: nothing else is touched.
        text = json.dumps(info, indent=2, sort_keys=True) + "\n"
        xml = write_ir(quantized, directory, Path(INT8_XML).stem, extra={"quantize.json": text})
    return QuantizeReport(
        xml, len(crops), skipped, subset_size, time.perf_counter() - start, quantized_ops, float_ops, settings
    )


def _say_if_replaced(info_file: Path, calibrated: dict[str, Any]) -> None:
    """One INT8 model per weights and code: quantizing again with other images replaces it, and says so."""
    try:
        before = json.loads(info_file.read_text()).get("calibration_set")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(before, dict) and before.get("sha256") != calibrated["sha256"]:
        print(
            f"effnet: note: replacing the INT8 model in {info_file.parent} (calibrated on {before.get('images')} "
            f"other images) with this one (calibrated on {calibrated['images']} images)",
            file=sys.stderr,
        )


def print_skipped(report: QuantizeReport) -> None:
    for message in report.skipped_images:
        print(f"effnet: calibration image skipped: {message}", file=sys.stderr)
