"""Training data: class folders, a stratified split, the train augmentation and the eval transform.

The eval transform is the weights record's own preprocessing (decode, resize, center crop: the one
``decode_crop``) followed by the one ``normalize`` of :mod:`effnet.preprocess`; the train transform
replaces the center crop by a random resized crop at the record's input size and interpolation, a
horizontal flip and optionally TrivialAugment, then normalizes the same way. Pillow and numpy only
(torchvision is not a dependency); the parameters follow torchvision's ``RandomResizedCrop`` and
``TrivialAugmentWide``.

Every random choice for a sample comes from a generator seeded by (seed, epoch, sample index): the
same image gets the same augmentation whichever process or worker loads it, so a resumed run and a
distributed run see exactly the pixels an uninterrupted single-process run sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from ..errors import EffnetError, ImageError
from ..evaluate.datasets import Sample, find_class_folders
from ..pipeline import decode_crop
from ..preprocess import load_image, normalize
from ..weights.records import Preprocess
from .config import TrainConfig, TrainError

__all__ = [
    "TrainDataError",
    "Augment",
    "split_samples",
    "random_resized_crop_box",
    "trivial_augment",
    "train_crop",
    "ImageDataset",
    "Collate",
    "GlobalBatchSampler",
    "shared_image",
    "split_datasets",
    "majority_baseline",
]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class TrainDataError(EffnetError, ValueError):
    """Training data that cannot be used (no images, a class without images, a bad split)."""


@dataclass(frozen=True)
class Augment:
    """The train augmentation; ``scale``/``ratio`` are torchvision ``RandomResizedCrop``'s defaults."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    trivial_augment: bool = False


def split_samples(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """(train, val): ``fraction`` of every class (rounded, at least one where the class has two or more
    images) goes to val, chosen by a generator seeded with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise TrainDataError(f"the validation split must be a fraction in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        n_val = min(len(group) - 1, max(1, round(fraction * len(group)))) if len(group) > 1 else 0
        val.extend(group[i] for i in sorted(order[:n_val]))
        train.extend(group[i] for i in sorted(order[n_val:]))
    if not val:
        raise TrainDataError(f"a validation split of {fraction} leaves no validation images: give --val DIR")
    return tuple(train), tuple(val)


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height): torchvision ``RandomResizedCrop.get_params``, with ``rng``.

    Ten tries at an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``; then the
    largest centered crop whose aspect ratio is within ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


# TrivialAugmentWide (Müller & Hutter 2021; torchvision transforms/autoaugment.py, 31 magnitude bins):
# one op per image, a uniformly drawn magnitude, a random sign for the signed ops.
_BINS = 31
_OPS: dict[str, tuple[float, bool]] = {  # name -> (largest magnitude, signed)
    "Identity": (0.0, False),
    "ShearX": (0.99, True),
    "ShearY": (0.99, True),
    "TranslateX": (32.0, True),
    "TranslateY": (32.0, True),
    "Rotate": (135.0, True),
    "Brightness": (0.99, True),
    "Color": (0.99, True),
    "Contrast": (0.99, True),
    "Sharpness": (0.99, True),
    "Posterize": (0.0, False),
    "Solarize": (0.0, False),
    "AutoContrast": (0.0, False),
    "Equalize": (0.0, False),
}
_ENHANCE = {
    "Brightness": ImageEnhance.Brightness,
    "Color": ImageEnhance.Color,
    "Contrast": ImageEnhance.Contrast,
    "Sharpness": ImageEnhance.Sharpness,
}


def trivial_augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One TrivialAugmentWide op on an RGB image (fill 0 where geometry uncovers pixels, as torchvision)."""
    name = list(_OPS)[int(rng.integers(len(_OPS)))]
    top, signed = _OPS[name]
    b = int(rng.integers(_BINS))
    m = top * b / (_BINS - 1)
    if signed and rng.integers(2):
        m = -m
    if name == "ShearX":
        return image.transform(image.size, Image.Transform.AFFINE, (1, m, 0, 0, 1, 0), Image.Resampling.NEAREST)
    if name == "ShearY":
        return image.transform(image.size, Image.Transform.AFFINE, (1, 0, 0, m, 1, 0), Image.Resampling.NEAREST)
    if name == "TranslateX":
        return image.transform(image.size, Image.Transform.AFFINE, (1, 0, m, 0, 1, 0), Image.Resampling.NEAREST)
    if name == "TranslateY":
        return image.transform(image.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, m), Image.Resampling.NEAREST)
    if name == "Rotate":
        return image.rotate(m, resample=Image.Resampling.NEAREST)
    if name in _ENHANCE:
        return _ENHANCE[name](image).enhance(1.0 + m)
    if name == "Posterize":  # bits: 8 - round(bin / 5), i.e. 8 down to 2
        return ImageOps.posterize(image, 8 - int(round(b / ((_BINS - 1) / 6))))
    if name == "Solarize":  # threshold 255 down to 0
        return ImageOps.solarize(image, int(round(255.0 * (1 - b / (_BINS - 1)))))
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    return image


