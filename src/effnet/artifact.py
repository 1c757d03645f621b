"""The one reader of what an exported artifact says about itself (``.onnx``, OpenVINO ``.xml``, ``.tflite``).

Every artifact effnet writes carries one description (the ``effnet`` entry of the ONNX ``metadata_props``,
of the IR's ``rt_info``, of the ``.tflite``'s sidecar ``NAME.json``; written by :mod:`effnet.export`): the
model and how it is built, the preprocessing, the labels, what the output is (``prob`` or ``logits``), the
weights' sha256 and the code that wrote it. :func:`effnet.source.resolve_source` reads it here for every
command, so a file is believed over a guess. Files from earlier effnet versions carry only flat keys (model,
mean/std, sizes, labels, output): they are read from those, with one note; files from elsewhere carry
nothing (:attr:`ArtifactInfo.info` is None).
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._optional import require
from .errors import EffnetError
from .labels import get_labels, imagenet_labels
from .weights.native import FORMAT as NATIVE_FORMAT
from .weights.native import NativeInfo
from .weights.preprocessing import Preprocess

__all__ = ["ARTIFACT_FORMAT", "ARTIFACT_SUFFIXES", "ArtifactInfo", "read_artifact_info", "artifact_metadata"]

ARTIFACT_FORMAT = "effnet.artifact/1"
ARTIFACT_SUFFIXES = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}


@dataclass(frozen=True)
class ArtifactInfo:
    """What a model file says about itself."""

    path: Path
    kind: str  # onnx, openvino, tflite
    info: NativeInfo | None  # model, preprocessing, labels, build; None: a file made elsewhere
    output: str | None  # "prob" or "logits"; None: the file does not say
    weights: str = ""  # the weights' name when it was written (a record, or file:NAME)
    weights_file_sha256: str | None = None  # sha256 of the checkpoint file it was exported from
    code_version: str | None = None
    effnet_version: str | None = None
    legacy: bool = False  # written by an earlier effnet: no weights sha256, no code version

    @property
    def described(self) -> bool:
        return self.info is not None


def artifact_metadata(path: Path) -> dict[str, Any]:
    """The raw key -> value metadata of a model file ({} when it carries none)."""
    kind = ARTIFACT_SUFFIXES.get(path.suffix.lower())
    if kind == "onnx":
        onnx = require("onnx", "onnx", "reading an ONNX file's metadata")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError, OSError...: all mean "not a readable ONNX file"
            raise EffnetError(f"cannot read the ONNX file {path}: {e}") from None
        return {p.key: p.value for p in proto.metadata_props}
    if kind == "openvino":
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as e:
            raise EffnetError(f"cannot read the OpenVINO IR {path}: {e}") from None
        node = root.find("rt_info/effnet")
        return {} if node is None else {child.tag: child.get("value", "") for child in node}
    if kind == "tflite":
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            return {}
        try:
            loaded = json.loads(sidecar.read_text())
        except (OSError, ValueError) as e:
            raise EffnetError(f"cannot read the metadata {sidecar}: {e}") from None
        return loaded if isinstance(loaded, dict) else {}
    raise EffnetError(_not_a_model_file(path))


_WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar", ".h5", ".keras")


def _not_a_model_file(path: Path) -> str:
    """The refusal of a file that is no model file, pointing a weights file to --weights."""
    hint = f": it is a weights file, pass it as --weights {path}" if path.suffix.lower() in _WEIGHTS_SUFFIXES else ""
    return f"{path}: not a model file effnet reads (.onnx, .xml, .tflite){hint}"


def _described(meta: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    raw = meta.get("effnet")
    if raw is None:
        return None
    try:
        obj = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != ARTIFACT_FORMAT:
        raise EffnetError(f"{where}: damaged effnet metadata (format {ARTIFACT_FORMAT!r} expected)")
    return obj


def _legacy_info(meta: Mapping[str, Any], where: str) -> NativeInfo:
    """The description of a file from an earlier effnet, rebuilt from its flat keys."""
    try:
        names = [str(n) for n in json.loads(meta["labels"])]
        order = meta.get("mean_std_order") or meta.get("channel_order") or "RGB"
        preprocess = Preprocess(
            input_size=int(meta["input_size"]),
            resize_size=int(meta["resize_size"]),
            interpolation=meta.get("interpolation", "bicubic"),
            mean=tuple(float(v) for v in json.loads(meta["mean"])),  # type: ignore[arg-type]
            std=tuple(float(v) for v in json.loads(meta["std"])),  # type: ignore[arg-type]
            channel_order="BGR" if order == "BGR" else "RGB",
        )
        imagenet = [c.label for c in imagenet_labels()]
        return NativeInfo(
            model=str(meta["model"]),
            preprocess=preprocess,
            labels="imagenet-1k" if names == imagenet else tuple(names),
            num_classes=len(names),
            source=str(meta.get("weights", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise EffnetError(f"{where}: damaged effnet metadata ({type(e).__name__}: {e})") from None


def read_artifact_info(path: str | Path) -> ArtifactInfo:
    """What the model file at ``path`` says about itself (see the module docstring)."""
    path = Path(path)
    kind = ARTIFACT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise EffnetError(_not_a_model_file(path))
    meta = artifact_metadata(path)
    obj = _described(meta, str(path))
    if obj is not None:
        info = NativeInfo.from_json({**obj, "format": NATIVE_FORMAT}, str(path))  # damage: CheckpointError
        digest = obj.get("labels_sha256")
        names = [c.label for c in get_labels(info.labels)]
        if digest is not None and hashlib.sha256(json.dumps(names).encode()).hexdigest() != digest:
            raise EffnetError(
                f"{path}: its description's {len(names)} labels do not match its labels_sha256 (edited or "
                "damaged metadata): export it again"
            )
        output = obj.get("output")
        if output not in ("prob", "logits"):
            raise EffnetError(f"{path}: damaged effnet metadata (output {output!r}, expected prob or logits)")
        return ArtifactInfo(
            path=path,
            kind=kind,
            info=info,
            output=output,
            weights=str(obj.get("source", "")),
            weights_file_sha256=obj.get("weights_file_sha256"),
            code_version=obj.get("code_version"),
            effnet_version=obj.get("effnet_version"),
        )
    if "model" in meta and "labels" in meta:
        output = meta.get("output")
        return ArtifactInfo(
            path=path,
            kind=kind,
            info=_legacy_info(meta, str(path)),
            output=output if output in ("prob", "logits") else None,
            weights=str(meta.get("weights", "")),
            effnet_version=meta.get("effnet_version"),
            legacy=True,
        )
    return ArtifactInfo(path=path, kind=kind, info=None, output=None)
