"""The audit's one pass over the images: each file's bytes hashed (exact duplicates, the cache key), its size
read from its header (tiny images), and its probe embeddings computed through the bulk pipeline
(:func:`effnet.pipeline.iter_batches`: decode-ahead threads, the record's crop) — or read from the cache.

The embedding cache (``$EFFNET_HOME/embeddings/<key>/``) is keyed like the export cache: by the content of
the weights (their sha256, :func:`effnet.export.cache.weights_key`), the model, the preprocessing and the
embeddings taken; inside it one ``<sha256 of the image's bytes>.npy`` per image, so a renamed or copied image
is not embedded twice, and an edited one is embedded again. Each entry is written whole (temp, then rename).

The cache stays with the caller: only its misses go to an :data:`EmbedEngine`, this process's by default, or a
Ray cluster's (``effnet audit --engine ray``, :mod:`effnet.distributed.embed`); both run :func:`embed_crops`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .._version import __version__
from ..errors import EffnetError
from ..fileio import atomic_write
from ..pipeline import iter_batches
from ..preprocess import normalize
from ..source import ModelSource
from ..train.passes import probe_taps
from ..weights.download import default_cache_dir
from ..weights.preprocessing import Preprocess

if TYPE_CHECKING:  # pragma: no cover
    from ..model import EfficientNet

__all__ = [
    "FileFacts",
    "file_facts",
    "Embeddings",
    "embed_images",
    "embed_crops",
    "EMBEDDINGS_DIR",
    "Embedded",
    "EmbedEngine",
]

EMBEDDINGS_DIR = "embeddings"
_SCHEMA = "effnet.embeddings/1"


@dataclass(frozen=True)
class FileFacts:
    sha256: str | None  # None: the file could not be read
    size: int
    width: int | None  # from the header; None when Pillow cannot identify the file
    height: int | None
    error: str | None = None  # why it is not embedded (read error, decompression bomb); None: embed it


def file_facts(path: Path) -> FileFacts:
    try:
        data = path.read_bytes()
    except OSError as e:  # a dangling link, no permission, a folder named *.jpg: say which
        return FileFacts(None, 0, None, None, f"cannot be read: {e.strerror or e}")
    size: tuple[int, int] | None = None
    error = None
    try:
        # Pillow warns (once, on stderr) about images over its pixel limit: here that is the reason, not noise.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        error = f"too many pixels to decode safely ({e})"
    except Exception:  # noqa: BLE001 - any header Pillow rejects: the decode pass names the reason
        size = None
    digest = hashlib.sha256(data).hexdigest()
    w, h = (None, None) if size is None else size
    return FileFacts(digest, len(data), w, h, error)


@dataclass(frozen=True)
class Embeddings:
    taps: tuple[int | None, ...]  # the stage of each block of columns (None: the head convolution)
    widths: tuple[int, ...]
    rows: np.ndarray  # [N, sum(widths)] float32; NaN rows for the images that failed
    errors: dict[int, str]  # image index -> why it could not be decoded
    cached: int  # rows read from the cache

    def block(self, tap: int | None) -> np.ndarray:
        start = sum(self.widths[: self.taps.index(tap)])
        return self.rows[:, start : start + self.widths[self.taps.index(tap)]]


@dataclass(frozen=True)
class Embedded:
    """One batch from an :data:`EmbedEngine`: ``rows[j]`` is the embedding of ``paths[positions[j]]``;
    ``errors`` maps a position to why that image could not be decoded (without its path)."""

    positions: list[int]
    rows: np.ndarray  # [len(positions), sum(widths)] float32
    errors: dict[int, str]


# What computes the embeddings the cache does not hold: (paths, the source, the taps) -> batches, each image
# once, in any order. The default runs here (:func:`_embed_here`); ``--engine ray`` on a cluster.
EmbedEngine = Callable[[Sequence[Path], ModelSource, tuple[int | None, ...]], Iterator[Embedded]]


def embed_crops(net: EfficientNet, crops: np.ndarray, preprocess: Preprocess, taps: Sequence[int | None]) -> np.ndarray:
    """uint8 NHWC crops -> [N, sum(widths)] float32: the pooled embeddings of ``taps``, side by side."""
    device = next(net.parameters()).device
    x = torch.from_numpy(normalize(crops, preprocess)).to(device)
    with torch.inference_mode():
        return torch.cat(net.pooled_embeddings(x, taps), dim=1).float().cpu().numpy()


def _cache_dir(source: ModelSource, taps: Sequence[int | None]) -> Path | None:
    if source.checkpoint is None:  # random init: different weights on every run
        return None
    from ..export.cache import key_digest, weights_key

    key = {
        "schema": _SCHEMA,
        "model": source.model,
        "weights": weights_key(source),
        "build": {k: v for k, v in source.build_kwargs().items() if k != "num_classes"},
        "preprocess": source.preprocess.to_dict(),
        "taps": [t for t in taps],
        "versions": {"effnet": __version__, "torch": torch.__version__},
    }
    return default_cache_dir() / EMBEDDINGS_DIR / key_digest(json.loads(json.dumps(key, default=str)))


def embed_images(
    paths: Sequence[Path],
    facts: Sequence[FileFacts],
    source: ModelSource,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    cache: bool = True,
    progress: bool = True,
    engine: EmbedEngine | None = None,
) -> Embeddings:
    """The probe's candidate embeddings of every image (rows in ``paths`` order). Images found in the cache
    are read from it; the others are embedded by ``engine`` (default: here, through the bulk pipeline), one
    per distinct content (a byte-identical copy takes its twin's row), and cached here."""
    net = source.build_model().eval()
    taps, widths = probe_taps(net)
    rows = np.full((len(paths), sum(widths)), np.nan, dtype=np.float32)
    directory = _cache_dir(source, taps) if cache else None
    todo: dict[str, list[int]] = {}  # content (sha256, else the path) -> the images holding it
    cached = 0
    for i, f in enumerate(facts):
        if f.error is not None:
            continue  # not embedded: the audit lists it with f.error
        entry = directory / f"{f.sha256}.npy" if directory is not None and f.sha256 else None
        if entry is not None and _load_row(entry, rows[i]):
            cached += 1
            continue
        todo.setdefault(f.sha256 or str(paths[i]), []).append(i)
    if directory is not None and todo:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EffnetError(f"cannot write the embedding cache {directory}: {e.strerror or e}") from None
    first = [group[0] for group in todo.values()]
    errors: dict[int, str] = {}
    run = engine or functools.partial(_embed_here, net=net, batch_size=batch_size, workers=workers)
    # A bar on stderr for what is not cached (tqdm hides it when stderr is not a terminal).
    bar = tqdm(total=len(first), unit="img", desc="embedding", file=sys.stderr, disable=None if progress else True)
    with bar:
        # Nothing missing: the engine is not called (a Ray engine would connect to a cluster for nothing).
        for batch in run([paths[i] for i in first], source, tuple(taps)) if first else ():
            bar.update(len(batch.positions) + len(batch.errors))
            for pos, why in batch.errors.items():
                for i in todo[_content(facts, paths, first[pos])]:
                    errors[i] = why
            bad = int((~np.isfinite(batch.rows).all(axis=1)).sum())
            if bad:  # the weights, not the images: nothing is cached, no image is blamed
                raise EffnetError(
                    f"the model produced non-finite embeddings (NaN or infinity) for {bad} of {len(batch.rows)} "
                    f"images in a batch: the weights {source.checkpoint or source.model} look damaged"
                )
            for pos, row in zip(batch.positions, batch.rows, strict=True):
                i = first[pos]
                rows[todo[_content(facts, paths, i)]] = row
                sha = facts[i].sha256
                if directory is not None and sha:
                    atomic_write(directory / f"{sha}.npy", functools.partial(_save_npy, row=row), "embedding")
    return Embeddings(tuple(taps), tuple(widths), rows, errors, cached)


def _content(facts: Sequence[FileFacts], paths: Sequence[Path], i: int) -> str:
    return facts[i].sha256 or str(paths[i])


def _embed_here(
    paths: Sequence[Path],
    source: ModelSource,
    taps: tuple[int | None, ...],
    *,
    net: EfficientNet,
    batch_size: int,
    workers: int | None,
) -> Iterator[Embedded]:
    """The default engine: this process's bulk pipeline (decode-ahead threads, the record's crop)."""
    for batch in iter_batches(
        range(len(paths)), source.preprocess, batch_size=batch_size, workers=workers, image_of=lambda i: paths[i]
    ):
        # The report names the path once: the decoder's message loses its path prefix.
        errors = {d.item: (d.error or "cannot be decoded").removeprefix(f"{paths[d.item]}: ") for d in batch.failed}
        good = batch.good
        out = embed_crops(net, np.stack([d.crop for d in good]), source.preprocess, taps) if good else None
        width = 0 if out is None else out.shape[1]
        yield Embedded([d.item for d in good], out if out is not None else np.zeros((0, width), np.float32), errors)


def _load_row(entry: Path, row: np.ndarray) -> bool:
    """Fill ``row`` from a cache entry; False (a miss: embedded again, the entry overwritten) when the entry is
    absent, unreadable, truncated, of another width or not finite."""
    try:
        value = np.load(entry, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any damage (EOFError on an empty file, ValueError, OSError) is a miss
        return False
    if value.shape != row.shape or not np.isfinite(value).all():
        return False
    row[:] = value
    return True


def _save_npy(path: Path, row: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, row)
