"""THE output-naming rule for files written per input (explain maps and overlays today; annotated videos, audit
reports, relabel files and new caches later): every writer of one output file per input names it here.

Rule: an input's output keeps the input's path **relative to the common folder of all inputs** and its whole
file name (extension included), with ``.<suffix>`` appended: ``train/cat/1.jpg`` and ``val/cat/1.jpg`` become
``train/cat/1.jpg.gradcam.png`` and ``val/cat/1.jpg.gradcam.png``; ``c/photo.jpg`` and ``c/photo.png`` become
``photo.jpg.gradcam.png`` and ``photo.png.gradcam.png``. Two different inputs never get one name; the same
input given twice gets one name (it is one input). Paths are made absolute (not symlink-resolved) first, so
``a/x.jpg`` and ``./a/x.jpg`` are the same input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import EffnetError

__all__ = ["distinct_inputs", "per_input_names"]


def distinct_inputs(inputs: Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """``inputs`` without repeats, in first-seen order: ``cat/1.jpg cat/1.jpg ./cat/1.jpg`` are one input (one
    output name by the rule), so it is computed and reported once. Same test as the rule: absolute paths."""
    seen: set[str] = set()
    out = []
    for p in inputs:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def per_input_names(inputs: Sequence[str | os.PathLike], suffix: str) -> list[Path]:
    """Relative output paths, one per input, in order (see the module docstring for the rule)."""
    if not inputs:
        return []
    absolute = [Path(os.path.abspath(p)) for p in inputs]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    names = [p.relative_to(root).with_name(f"{p.name}.{suffix}") for p in absolute]
    owner: dict[Path, Path] = {}
    for source, name in zip(absolute, names, strict=True):
        if owner.setdefault(name, source) != source:  # cannot happen by the rule; kept so a change to it fails loudly
            raise EffnetError(f"output name {name} would be shared by {owner[name]} and {source}")
    return names
