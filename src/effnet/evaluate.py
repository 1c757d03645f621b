"""ImageNet evaluation: find the labels of a dataset folder, run a :class:`Classifier` over it, report accuracy.

Three dataset layouts are recognised, automatically:

* ``class-folders`` — one sub-folder per class, named by WordNet synset (``val/n01440764/*.JPEG``);
* ``annotations``  — image files plus an annotation file in the OMZ / Caffe ``val.txt`` form
  (``ILSVRC2012_val_00000001.JPEG 65``: file name relative to the folder, class index), given explicitly;
* ``synset-prefix`` — a flat folder of files named ``<synset>_<anything>.<ext>``.

Preprocessing is the classifier's (that is, the weights record's): nothing here resizes or normalizes.
Images are decoded in a thread pool, a bounded number ahead of the model, so decoding overlaps
inference (Pillow and PyTorch both release the GIL). An image that cannot be decoded is recorded as a
failure with its error, never dropped: the accuracy is over the images that could be decoded, and the
report says how many could not. This module computes and returns; printing belongs to the CLI.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import chain, zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from .errors import EffnetError, ImageError
from .labels import ClassLabel, imagenet_labels
from .preprocess import IMAGE_EXTENSIONS
from .weights.records import Preprocess, ReferenceMetrics

if TYPE_CHECKING:  # pragma: no cover
    from .predict import Classifier

__all__ = [
    "Layout",
    "LAYOUTS",
    "DatasetError",
    "Sample",
    "Dataset",
    "find_dataset",
    "read_annotations",
    "Progress",
    "ClassResult",
    "Confusion",
    "Failure",
    "ImageOutcome",
    "EvalReport",
    "evaluate",
    "REPORT_SCHEMA",
]

Layout = Literal["class-folders", "annotations", "synset-prefix"]
LAYOUTS: tuple[Layout, ...] = ("class-folders", "annotations", "synset-prefix")
REPORT_SCHEMA = "effnet.eval/1"
TOP_K = 5

_SYNSET = re.compile(r"n\d{8}")
_SYNSET_PREFIX = re.compile(r"(n\d{8})_.")
_LAYOUT_HELP = (
    "expected one of: (a) class folders named by synset (DATA/n01440764/*.JPEG); "
    "(b) image files plus --annotations FILE with lines '<file name> <class index>'; "
    "(c) a flat folder of files named '<synset>_<anything>.<ext>'"
)


class DatasetError(EffnetError, ValueError):
    """A dataset folder or annotation file that does not fit any supported layout."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # class index


@dataclass(frozen=True)
class Dataset:
    """Labelled images found in a folder.

    ``samples`` are ordered so that a prefix (``--limit N``) is a fair subset: for the
    class-folder and synset-prefix layouts classes are interleaved (the first image of
    every class, then the second of every class, ...); annotated images keep file-name
    order (ImageNet val file numbers are already in random class order).
    """

    root: Path
    layout: Layout
    samples: tuple[Sample, ...]
    labels: tuple[ClassLabel, ...]
    annotations: Path | None = None
    unmatched_annotations: int = 0  # annotation entries whose image is not in the folder

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes_present(self) -> int:
        return len({s.label for s in self.samples})


def _synset_index(labels: Sequence[ClassLabel]) -> dict[str, int]:
    return {c.synset: c.index for c in labels}


def _examples(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" (and {len(names) - n:,} more)" if len(names) > n else "")


def _is_image(path: Path) -> bool:
    # Anything but a folder, by extension: a broken link or unreadable file is kept, so that it is
    # reported as a failure instead of vanishing from the count (``find_images`` skips non-files).
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_dir()


