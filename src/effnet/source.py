"""What a model run is made of: the model, its weights record, the checkpoint file, its preprocessing.

:class:`ModelSource` is resolved once (:func:`resolve_source`) and handed to every consumer — backends,
exports, quantization, the server, Ray workers — so that none of them re-derives a number the record
already holds (input size, resize, mean/std, padding, BN eps, class names).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .artifact import ARTIFACT_SUFFIXES, ArtifactInfo, read_artifact_info
from .errors import CheckpointError, EffnetError
from .factory import Pretrained, default_preprocess, resolve_weights
from .labels import ClassLabel, get_labels
from .specs import get_variant
from .weights.digest import file_sha256
from .weights.records import Preprocess, WeightsRecord, fetch, find_record, match_record

if TYPE_CHECKING:  # pragma: no cover
    from .model import EfficientNet

__all__ = [
    "ModelSource",
    "resolve_source",
    "identify_record",
    "read_checkpoint",
    "weights_label",
    "labels_of",
    "OUTPUT_KINDS",
    "note_once",
    "OutputKindError",
    "is_distribution",
]

# What a model file's output rows are: probabilities, logits (soft-maxed by effnet, and said), or not
# known (a file from elsewhere without --output-kind: one probe forward pass decides, or refuses).
OUTPUT_KINDS = ("prob", "logits")

RANDOM_INIT = "random-init"


class OutputKindError(EffnetError):
    """A model file's rows are not what its metadata or --output-kind says (the load-time probe names the file)."""


def is_distribution(rows: np.ndarray, tolerance: float) -> bool:
    """Whether every row is non-negative and sums to 1 within ``tolerance``."""
    rows = np.asarray(rows, dtype=np.float64)
    return bool(rows.min(initial=0.0) >= -1e-6 and np.all(np.abs(rows.sum(axis=-1) - 1.0) <= tolerance))


