"""What one Ray worker does, without Ray: decode bytes into crops, and run a batch of crops through a backend.

Kept free of ``import ray`` so the same code is timed by ``benchmarks/bench_ray_node.py`` and
unit-tested without a cluster. Ray only moves the batches (``effnet.distributed.data``).

Rows cross the object store as plain columns: the decode tasks emit ``path``, ``crop`` (uint8 HWC,
4x fewer bytes than the float tensor the model takes) and ``error``; the inference actors emit the
output schema of :data:`RESULT_COLUMNS`, built from :meth:`Classifier.top_k`, so a row is exactly
an :class:`effnet.predict.ImageResult`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EffnetError, ImageError
from ..fileio import atomic_write
from ..pipeline import decode_crop
from ..predict import Classifier, ImageResult, Prediction
from ..weights.records import Preprocess

__all__ = [
    "RESULT_COLUMNS",
    "InferenceSpec",
    "decode_rows",
    "materialize_weights",
    "result_columns",
    "result_from_row",
]

# Output columns, in order: one row per input image. Lists are empty on error rows, error is None otherwise.
RESULT_COLUMNS = ("path", "class_index", "synset", "label", "probability", "error")


def decode_one(path: str, data: bytes, preprocess: Preprocess) -> tuple[np.ndarray | None, str | None]:
    """Image bytes -> (uint8 HWC crop, None) or (None, error naming ``path``), as ``effnet classify`` reports it.

    The decode is the one pipeline's (:func:`effnet.pipeline.decode_crop`, what ``Classifier.crop`` runs). Bytes
    carry no file name, so the name the decoder puts in its message is replaced with ``path``.
    """
    if len(data) == 0:
        return None, f"{path}: empty file (0 bytes)"  # the message load_image gives for an empty path
    try:
        return decode_crop(data, preprocess), None
    except ImageError as e:
        message = str(e)
        anonymous = f"<{len(data)} bytes>"
        if message.startswith(anonymous):
            message = path + message[len(anonymous) :]
        return None, message


def decode_rows(
    paths: Sequence[str], blobs: Sequence[bytes | None], errors: Sequence[str | None], preprocess: Preprocess
) -> dict[str, np.ndarray]:
    """One decode task's batch: ``path``, ``crop`` [N, S, S, 3] uint8 (zeros where ``error``), ``error`` ('' = ok).

    ``errors`` are read errors found before decoding (a listed file that is missing); those rows pass through.
    """
    size = preprocess.input_size
    crops = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    out_errors: list[str] = []
    for i, (path, data, error) in enumerate(zip(paths, blobs, errors, strict=True)):
        if error:
            out_errors.append(error)
            continue
        crop, error = decode_one(path, data or b"", preprocess)
        if crop is not None:
            crops[i] = crop
        out_errors.append(error or "")
    return {"path": np.asarray(paths, dtype=object), "crop": crops, "error": np.asarray(out_errors, dtype=object)}


def result_columns(results: Sequence[ImageResult]) -> dict[str, list]:
    """:class:`ImageResult` s -> the columns of :data:`RESULT_COLUMNS` (what Parquet stores)."""
    columns: dict[str, list] = {name: [] for name in RESULT_COLUMNS}
    for r in results:
        columns["path"].append(r.path)
        columns["class_index"].append([p.class_index for p in r.predictions])
        columns["synset"].append([p.synset for p in r.predictions])
        columns["label"].append([p.label for p in r.predictions])
        columns["probability"].append([p.probability for p in r.predictions])
        columns["error"].append(r.error)
    return columns


def result_from_row(row: dict[str, Any]) -> ImageResult:
    """One output row -> the :class:`ImageResult` it was made from (its ``to_dict`` is the ``--json`` line)."""
    if row.get("error") is not None:
        return ImageResult(str(row["path"]), error=str(row["error"]))
    predictions = [
        Prediction(int(i), str(s), str(label), float(p))
        for i, s, label, p in zip(row["class_index"], row["synset"], row["label"], row["probability"], strict=True)
    ]
    return ImageResult(str(row["path"]), predictions)


# ------------------------------------------------------------------------------------------- weights


def materialize_weights(
    name: str, sha256: str, size: int, shared_path: str | None, fetch_bytes: Callable[[], bytes]
) -> Path:
    """A local, verified copy of the driver's weights file on this node, fetched at most once per node.

    ``shared_path`` is the driver's own path: used as is when this node sees the same file (a shared
    filesystem, or the driver's node). Otherwise the bytes come from the object store (``fetch_bytes``),
    are checked against the driver's sha256 and land in ``$EFFNET_HOME/ray-weights/<sha256>/<name>``
    (written to a temporary name, then renamed), so later actors on the node reuse the file and the export
    cache, keyed by the file, stays valid. Nothing is ever downloaded from the weights' origin here.
    """
    if shared_path is not None:
        shared = Path(shared_path)
        if shared.is_file() and shared.stat().st_size == size:
            return shared
    from ..weights.download import default_cache_dir

    folder = default_cache_dir() / "ray-weights" / sha256
    target = folder / name
    if target.is_file() and target.stat().st_size == size:
        return target
    data = fetch_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise EffnetError(f"weights {name} arrived with sha256 {digest[:12]}..., the driver sent {sha256[:12]}...")
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write(target, lambda tmp: tmp.write_bytes(data), "the shipped weights")


@dataclass(frozen=True)
class InferenceSpec:
    """Everything an inference actor needs to build its classifier once (picklable, small)."""

    model: str
    weights_name: str  # file name of the checkpoint
    weights_sha256: str
    weights_size: int
    shared_path: str | None  # the driver's path to the checkpoint
    backend: str = "auto"
    backend_options: dict[str, Any] = field(default_factory=dict)
    top_k: int = 5

    def build(self, fetch_bytes: Callable[[], bytes]) -> Classifier:
        path = materialize_weights(
            self.weights_name, self.weights_sha256, self.weights_size, self.shared_path, fetch_bytes
        )
        return Classifier(
            self.model, path, backend=self.backend, download=False, progress=False, **self.backend_options
        )