def train_crop(image: Image.Image, p: Preprocess, rng: np.random.Generator, augment: Augment) -> np.ndarray:
    """The train view of one RGB image: uint8 HWC at ``p.input_size``, resampled with ``p.interpolation``."""
    left, top, w, h = random_resized_crop_box(image.width, image.height, rng, augment.scale, augment.ratio)
    size = (p.input_size, p.input_size)
    out = image.resize(size, _RESAMPLE[p.interpolation], box=(left, top, left + w, top + h))
    if augment.hflip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if augment.trivial_augment:
        out = trivial_augment(out, rng)
    return np.array(out, dtype=np.uint8)


class ImageDataset(torch.utils.data.Dataset):
    """``(uint8 HWC crop, label)`` per sample; ``train=True`` augments with the (seed, epoch, index) generator."""

    def __init__(
        self, samples: Sequence[Sample], preprocess: Preprocess, *, train: bool, augment: Augment, seed: int
    ) -> None:
        self.samples = tuple(samples)
        self.preprocess = preprocess
        self.train = train
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        sample = self.samples[index]
        try:
            if not self.train:
                return decode_crop(sample.path, self.preprocess), sample.label  # the record's eval crop
            rng = np.random.default_rng([self.seed, self.epoch, index])
            return train_crop(load_image(sample.path), self.preprocess, rng, self.augment), sample.label
        except ImageError as e:
            raise TrainDataError(f"cannot train on {sample.path}: {e}") from None


class Collate:
    """Stack crops and normalize them once, with the record's ``normalize``: float32 NCHW + int64 labels."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, items: Sequence[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = np.stack([crop for crop, _ in items])
        labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        return torch.from_numpy(normalize(pixels, self.preprocess)), labels


class GlobalBatchSampler:
    """This rank's share of every global batch of one seeded permutation per epoch, nothing repeated.

    torch's ``DistributedSampler`` pads the permutation with repeats until it divides by the number of
    processes, so an uneven dataset trains (and counts) some images twice per epoch. Here the epoch's
    permutation (the one ``DistributedSampler`` draws: ``randperm(n)`` seeded with ``seed + epoch``) is cut
    into global batches of ``batch`` images and rank r takes every ``world``-th image of each: the union of
    the ranks' k-th batches is the single-process k-th batch, each image once. Ranks may hold one image
    more or less in a batch; the loss is scaled by the global batch size (``global_sizes``), so DDP's
    gradient average is still the mean over the global batch. A last global batch with fewer images than
    processes is merged into the one before it, so every rank runs every step (DDP needs that).
    """

    def __init__(self, n: int, batch: int, world: int, rank: int, seed: int) -> None:
        if n < world:
            raise TrainDataError(f"{n} training images cannot be shared by {world} processes")
        self.n, self.batch, self.world, self.rank, self.seed = n, batch, world, rank, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_sizes(self) -> list[int]:
        sizes = [min(self.batch, self.n - start) for start in range(0, self.n, self.batch)]
        if len(sizes) > 1 and sizes[-1] < self.world:
            sizes[-2:] = [sizes[-2] + sizes[-1]]
        return sizes

    def global_batches(self) -> list[list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        out, start = [], 0
        for size in self.global_sizes():
            out.append(order[start : start + size])
            start += size
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[self.rank :: self.world]

    def __len__(self) -> int:
        return len(self.global_sizes())


def shared_image(train: Sequence[Sample], val: Sequence[Sample]) -> Path | None:
    """A validation image that is also a training image (the same file, through any link), or None."""
    seen = {s.path.resolve() for s in train}
    return next((s.path for s in val if s.path.resolve() in seen), None)


def split_datasets(cfg: TrainConfig) -> tuple[tuple[str, ...], Sequence[Sample], Sequence[Sample]]:
    data = find_class_folders(cfg.data)
    classes = tuple(c.label for c in data.labels)
    if len(classes) < 2:
        raise TrainError(f"{cfg.data} has {len(classes)} class folder: training needs at least two classes")
    if cfg.val is not None:
        val = find_class_folders(cfg.val)
        index = {name: i for i, name in enumerate(classes)}
        unknown = [c.label for c in val.labels if c.label not in index]
        if unknown:
            raise TrainError(f"validation classes {unknown} in {cfg.val} are not class folders of {cfg.data}")
        shared = shared_image(data.samples, val.samples)
        if shared is not None:
            raise TrainError(
                f"--val {cfg.val} shares images with {cfg.data}, e.g. {shared}: validation must be images "
                "the model does not train on"
            )
        remap = [index[c.label] for c in val.labels]
        return classes, data.samples, [replace(s, label=remap[s.label]) for s in val.samples]
    if cfg.val_split == 0:
        return classes, data.samples, []
    train, held_out = split_samples(data.samples, cfg.val_split, cfg.seed)
    return classes, train, held_out


def majority_baseline(train_samples: Sequence[Sample], val_samples: Sequence[Sample]) -> tuple[int, float]:
    """(the training set's most common class, the share of validation images of that class): the accuracy
    of a model that always answers it, the floor a trained model must clear."""
    counts = np.bincount([s.label for s in train_samples])
    label = int(counts.argmax())
    share = sum(s.label == label for s in val_samples) / len(val_samples) if val_samples else 0.0
    return label, share
