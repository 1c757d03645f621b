"""Fixtures for the evaluation tests: one Lite0 classifier and one evaluation of the sample, shared.

The 100 sample images are evaluated once per session (``sample_report``); other tests reuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from effnet.evaluate import EvalReport, evaluate
from effnet.labels import imagenet_labels


def make_layout(sample: list[Path], root: Path, layout: str) -> tuple[Path, Path | None]:
    """Rebuild the sample (``<synset>_<name>.JPEG``) as another layout with symlinks; returns (DATA, annotations)."""
    index = {c.synset: c.index for c in imagenet_labels()}
    root.mkdir(parents=True)
    if layout == "synset-prefix":
        for p in sample:
            os.symlink(p, root / p.name)
        return root, None
    if layout == "class-folders":
        for p in sample:
            synset, _, rest = p.name.partition("_")
            (root / synset).mkdir(exist_ok=True)
            os.symlink(p, root / synset / rest)
        return root, None
    if layout == "annotations":
        lines = []
        for i, p in enumerate(sample, 1):
            name = f"ILSVRC2012_val_{i:08d}.JPEG"  # names carry no label, as in the real val set
            os.symlink(p, root / name)
            lines.append(f"{name} {index[p.name.partition('_')[0]]}\n")
        ann = root.parent / f"{root.name}_val.txt"
        ann.write_text("".join(lines))
        return root, ann
    raise ValueError(layout)


@pytest.fixture(scope="session")
def build_layout():
    """``build_layout(sample_images, root, layout) -> (DATA, annotations or None)``."""
    return make_layout


@pytest.fixture(scope="session")
def lite0_classifier(lite0_checkpoint: Path):
    from effnet.predict import Classifier

    return Classifier("efficientnet-lite0", progress=False)


@pytest.fixture(scope="session")
def sample_report(lite0_classifier, sample_dir: Path) -> EvalReport:
    return evaluate(lite0_classifier, sample_dir, batch_size=16, workers=2)
