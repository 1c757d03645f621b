"""What a model run is made of: the model, its weights record, the checkpoint file, its preprocessing.

:class:`ModelSource` is resolved once (:func:`resolve_source`) and handed to every consumer — backends,
exports, quantization, the server, Ray workers — so that none of them re-derives a number the record
already holds (input size, resize, mean/std, padding, BN eps, class names).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EffnetError
from .factory import Pretrained, default_preprocess, resolve_weights
from .labels import ClassLabel, get_labels
from .specs import get_variant
from .weights.records import Preprocess, WeightsRecord, fetch, match_record

if TYPE_CHECKING:  # pragma: no cover
    from .model import EfficientNet

__all__ = ["ModelSource", "resolve_source", "identify_record", "weights_label", "labels_of"]

RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class ModelSource:
    """What a backend needs to build its artifact."""

    model: str  # effnet model name
    record: WeightsRecord | None  # the weights record, when the weights are a known checkpoint or a native file
    checkpoint: Path | None  # the local weights file (None: random init, for tests)
    preprocess: Preprocess

    @cached_property
    def labels(self) -> tuple[ClassLabel, ...]:
        """The class of each output, in index order (the record's label set or its own class names)."""
        return get_labels(self.record.labels if self.record else "imagenet-1k")

    @property
    def num_classes(self) -> int:
        return self.record.num_classes if self.record else 1000

    def check_outputs(self, count: object, artifact: object) -> None:
        """Raise unless an artifact's output size (``count`` classes) matches the labels it is served with.

        Belt and braces behind the content-keyed export cache: an IR or ONNX file made for other weights
        must be an error naming both, never answers mapped onto the wrong class names. A symbolic size
        (not an int) is not checked here.
        """
        if isinstance(count, int) and count != len(self.labels):
            names = ", ".join(label.label for label in self.labels[:4]) + (", ..." if len(self.labels) > 4 else "")
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
        """The PyTorch model with these weights loaded (strictly), in eval mode, on the CPU."""
        from .factory import create_model

        kwargs = {**self.build_kwargs(), **overrides}
        return create_model(self.model, pretrained=self.checkpoint or False, **kwargs)


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


def labels_of(model: str, weights: Pretrained | None = None) -> tuple[ClassLabel, ...]:
    """The classes ``model`` with ``weights`` answers with, known without loading or downloading anything
    (a record's label set, an effnet-native file's header): what a dataset is labelled with before the model
    loads (``effnet eval`` checks its folder first)."""
    record, _ = resolve_weights(get_variant(model).name, True if weights is None else weights)
    return get_labels(record.labels if record else "imagenet-1k")


def resolve_source(
    model: str, weights: Pretrained | None = None, *, download: bool = True, progress: bool = True
) -> ModelSource:
    """Everything a backend needs: the weights file and the preprocessing that belongs to it.

    ``weights=None`` means the model's default record; ``False`` random init (tests). An
    effnet-native file brings its own record; another file that matches no record is
    preprocessed like the model's default record.
    """
    name = get_variant(model).name
    record, path = resolve_weights(name, True if weights is None else weights)
    if record is not None and path is None:
        path = fetch(record, download=download, progress=progress)
    elif path is not None and record is None:
        if not path.is_file():
            raise EffnetError(f"weights file {path} does not exist")
        record = identify_record(path, name)
    preprocess = record.preprocess if record is not None else default_preprocess(get_variant(name))[0]
    return ModelSource(model=name, record=record, checkpoint=path, preprocess=preprocess)