@dataclass(frozen=True)
class ModelSource:
    """What a backend needs to build its artifact."""

    model: str  # effnet model name
    record: WeightsRecord | None  # the weights record, when the weights are a known checkpoint or a native file
    checkpoint: Path | None  # the local weights file (None: random init, for tests)
    preprocess: Preprocess
    # What the model file (--model-path) outputs: "prob", "logits" (soft-maxed by as_probabilities) or
    # "unknown" (a file without metadata: the backend's probe decides). Effnet's own exports: "prob".
    output: str = "prob"
    # The sha256 the checkpoint was identified by when the source was resolved (None: not resolved from a
    # file, e.g. built by hand in a test): every later read of the file is checked against it
    # (:meth:`checked_sha256`, :func:`read_checkpoint`), so a file swapped after resolution is refused
    # instead of answering under the old record's name.
    sha256: str | None = None

    def checked_sha256(self) -> str:
        """The checkpoint's sha256 now (the sha256 index: a stat and a small read while the file is unchanged),
        refused unless it is the one the source was resolved with."""
        if self.checkpoint is None:
            raise EffnetError("random-init sources have no weights file to check")
        try:
            digest = file_sha256(self.checkpoint)
        except FileNotFoundError:
            raise _vanished(self.checkpoint) from None
        _check_digest(self, digest)
        return digest

    def as_probabilities(self, rows: np.ndarray) -> np.ndarray:
        """A model file's output rows as probabilities: logits are soft-maxed, probabilities pass through.

        Rows said to be logits that already are distributions are refused (:class:`OutputKindError`): soft-maxing
        them again would flatten every answer toward 1/N without a word."""
        if self.output != "logits":
            return rows
        if len(rows) and is_distribution(rows, 1e-3):
            raise OutputKindError(
                "said to output logits, but its rows already are probabilities (non-negative, summing to 1)"
            )
        shifted = rows - rows.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    @cached_property
    def labels(self) -> tuple[ClassLabel, ...]:
        """The class of each output, in index order (the record's label set or its own class names)."""
        return get_labels(self.record.labels if self.record else "imagenet-1k")

    @property
    def num_classes(self) -> int:
        return self.record.num_classes if self.record else 1000

    def check_outputs(self, count: object, artifact: object, given: bool = False) -> None:
        """Raise unless an artifact's output size (``count`` classes) matches the labels it is served with.

        Belt and braces behind the content-keyed export cache: an IR or ONNX file made for other weights
        must be an error naming both, never answers mapped onto the wrong class names. A symbolic size
        (not an int) is not checked here.
        """
        if isinstance(count, int) and count != len(self.labels):
            names = ", ".join(label.label for label in self.labels[:4]) + (", ..." if len(self.labels) > 4 else "")
            if given:  # the user's own file (--model-path): the export cache has nothing to do with it
                raise EffnetError(
                    f"{artifact} outputs {count} classes, but it is read with {len(self.labels)} labels "
                    f"({weights_label(self)}: {names}): the file and these labels disagree. Pass the --weights "
                    "it was exported from, or export it again from these weights"
                )
            raise EffnetError(
                f"{artifact} outputs {count} classes, but it is served with {len(self.labels)} labels "
                f"({weights_label(self)}: {names}): it was made for other weights. Export it again from these "
                "weights, or prune the export cache (`effnet weights cache prune`)"
            )

    def build_kwargs(self) -> dict[str, Any]:
        """How to construct the network for these weights: the record's padding, BN eps, classes and depth."""
        kwargs: dict[str, Any] = {"num_classes": self.num_classes, "input_size": self.preprocess.input_size}
        if self.record is not None:
            kwargs.update(padding=self.record.padding, bn_eps=self.record.bn_eps)
            if self.record.embedding_stage is not None:
                kwargs.update(embedding_stage=self.record.embedding_stage)
        return kwargs

    def build_model(self, **overrides: Any) -> EfficientNet:
        """The PyTorch model with these weights loaded (strictly), in eval mode, on the CPU; the file is first
        checked to still be the one resolved (:meth:`checked_sha256`)."""
        from .factory import create_model

        if self.checkpoint is not None and self.sha256 is not None:
            self.checked_sha256()
        kwargs = {**self.build_kwargs(), **overrides}
        return create_model(self.model, pretrained=self.checkpoint or False, **kwargs)


def _vanished(path: Path) -> EffnetError:
    return EffnetError(f"weights file {path} vanished after it was resolved: it was moved or deleted during the run")


def _check_digest(source: ModelSource, digest: str) -> None:
    if source.sha256 is not None and digest != source.sha256:
        raise EffnetError(
            f"weights file {source.checkpoint} changed after it was resolved as {weights_label(source)}: it was "
            f"sha256 {source.sha256}, it now is sha256 {digest}; run again to use the new file"
        )


def read_checkpoint(source: ModelSource) -> tuple[bytes, str]:
    """(the checkpoint's bytes, their sha256), read once: what Ray ships. Refused (one :class:`EffnetError`)
    when the file vanished or its bytes are not the ones the source was resolved with."""
    if source.checkpoint is None:
        raise EffnetError("random-init sources have no weights file to read")
    try:
        data = Path(source.checkpoint).read_bytes()
    except FileNotFoundError:
        raise _vanished(source.checkpoint) from None
    except OSError as e:
        raise EffnetError(f"cannot read weights file {source.checkpoint}: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    _check_digest(source, digest)
    return data, digest


def weights_label(source: ModelSource) -> str:
    """How reports, exports and the server name the weights: the record, else the file, else random init."""
    if source.record is not None:
        return source.record.name
    return source.checkpoint.name if source.checkpoint is not None else RANDOM_INIT


def identify_record(path: Path, model: str) -> WeightsRecord | None:
    """The record whose checksum a local checkpoint file matches, if any (:func:`match_record`).

    Lets ``--weights tf_efficientnet_b5_ap-9e82fae8.pth`` use the AdvProp
    preprocessing of its record instead of the model's default.
    """
    return match_record(path, model)


def _foreign_record(path: Path, model: str) -> WeightsRecord:
    """A file made elsewhere, through the one rule `effnet weights convert` applies (record sha256, else the
    file's whole stem as a timm name, else refuse naming the flags): the same file answers the same through
    convert and through --weights. What was assumed is said once."""
    from .weights.load import CorruptCheckpointError
    from .weights.to_native import assumed, read_as_native

    try:
        _, info = read_as_native(path, model=model)
    except CorruptCheckpointError:
        raise  # unreadable bytes: converting would not help, so no advice to
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}. For --weights, convert it once: `effnet weights convert {path} OUT.safetensors` with those "
            "flags, then pass --weights OUT.safetensors"
        ) from None
    note_once(assumed(info, path))
    return replace(info.to_record(path), name=path.name, notes="a file made elsewhere (the foreign-file rule)")


