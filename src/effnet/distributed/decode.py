"""What a decode task runs: file bytes -> uint8 crops, one block at a time, without Ray and without torch.

A Ray worker imports the module of the function it runs (when it unpickles it), with that module's own
imports. This module holds the decode tasks' function alone, apart from the pipeline that schedules it
(``effnet.distributed.data``) and the inference actors' code (``effnet.distributed.worker``), so a decode
worker imports the image pipeline (Pillow, numpy) and not the model or the backends: importing the module
that held it before took about 1 s of CPU per process on a 2-vCPU node, torch's import mostly, and this one
0.03 s (docs/distributed.md, "Where single-node Ray loses time", cause 2).
``tests/distributed/test_task_imports.py`` keeps it so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ImageError
from ..pipeline import decode_crop
from ..weights.records import Preprocess

__all__ = ["decode_batch", "decode_one", "decode_rows"]


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


def decode_batch(batch: dict[str, np.ndarray], preprocess: Preprocess) -> dict[str, np.ndarray]:
    """The decode tasks' function (``map_batches``): a block of ``path``, ``bytes``, ``error`` -> decode_rows.
    An eval's inputs also carry ``label``: it goes on with its image to the actor (data.EVAL_COLUMNS)."""
    rows = decode_rows(list(batch["path"]), list(batch["bytes"]), list(batch["error"]), preprocess)
    if "label" in batch:
        rows["label"] = batch["label"]
    return rows
