"""Dataset layouts for evaluation: find the images of a folder and the class of each.

Three layouts are recognised, automatically:

* ``class-folders`` — one sub-folder per class, named by WordNet synset (``val/n01440764/*.JPEG``);
* ``annotations``  — image files plus an annotation file in the OMZ / Caffe ``val.txt`` form
  (``ILSVRC2012_val_00000001.JPEG 65``: file name relative to the folder, class index), given explicitly;
* ``synset-prefix`` — a flat folder of files named ``<synset>_<anything>.<ext>``.

The classes are the model's (``labels``): ImageNet-1k's synsets, or a fine-tuned model's own class names
(an ``effnet train`` run's folder names), which then name the class folders and may stand for the class
in an annotation file. Images are found by the folder walk of every command (:mod:`effnet.files`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, zip_longest
from pathlib import Path
from typing import Literal

from ..errors import EffnetError
from ..files import IMAGE_EXTENSIONS, is_hidden, read_list, walk_images
from ..labels import ClassLabel, get_labels, imagenet_labels

__all__ = [
    "Layout",
    "LAYOUTS",
    "DatasetError",
    "Sample",
    "Dataset",
    "find_dataset",
    "find_class_folders",
    "read_annotations",
]

Layout = Literal["class-folders", "annotations", "synset-prefix"]
LAYOUTS: tuple[Layout, ...] = ("class-folders", "annotations", "synset-prefix")

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
    """Images below ``folder``: the one folder walk of every command (:func:`effnet.files.walk_images`)."""
    return walk_images(folder)


def _is_wordnet(labels: Sequence[ClassLabel]) -> bool:
    """ImageNet-style classes (named by WordNet synset), as opposed to a fine-tuned model's own names."""
    return all(_SYNSET.fullmatch(c.synset) for c in labels)


def _split_entry(line: str, spaced_names: Sequence[str]) -> list[str]:
    """``<file name> <class>``: the class is the last field (so file names may hold spaces), or a class
    name with spaces that ends the line."""
    for name in spaced_names:
        head = line[: -len(name)]
        if line.endswith(name) and head[-1:].isspace() and head.strip():
            return [head.rstrip(), name]
    return line.rsplit(None, 1)


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
        text = read_list(path)
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read annotation file {path}: {e}") from None
    # Class names with spaces (a fine-tuned model's folder names may have them) end a line as a whole.
    spaced = sorted((c for c in index if any(ch.isspace() for ch in c)), key=len, reverse=True)
    expected = "a class index or a synset" if _is_wordnet(labels) else "a class index or one of the model's class names"
    entries: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        parts = _split_entry(line, spaced)
        if len(parts) != 2:
            raise DatasetError(f"{where}: expected '<file name> <class index>', got {line!r}")
        name, value = parts[0].replace("\\", "/"), parts[1]
        if value in index:  # a synset, or a fine-tuned model's class name (even one made of digits)
            label = index[value]
        elif value.lstrip("-").isdigit():
            label = int(value)
            if not 0 <= label < len(labels):
                raise DatasetError(f"{where}: class index {label} is out of range 0..{len(labels) - 1}")
        elif _SYNSET.fullmatch(value):
            raise DatasetError(f"{where}: unknown synset {value}: not one of the {len(labels):,} classes")
        else:
            raise DatasetError(
                f"{where}: expected {expected} after the file name, got {value!r}"
                + ("" if _is_wordnet(labels) else f" (the model's classes: {_examples([c.synset for c in labels])})")
            )
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
    unknown = [f.name for f in folders if f.name not in index]
    if not _is_wordnet(labels):  # a fine-tuned model: its class folders are named by its own class names
        if unknown:
            raise DatasetError(
                f"{root}: sub-folders {_examples(unknown)} are not classes of this model "
                f"(its {len(labels):,} classes: {_examples([c.synset for c in labels], 10)}); with class folders, "
                "every sub-folder must be one of them"
            )
    else:
        not_synsets = [f.name for f in folders if not _SYNSET.fullmatch(f.name)]
        if len(not_synsets) == len(folders):
            raise DatasetError(
                f"no layout fits {root}: its sub-folders ({_examples(not_synsets)}) are not named by synset; "
                f"{_LAYOUT_HELP}"
            )
        if not_synsets:
            raise DatasetError(
                f"{root}: sub-folders {_examples(not_synsets)} are not named by synset (like n01440764); "
                "with class folders, every sub-folder must be a class"
            )
        if unknown:
            raise DatasetError(
                f"{root}: unknown synset folder {_examples(unknown)}: not one of the {len(labels):,} classes"
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
    entries = sorted(e for e in root.iterdir() if not is_hidden(e.name))
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


def find_class_folders(root: str | os.PathLike) -> Dataset:
    """One sub-folder per class, any names (a training set): the classes are the folder names, sorted.

    Unlike :func:`find_dataset`'s ImageNet layouts, the labels are the folder names themselves
    (class index = position in sorted order), as :func:`effnet.labels.get_labels` makes them.
    Images are found recursively under each class folder; hidden entries are skipped. Raises
    :class:`DatasetError` for a missing or empty folder, images beside the class folders, or a class
    folder without images (a class nothing can be learned for).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    entries = sorted(e for e in root.iterdir() if not is_hidden(e.name))
    folders = [e for e in entries if e.is_dir()]
    stray = [e.name for e in entries if _is_image(e)]
    if not folders:
        raise DatasetError(f"{root} has no class folders: expected one sub-folder of images per class (DATA/cat/*.jpg)")
    if stray:
        raise DatasetError(
            f"{root} has images beside its class folders ({_examples(stray)}): every image must be in the "
            "folder of its class"
        )
    groups = []
    for label, folder in enumerate(folders):
        images = _images_under(folder)
        if not images:
            raise DatasetError(f"class folder {folder} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        groups.append([Sample(p, label) for p in images])
    return Dataset(root, "class-folders", _interleave(groups), get_labels([f.name for f in folders]))