def labels_of(model: str, weights: Pretrained | None = None) -> tuple[ClassLabel, ...]:
    """The classes ``model`` with ``weights`` answers with, known without loading or downloading anything
    (a record's label set, an effnet-native file's header): what a dataset is labelled with before the model
    loads (``effnet eval`` checks its folder first)."""
    record, _ = resolve_weights(get_variant(model).name, True if weights is None else weights)
    return get_labels(record.labels if record else "imagenet-1k")


_NOTED: set[str] = set()


def note_once(message: str) -> None:
    """Say what was assumed or done to a file, on stderr, once per process."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"effnet: note: {message}", file=sys.stderr)


def _from_artifact(
    name: str, weights: Pretrained | None, path: Path, output_kind: str | None, download: bool, progress: bool
) -> ModelSource:
    """The source of a model file (--model-path): its own description, checked against the flags."""
    if output_kind is not None and output_kind not in OUTPUT_KINDS:
        raise EffnetError(f"--output-kind must be prob or logits, got {output_kind!r}")
    art: ArtifactInfo = read_artifact_info(path)
    if art.info is None:  # made elsewhere: the flags' model and weights give the preprocessing and labels
        base = resolve_source(name, weights, download=download, progress=progress)
        note_once(
            f"{path} carries no effnet metadata: assuming the preprocessing and labels of {name} "
            f"({weights_label(base)}); outputs: {output_kind or 'probed at load'}"
        )
        return replace(base, output=output_kind or "unknown")
    info = art.info
    if info.model != name:
        raise EffnetError(
            f"--model {name} disagrees with {path}, which was exported from {info.model}: leave --model out "
            f"or pass a file made for {name}"
        )
    if output_kind is not None and art.output is not None and output_kind != art.output:
        # The flag wins over a file whose metadata is wrong; the probe at load checks the flag in its turn.
        note_once(f"--output-kind {output_kind} overrides {path}, whose metadata says {art.output}")
    output = output_kind or art.output or "unknown"
    if art.legacy:
        note_once(
            f"{path} was written by an earlier effnet ({art.effnet_version or 'unknown version'}): no weights "
            "sha256 or code version in it; read by its model, preprocessing and labels"
        )
    if output == "logits":
        note_once(f"{path} outputs logits: effnet applies softmax to them")
    described = replace(info.to_record(path), name=art.weights or f"file:{path.name}")
    if weights is not None and weights is not True:  # the flags name weights: they must be the file's
        base = resolve_source(name, weights, download=download, progress=progress)
        if art.weights_file_sha256 and base.checkpoint is not None:
            digest = file_sha256(base.checkpoint)
            if digest != art.weights_file_sha256:
                raise EffnetError(
                    f"--weights {weights} (sha256 {digest[:12]}) disagrees with {path}, which was exported from "
                    f"{art.weights or 'other weights'} (sha256 {art.weights_file_sha256[:12]}): leave --weights out"
                )
        file_labels = get_labels(described.labels)
        if [c.label for c in base.labels] != [c.label for c in file_labels]:
            raise EffnetError(
                f"--weights {weights} answers with {_labels_digest(base.labels)}, but {path} answers with "
                f"{_labels_digest(file_labels)}: leave --weights out"
            )
        if base.preprocess != info.preprocess:
            raise EffnetError(
                f"--weights {weights} preprocesses as {base.preprocess.to_dict()}, but {path} says "
                f"{info.preprocess.to_dict()}"
            )
        return replace(base, output=output)
    # No weights named: the file's description; the checkpoint too where it is a record found here (the
    # fp32 torch model of the same weights, for explanations).
    record = find_record(art.weights) if art.weights else None
    if (
        record is not None
        and record.model == name
        and record.preprocess == info.preprocess
        and (record.labels, record.num_classes) == (info.labels, info.num_classes)  # else the description's own
    ):
        try:
            checkpoint: Path | None = fetch(record, download=False, progress=False)
        except EffnetError:
            checkpoint = None
        if checkpoint is not None and (art.weights_file_sha256 in (None, file_sha256(checkpoint))):
            return ModelSource(
                model=name,
                record=record,
                checkpoint=checkpoint,
                preprocess=record.preprocess,
                output=output,
                sha256=file_sha256(checkpoint),
            )
    return ModelSource(model=name, record=described, checkpoint=None, preprocess=info.preprocess, output=output)


def _labels_digest(labels: tuple[ClassLabel, ...]) -> str:
    return f"{len(labels)} classes: " + ", ".join(c.label for c in labels[:3]) + (", ..." if len(labels) > 3 else "")


def resolve_source(
    model: str,
    weights: Pretrained | None = None,
    *,
    model_path: str | Path | None = None,
    output_kind: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> ModelSource:
    """Everything a backend needs: the weights file and the preprocessing that belongs to it.

    ``weights=None`` means the model's default record; ``False`` random init (tests). An
    effnet-native file brings its own record; another file that matches no record is
    preprocessed like the model's default record.
    ``model_path`` (an exported ``.onnx``/``.xml``/``.tflite``): the file's own description is read
    (:mod:`effnet.artifact`) and must agree with ``model`` and ``weights``; ``output_kind`` (prob or logits)
    says what a file without that description outputs.
    """
    name = get_variant(model).name
    if model_path is not None:
        return _from_artifact(name, weights, Path(model_path), output_kind, download, progress)
    if isinstance(weights, str) and "://" in weights:  # Path() would fold it into a mangled "http:/host" path
        raise EffnetError(
            f"--weights does not take a URL ({weights}): download the file first (`effnet weights download`, "
            "or any download) and pass its path, or pass a record name (`effnet weights list`)"
        )
    if isinstance(weights, (str, Path)) and Path(weights).suffix.lower() in ARTIFACT_SUFFIXES:
        raise EffnetError(f"{weights} is a model file, not weights: pass it as --model-path {weights}")
    record, path = resolve_weights(name, True if weights is None else weights)
    if record is not None and path is None:
        path = fetch(record, download=download, progress=progress)
    elif path is not None and record is None:
        if not path.is_file():
            raise EffnetError(f"weights file {path} does not exist")
        record = identify_record(path, name)
        if record is None and (other := match_record(path)) is not None:  # a record's file, of another model
            raise EffnetError(
                f"{path} is the file of weights record {other.name}, for {other.model}, not {name}: "
                f"pass --model {other.model}"
            )
        record = record or _foreign_record(path, name)
    preprocess = record.preprocess if record is not None else default_preprocess(get_variant(name))[0]
    # The digest the file is identified by (from the sha256 index: fetch and match_record computed it already)
    sha256 = file_sha256(path) if path is not None else None
    return ModelSource(model=name, record=record, checkpoint=path, preprocess=preprocess, sha256=sha256)
