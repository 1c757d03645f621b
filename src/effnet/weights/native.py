"""effnet-native checkpoints: safetensors whose metadata carries everything a weights record carries.

A file written by :func:`save_native` needs no other input to be used: the model name, how to build it
(padding, BN eps, number of classes), the eval preprocessing and the class names travel in the safetensors
header (``__metadata__["effnet"]``, a JSON object). `effnet weights convert` and `effnet train` write this
format; :func:`read_native_info` reads only the header, so identifying a file costs no tensor reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import CheckpointError
from ..fileio import atomic_write
from .records import Preprocess, WeightsRecord

__all__ = ["METADATA_KEY", "FORMAT", "NativeInfo", "save_native", "read_native_info", "tensors_sha256", "check_tensors"]

METADATA_KEY = "effnet"
FORMAT = "effnet.native/1"


@dataclass(frozen=True)
class NativeInfo:
    """What an effnet-native file says about its tensors."""

    model: str  # effnet model name, e.g. "efficientnet-lite0"
    preprocess: Preprocess
    labels: str | tuple[str, ...] = "imagenet-1k"  # a label-set name, or the class names in index order
    num_classes: int = 1000
    padding: Literal["same", "symmetric"] = "same"
    bn_eps: float = 1e-3
    source: str = ""  # provenance: the record name or file the tensors came from
    # sha256 of the tensors themselves (:func:`tensors_sha256`): set by save_native, checked by
    # effnet.weights.load when the file is read. Empty in files written before it existed.
    weights_sha256: str = ""
    temperature: float = 1.0  # softmax temperature fitted after training (logits / T); loaders apply it
    # The stage whose pooled output the classifier reads, the network cut after it (effnet train's linear
    # probe may choose one); None: the whole network with its head convolution.
    embedding_stage: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)  # free-form (training run, epoch...)

    def __post_init__(self) -> None:
        if not isinstance(self.labels, str) and len(self.labels) != self.num_classes:
            raise CheckpointError(f"{len(self.labels)} class names for {self.num_classes} classes: they must match")

    def to_json(self) -> dict[str, Any]:
        p = self.preprocess
        return {
            "format": FORMAT,
            "model": self.model,
            "num_classes": self.num_classes,
            "labels": self.labels if isinstance(self.labels, str) else list(self.labels),
            "padding": self.padding,
            "bn_eps": self.bn_eps,
            "preprocess": {
                "input_size": p.input_size,
                "resize_size": p.resize_size,
                "interpolation": p.interpolation,
                "mean": list(p.mean),
                "std": list(p.std),
                "channel_order": p.channel_order,
            },
            "source": self.source,
            "weights_sha256": self.weights_sha256,
            "temperature": self.temperature,
            "embedding_stage": self.embedding_stage,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> NativeInfo:
        if obj.get("format") != FORMAT:
            raise CheckpointError(f"{where}: effnet metadata format {obj.get('format')!r}, expected {FORMAT!r}")
        try:
            pp = obj["preprocess"]
            preprocess = Preprocess(
                input_size=int(pp["input_size"]),
                resize_size=int(pp["resize_size"]),
                interpolation=pp["interpolation"],
                mean=tuple(float(v) for v in pp["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in pp["std"]),  # type: ignore[arg-type]
                channel_order=pp["channel_order"],
            )
            labels = obj["labels"]
            return cls(
                model=str(obj["model"]),
                preprocess=preprocess,
                labels=labels if isinstance(labels, str) else tuple(str(v) for v in labels),
                num_classes=int(obj["num_classes"]),
                padding=obj["padding"],
                bn_eps=float(obj["bn_eps"]),
                source=str(obj.get("source", "")),
                weights_sha256=str(obj.get("weights_sha256", "")),
                temperature=float(obj.get("temperature", 1.0)),
                embedding_stage=None if obj.get("embedding_stage") is None else int(obj["embedding_stage"]),
                extra=dict(obj.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: damaged effnet metadata ({type(e).__name__}: {e})") from None

    def to_record(self, path: Path) -> WeightsRecord:
        """A record for this local file, so everything downstream reads one kind of object."""
        return WeightsRecord(
            name=f"file:{path.name}",
            model=self.model,
            filename=path.name,
            sha256="",
            size=None,
            key_format="effnet",
            preprocess=self.preprocess,
            file_format="safetensors",
            labels=self.labels,
            num_classes=self.num_classes,
            padding=self.padding,
            bn_eps=self.bn_eps,
            weights_sha256=self.weights_sha256,
            temperature=self.temperature,
            embedding_stage=self.embedding_stage,
            notes=f"effnet-native file (from {self.source})" if self.source else "effnet-native file",
        )


def save_native(state: Mapping[str, torch.Tensor], path: str | os.PathLike, info: NativeInfo) -> Path:
    """Write ``state`` (effnet key names) and ``info`` to ``path``, atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    target = Path(path)
    if target.suffix != ".safetensors":
        raise CheckpointError(f"effnet-native files end in .safetensors, got {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; a state dict may hold views.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    info = replace(info, weights_sha256=tensors_sha256(tensors))
    metadata = {METADATA_KEY: json.dumps(info.to_json(), sort_keys=True)}
    # The shared writer: temp file + rename, and a mode that follows the umask (mkstemp's 0600 did not).
    atomic_write(target, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), "the checkpoint")
    return target


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """The sha256 of a state dict's content: each tensor's name, dtype, shape and bytes, in name order.

    Independent of the file's layout and metadata, so a file can carry the digest of its own weights.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def check_tensors(state: Mapping[str, torch.Tensor], info: NativeInfo, where: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has the sha256 its metadata recorded (none recorded: pass)."""
    if not info.weights_sha256:
        return
    actual = tensors_sha256(state)
    if actual != info.weights_sha256:
        raise CheckpointError(
            f"{where}: its tensors have sha256 {actual[:16]}..., but its effnet metadata records "
            f"{info.weights_sha256[:16]}...: the weights were changed after the file was written, or it is damaged"
        )


def read_native_info(path: str | os.PathLike) -> NativeInfo | None:
    """The effnet metadata of a ``.safetensors`` file, or None for any other file (or one without it)."""
    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors header of {p}: {e}") from None
    text = meta.get(METADATA_KEY)
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: effnet metadata is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: effnet metadata is not a JSON object")
    return NativeInfo.from_json(obj, str(p))