def _images_under(folder: Path) -> list[Path]:
    """Images below ``folder``, recursively, skipping hidden names (such as macOS ``._*`` companions)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _interleave(groups: Sequence[Sequence[Sample]]) -> tuple[Sample, ...]:
    """First of every group, then second of every group, ... (groups in class order)."""
    return tuple(s for s in chain.from_iterable(zip_longest(*groups)) if s is not None)


def read_annotations(path: str | os.PathLike, labels: Sequence[ClassLabel] | None = None) -> dict[str, int]:
    """Parse a ``val.txt``-style file: ``<relative file name> <class index or synset>`` per line.

    Blank lines and lines starting with ``#`` are skipped. Raises :class:`DatasetError`
    naming the line for a malformed line, an out-of-range index, an unknown synset or a
    file listed twice.
    """
    labels = labels or imagenet_labels()
    index = _synset_index(labels)
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"annotation file {path} does not exist" if not path.exists() else f"annotation file {path} is not a file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read annotation file {path}: {e}") from None
    entries: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # rsplit: the label is the last field, so a file name with spaces still parses.
        parts = line.rsplit(None, 1)
        where = f"{path}:{number}"
        if len(parts) != 2:
            raise DatasetError(f"{where}: expected '<file name> <class index>', got {line!r}")
        name, value = parts[0].replace("\\", "/"), parts[1]
        if value.lstrip("-").isdigit():
            label = int(value)
            if not 0 <= label < len(labels):
                raise DatasetError(f"{where}: class index {label} is out of range 0..{len(labels) - 1}")
        elif _SYNSET.fullmatch(value):
            if value not in index:
                raise DatasetError(f"{where}: unknown synset {value}: not one of the {len(labels):,} classes")
            label = index[value]
        else:
            raise DatasetError(f"{where}: expected a class index or a synset after the file name, got {value!r}")
        if name in entries:
            raise DatasetError(f"{where}: {name} is listed twice")
        entries[name] = label
    if not entries:
        raise DatasetError(f"annotation file {path} has no entries ('<file name> <class index>' per line)")
    return entries


def _annotated(root: Path, annotations: Path, labels: Sequence[ClassLabel]) -> Dataset:
    entries = read_annotations(annotations, labels)
    images = _images_under(root)  # the annotation file itself is no image (.txt), even when inside root
    if not images:
        raise DatasetError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    names = [p.relative_to(root).as_posix() for p in images]
    missing = [n for n in names if n not in entries]
    if missing:
        raise DatasetError(
            f"{len(missing):,} of {len(names):,} images in {root} have no entry in {annotations}: "
            f"{_examples(missing)}. Every image needs a line '<file name> <class index>'."
        )
    samples = tuple(Sample(p, entries[n]) for p, n in zip(images, names, strict=True))
    return Dataset(
        root, "annotations", samples, tuple(labels), annotations, unmatched_annotations=len(entries) - len(samples)
    )


def _class_folders(root: Path, folders: list[Path], labels: Sequence[ClassLabel]) -> Dataset:
    index = _synset_index(labels)
    not_synsets = [f.name for f in folders if not _SYNSET.fullmatch(f.name)]
    if len(not_synsets) == len(folders):
        raise DatasetError(
            f"no layout fits {root}: its sub-folders ({_examples(not_synsets)}) are not named by synset; {_LAYOUT_HELP}"
        )
    if not_synsets:
        raise DatasetError(
            f"{root}: sub-folders {_examples(not_synsets)} are not named by synset (like n01440764); "
            "with class folders, every sub-folder must be a class"
        )
    unknown = [f.name for f in folders if f.name not in index]
    if unknown:
        raise DatasetError(
            f"{root}: unknown synset folder {_examples(unknown)}: not one of the {len(labels):,} ImageNet-1k classes"
        )
    groups = [[Sample(p, index[f.name]) for p in _images_under(f)] for f in folders]
    if not any(groups):
        raise DatasetError(
            f"no images in the {len(folders):,} class folders of {root} (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return Dataset(root, "class-folders", _interleave(groups), tuple(labels))


def _synset_prefix(root: Path, files: list[Path], labels: Sequence[ClassLabel]) -> Dataset:
    index = _synset_index(labels)
    matches = [(p, _SYNSET_PREFIX.match(p.name)) for p in files]
    unnamed = [p.name for p, m in matches if m is None]
    if len(unnamed) == len(files):
        raise DatasetError(
            f"no layout fits {root}: its {len(files):,} images ({_examples(unnamed)}) carry no synset in their "
            f"names and there are no class folders; for ImageNet val files (ILSVRC2012_val_*.JPEG) give the "
            f"labels with --annotations val.txt. {_LAYOUT_HELP}"
        )
    if unnamed:
        raise DatasetError(
            f"{root}: {len(unnamed):,} of {len(files):,} images are not named "
            f"'<synset>_<anything>': {_examples(unnamed)}"
        )
    unknown = [p.name for p, m in matches if m is not None and m.group(1) not in index]
    if unknown:
        raise DatasetError(
            f"{root}: unknown synset in {_examples(unknown)}: not one of the {len(labels):,} ImageNet-1k classes"
        )
    by_class: dict[int, list[Sample]] = {}
    for p, m in matches:
        if m is not None:  # always, checked above
            label = index[m.group(1)]
            by_class.setdefault(label, []).append(Sample(p, label))
    return Dataset(root, "synset-prefix", _interleave([by_class[k] for k in sorted(by_class)]), tuple(labels))


def find_dataset(
    root: str | os.PathLike, annotations: str | os.PathLike | None = None, labels: Sequence[ClassLabel] | None = None
) -> Dataset:
    """Detect the layout of ``root`` and label every image in it.

    With ``annotations`` the labels come from that file (layout ``annotations``; images are
    matched by their path relative to ``root``). Otherwise sub-folders named by synset mean
    ``class-folders`` and image files named ``<synset>_...`` mean ``synset-prefix``. Files
    that are not images (by extension) and hidden entries are ignored. Raises
    :class:`DatasetError` when nothing fits: an empty folder, an unknown synset, an image
    without an annotation entry, a mix of layouts.
    """
    labels = tuple(labels or imagenet_labels())
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; {_LAYOUT_HELP}")
    if annotations is not None:
        return _annotated(root, Path(annotations), labels)
    entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    folders = [e for e in entries if e.is_dir()]
    files = [e for e in entries if _is_image(e)]
    if folders and files:
        raise DatasetError(
            f"{root} mixes sub-folders ({_examples([f.name for f in folders])}) and images "
            f"({_examples([f.name for f in files])}); {_LAYOUT_HELP}"
        )
    if folders:
        return _class_folders(root, folders, labels)
    if files:
        return _synset_prefix(root, files, labels)
    raise DatasetError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}); {_LAYOUT_HELP}")


# --------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Progress:
    """Running totals, passed to the ``progress`` callback after every batch."""

    done: int  # images processed (evaluated + failed)
    total: int
    evaluated: int
    failed: int
    top1_correct: int
    top5_correct: int
    elapsed_s: float

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / self.evaluated if self.evaluated else 0.0

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / self.evaluated if self.evaluated else 0.0


@dataclass(frozen=True)
class ClassResult:
    index: int
    synset: str
    label: str
    count: int
    top1_correct: int
    top5_correct: int

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / self.count

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / self.count

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "synset": self.synset,
            "label": self.label,
            "count": self.count,
            "top1": self.top1,
            "top5": self.top5,
        }


@dataclass(frozen=True)
class Confusion:
    """``count`` images of class ``true`` whose top-1 prediction was ``predicted``."""

    true: ClassLabel
    predicted: ClassLabel
    count: int

    def to_dict(self) -> dict:
        return {
            "true": {"index": self.true.index, "synset": self.true.synset, "label": self.true.label},
            "predicted": {
                "index": self.predicted.index,
                "synset": self.predicted.synset,
                "label": self.predicted.label,
            },
            "count": self.count,
        }


@dataclass(frozen=True)
class Failure:
    path: str
    label: int
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "error": self.error}


@dataclass(frozen=True)
class ImageOutcome:
    """One evaluated image: its label and the top-5 class indices, best first."""

    path: str
    label: int
    top5: tuple[int, ...]

    @property
    def top1_correct(self) -> bool:
        return self.top5[0] == self.label

    @property
    def top5_correct(self) -> bool:
        return self.label in self.top5

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "top5": list(self.top5)}


@dataclass(frozen=True)
class EvalReport:
    """Accuracy of one model + weights + backend + precision on one dataset. Percentages are 0-100."""

    model: str
    weights: str  # record name, checkpoint file, or "random init"
    backend: str
    precision: str
    dataset: str
    layout: Layout
    preprocess: Preprocess
    total: int  # images the run was asked to evaluate (after --limit)
    count: int  # images evaluated (decoded and classified)
    failed: int
    top1_correct: int
    top5_correct: int
    per_class: tuple[ClassResult, ...]
    confused: tuple[Confusion, ...]  # most frequent top-1 mistakes, most frequent first
    failures: tuple[Failure, ...]
    images: tuple[ImageOutcome, ...]
    reference: ReferenceMetrics | None
    seconds: float  # wall time of the loop (model loading excluded)
    inference_seconds: float  # time spent inside the backend
    decode_wait_seconds: float  # time the model waited for decoded images
    batch_size: int
    workers: int
    limit: int | None = None
    dataset_size: int = 0  # images in the dataset before --limit
    unmatched_annotations: int = 0
    schema: str = field(default=REPORT_SCHEMA)

    @property
    def top1(self) -> float:
        return 100.0 * self.top1_correct / self.count

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / self.count

    @property
    def images_per_second(self) -> float:
        return (self.count + self.failed) / self.seconds if self.seconds > 0 else float("nan")

    @property
    def delta_top1(self) -> float | None:
        """top-1 minus the record's published top-1 (points); None without a reference."""
        return None if self.reference is None else self.top1 - self.reference.top1

    @property
    def delta_top5(self) -> float | None:
        if self.reference is None or self.reference.top5 is None:
            return None
        return self.top5 - self.reference.top5

    def to_dict(self) -> dict:
        ref = self.reference
        return {
            "schema": self.schema,
            "model": self.model,
            "weights": self.weights,
            "backend": self.backend,
            "precision": self.precision,
            "dataset": {
                "path": self.dataset,
                "layout": self.layout,
                "size": self.dataset_size,
                "limit": self.limit,
                "unmatched_annotations": self.unmatched_annotations,
            },
            "preprocess": self.preprocess.to_dict(),
            "total": self.total,
            "count": self.count,
            "failed": self.failed,
            "top1": self.top1,
            "top5": self.top5,
            "top1_correct": self.top1_correct,
            "top5_correct": self.top5_correct,
            "reference": None
            if ref is None
            else {"top1": ref.top1, "top5": ref.top5, "dataset": ref.dataset, "source": ref.source},
            "delta_top1": self.delta_top1,
            "delta_top5": self.delta_top5,
            "throughput": {
                "images_per_second": self.images_per_second,
                "seconds": self.seconds,
                "inference_seconds": self.inference_seconds,
                "decode_wait_seconds": self.decode_wait_seconds,
                "batch_size": self.batch_size,
                "workers": self.workers,
            },
            "per_class": [c.to_dict() for c in self.per_class],
            "most_confused": [c.to_dict() for c in self.confused],
            "failures": [f.to_dict() for f in self.failures],
            "images": [i.to_dict() for i in self.images],
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically: the file is either absent, the old one, or complete."""
        path = Path(path)
        folder = path.parent
        if not folder.is_dir():
            raise EffnetError(f"cannot write the report to {path}: folder {folder} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise EffnetError(f"cannot write the report to {path}: {e}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):  # disk full, path is a folder...: one clear line, no traceback
                raise EffnetError(f"cannot write the report to {path}: {e}") from None
            raise
        return path


# ------------------------------------------------------------------------------------------ evaluation


def _weights_name(classifier: Classifier) -> str:
    source = classifier.source
    if source.record is not None:
        return source.record.name
    return str(source.checkpoint) if source.checkpoint is not None else "random init"


class _Tally:
    """Per-class hit counts, top-1 confusions and per-image outcomes, accumulated batch by batch."""

    def __init__(self, labels: Sequence[ClassLabel], k: int) -> None:
        self.labels, self.k = labels, k
        self.counts = np.zeros(len(labels), dtype=np.int64)
        self.hits1 = np.zeros(len(labels), dtype=np.int64)
        self.hits5 = np.zeros(len(labels), dtype=np.int64)
        self.confusion: Counter[tuple[int, int]] = Counter()
        self.outcomes: list[ImageOutcome] = []

    def add(self, samples: Sequence[Sample], probs: np.ndarray) -> None:
        # Stable sort on -p: ties resolve to the lower class index, as Classifier.top_k does.
        top = np.argsort(-probs, axis=1, kind="stable")[:, : self.k]
        for sample, row in zip(samples, top.tolist(), strict=True):
            y = sample.label
            self.counts[y] += 1
            self.hits1[y] += row[0] == y
            self.hits5[y] += y in row
            if row[0] != y:
                self.confusion[(y, row[0])] += 1
            self.outcomes.append(ImageOutcome(str(sample.path), y, tuple(row)))

    def per_class(self) -> tuple[ClassResult, ...]:
        labels = self.labels
        return tuple(
            ClassResult(
                i, labels[i].synset, labels[i].label, int(self.counts[i]), int(self.hits1[i]), int(self.hits5[i])
            )
            for i in np.flatnonzero(self.counts).tolist()
        )

    def most_confused(self, n: int) -> tuple[Confusion, ...]:
        ranked = sorted(self.confusion.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return tuple(Confusion(self.labels[t], self.labels[p], count) for (t, p), count in ranked)


def _decoded(
    classifier: Classifier, samples: Sequence[Sample], batch_size: int, workers: int
) -> Iterator[tuple[list[tuple[Sample, np.ndarray | None, str | None]], float]]:
    """Yield (batch, seconds waited for it): decoding runs ahead in ``workers`` threads.

    At most ``2 * batch_size + workers`` decodes are queued, enough to keep the pool busy
    during the next forward pass without holding a whole dataset of crops in memory.
    """

    def load(sample: Sample) -> tuple[Sample, np.ndarray | None, str | None]:
        try:
            return sample, classifier.crop(sample.path), None
        except (ImageError, OSError) as e:  # OSError: a file that vanished or cannot be read mid-run
            return sample, None, str(e) or type(e).__name__

    window: deque[Future] = deque()
    todo = iter(samples)
    ahead = 2 * batch_size + workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effnet-decode") as pool:
        try:
            while True:
                for sample in todo:
                    window.append(pool.submit(load, sample))
                    if len(window) >= ahead:
                        break
                if not window:
                    return
                t0 = time.perf_counter()
                batch = [window.popleft().result() for _ in range(min(batch_size, len(window)))]
                waited = time.perf_counter() - t0
                # Refill before handing the batch to the model, so decoding overlaps inference.
                for sample in todo:
                    window.append(pool.submit(load, sample))
                    if len(window) >= ahead:
                        break
                yield batch, waited
        finally:
            for f in window:  # stopped early (error, Ctrl-C): do not decode the rest
                f.cancel()


def evaluate(
    classifier: Classifier,
    dataset: Dataset | str | os.PathLike,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    limit: int | None = None,
    max_confused: int = 20,
    progress: Callable[[Progress], None] | None = None,
) -> EvalReport:
    """Classify every image of ``dataset`` (a :class:`Dataset` or a folder) and measure top-1 / top-5.

    ``limit`` evaluates the first ``limit`` samples (a class-interleaved subset, see :class:`Dataset`).
    ``workers`` decoding threads (default: ``min(4, cpu count)``) run ahead of the model.
    ``progress`` is called with running totals after every batch. Raises :class:`DatasetError`
    when no image at all could be decoded.
    """
    if batch_size < 1:
        raise EffnetError(f"batch size must be >= 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise EffnetError(f"workers must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise EffnetError(f"limit must be >= 1, got {limit}")
    if not isinstance(dataset, Dataset):
        dataset = find_dataset(dataset, labels=classifier.labels)
    labels = classifier.labels
    if tuple(c.synset for c in dataset.labels) != tuple(c.synset for c in labels):
        raise DatasetError(
            "the dataset was labelled with a different class list than the classifier's "
            f"({len(dataset.labels):,} vs {len(labels):,} classes)"
        )
    workers = workers or min(4, os.cpu_count() or 1)
    samples = dataset.samples[:limit] if limit else dataset.samples
    num_classes = len(labels)
    k = min(TOP_K, num_classes)

    tally = _Tally(labels, k)
    failures: list[Failure] = []
    inference_s = wait_s = 0.0
    start = time.perf_counter()
    # closing(): on an error or Ctrl-C the decoding threads stop now, not when the generator is collected.
    with closing(_decoded(classifier, samples, batch_size, workers)) as batches:
        for batch, waited in batches:
            wait_s += waited
            good = [(s, px) for s, px, _ in batch if px is not None]
            failures.extend(Failure(str(s.path), s.label, err or "") for s, px, err in batch if px is None)
            if good:
                t0 = time.perf_counter()
                probs = classifier.probabilities(np.stack([px for _, px in good]))
                inference_s += time.perf_counter() - t0
                if probs.shape != (len(good), num_classes):
                    raise EffnetError(
                        f"backend {classifier.backend.name!r} returned shape {tuple(probs.shape)}, "
                        f"expected ({len(good)}, {num_classes})"
                    )
                tally.add([s for s, _ in good], probs)
            if progress is not None:
                progress(
                    Progress(
                        done=len(tally.outcomes) + len(failures),
                        total=len(samples),
                        evaluated=len(tally.outcomes),
                        failed=len(failures),
                        top1_correct=int(tally.hits1.sum()),
                        top5_correct=int(tally.hits5.sum()),
                        elapsed_s=time.perf_counter() - start,
                    )
                )
    seconds = time.perf_counter() - start

    if not tally.outcomes:
        first = failures[0].error if failures else "no images"
        raise DatasetError(
            f"none of the {len(samples):,} images in {dataset.root} could be decoded; first error: {first}"
        )
    record = classifier.record
    return EvalReport(
        model=classifier.source.model,
        weights=_weights_name(classifier),
        backend=classifier.backend.name,
        precision=classifier.backend.precision,
        dataset=str(dataset.root),
        layout=dataset.layout,
        preprocess=classifier.preprocess,
        total=len(samples),
        count=len(tally.outcomes),
        failed=len(failures),
        top1_correct=int(tally.hits1.sum()),
        top5_correct=int(tally.hits5.sum()),
        per_class=tally.per_class(),
        confused=tally.most_confused(max_confused),
        failures=tuple(failures),
        images=tuple(tally.outcomes),
        reference=record.metrics if record else None,
        seconds=seconds,
        inference_seconds=inference_s,
        decode_wait_seconds=wait_s,
        batch_size=batch_size,
        workers=workers,
        limit=limit,
        dataset_size=len(dataset),
        unmatched_annotations=dataset.unmatched_annotations,
    )
