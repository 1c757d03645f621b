"""Class labels (ImageNet-1k: index = line number = position of the synset in sorted order) and top-k
predictions over them, shared by the classifier and the explanations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from .errors import UnknownNameError

NUM_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class ClassLabel:
    index: int
    synset: str  # WordNet id, e.g. "n02123045"
    label: str  # comma-separated names, e.g. "tabby, tabby cat"


@cache
def imagenet_labels() -> tuple[ClassLabel, ...]:
    """The 1,000 bundled ImageNet-1k classes (``imagenet_classes.txt``: ``<synset> <names>`` per line)."""
    text = resources.files("effnet").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    labels = []
    for i, line in enumerate(text.splitlines()):
        synset, _, names = line.partition(" ")
        labels.append(ClassLabel(i, synset, names.strip()))
    if len(labels) != NUM_IMAGENET_CLASSES or [c.synset for c in labels] != sorted(c.synset for c in labels):
        raise RuntimeError("bundled imagenet_classes.txt is damaged: expected 1,000 sorted synsets")
    return tuple(labels)


def get_labels(label_set: str | Sequence[str]) -> tuple[ClassLabel, ...]:
    """A named label set (``"imagenet-1k"``) or explicit class names (a fine-tuned model's classes).

    Explicit names have no WordNet synset: the name stands in for it, so JSON consumers always find both.
    """
    if isinstance(label_set, str):
        if label_set == "imagenet-1k":
            return imagenet_labels()
        raise UnknownNameError(f"unknown label set {label_set!r}; known: imagenet-1k")
    return tuple(ClassLabel(i, name, name) for i, name in enumerate(label_set))


@cache
def synset_index() -> dict[str, int]:
    """Synset -> class index for ImageNet-1k."""
    return {c.synset: c.index for c in imagenet_labels()}


@dataclass(frozen=True)
class Prediction:
    class_index: int
    synset: str
    label: str
    probability: float

    def to_dict(self) -> dict:
        return {
            "class_index": self.class_index,
            "synset": self.synset,
            "label": self.label,
            "probability": self.probability,
        }


def short_label(label: str, width: int = 40) -> str:
    """The first of a label's comma-separated names ("tabby, tabby cat" -> "tabby"), cut to ``width``
    characters with an ellipsis: what a figure's axis or a report's caption has room for."""
    name = label.split(",")[0]
    return name if len(name) <= width else name[: width - 1] + "…"


def top_k(probs: np.ndarray, labels: Sequence[ClassLabel], k: int) -> list[Prediction]:
    """The ``k`` most probable classes of one probability row; ties go to the lower class index."""
    k = max(1, min(k, probs.shape[-1]))
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(int(i), labels[i].synset, labels[i].label, float(probs[i])) for i in order]
