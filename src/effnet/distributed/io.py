"""Inputs and outputs of a Ray run: which files to read, and the JSON lines / Parquet written at the end.

Discovery happens in the cluster: a folder or prefix is read by ``ray.data.read_binary_files`` (its
tasks list and read the files), and a ``--from-list`` file is itself a dataset (``ray.data.read_text``)
whose lines are read by tasks. The driver looks only at the few arguments it was given.

Outputs are written by Ray's writers into a temporary folder next to the target and renamed into place
at the end, so the final name never holds a partial result: ``OUT.jsonl`` (the part files joined into one
file, itself renamed into place) or a Parquet folder (``OUT/`` or ``OUT.parquet/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import ray.data
from ray.data.block import BlockAccessor
from ray.data.datasource import BlockBasedFileDatasink

from ..errors import EffnetError
from ..fileio import atomic_write, temp_dir
from ..preprocess import IMAGE_EXTENSIONS
from .worker import result_from_row

__all__ = [
    "RESULT_SCHEMA",
    "OutputSpec",
    "WriteSummary",
    "output_spec",
    "read_inputs",
    "read_paths",
    "small_blocks",
    "write_results",
]

# The Parquet schema of a result row (worker.RESULT_COLUMNS, in that order). Probabilities are float64: the
# model's float32 converts exactly, so the JSON line made from a row is the one `effnet classify --json` prints.
RESULT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("class_index", pa.list_(pa.int64())),
        ("synset", pa.list_(pa.string())),
        ("label", pa.list_(pa.string())),
        ("probability", pa.list_(pa.float64())),
        ("error", pa.string()),
    ]
)

# Rows per block from reading on. A block moves to the next operator only when whole, so big blocks (a
# folder's read task yields up to 128 MB) would make the actors wait for the decoding of all of it.
BLOCK_ROWS = 16
# The remote arguments of the read and decode tasks. ``memory``: what a decode worker was seen to hold
# (Ray Data warned of ~330 MiB at 64 MiB reserved, Lite0 on this machine) with room for a B5 block (16 x
# 456 x 456 x 3 = 10 MB) and a 12 MP photo being decoded (36 MB). It also keeps decode out of the
# inference actors' operator: Ray Data fuses a task map into an actor map whose remote arguments equal
# its own, and then every actor would decode its input itself, between forward passes, instead of decode
# tasks running beside it on the node's other CPUs.
TASK_ARGS: dict[str, Any] = {"num_cpus": 1.0, "memory": 512 * 2**20}

# Columns of the input datasets after reading: path, bytes (None when unreadable), error ('' when fine).
_EXTENSIONS = [e.lstrip(".") for e in IMAGE_EXTENSIONS]


def _is_uri(text: str) -> bool:
    return "://" in text


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise EffnetError(f"{uri}: not a URI pyarrow can read ({e})") from None


def _scheme_prefix(uri: str) -> str:
    """What Ray's reader drops from a URI's paths ('s3://'), put back so rows name what the user gave."""
    scheme = uri.split("://", 1)[0]
    return "" if scheme == "file" else f"{scheme}://"


def _with_error_column(batch: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    paths = batch["path"] if not prefix else np.asarray([prefix + p for p in batch["path"]], dtype=object)
    return {"path": paths, "bytes": batch["bytes"], "error": np.full(len(paths), "", dtype=object)}


def _read_listed(batch: dict[str, np.ndarray], base: str) -> dict[str, np.ndarray]:
    """A batch of list lines (paths or URIs) -> path, bytes, error. Runs in a Ray task, not the driver."""
    paths: list[str] = []
    blobs: list[bytes | None] = []
    errors: list[str] = []
    filesystems: dict[str, tuple[pafs.FileSystem, str]] = {}
    for raw in batch["text"]:
        entry = str(raw).strip()
        if not entry or entry.startswith("#"):
            continue
        data: bytes | None = None
        error = ""
        try:
            if _is_uri(entry):
                name = entry
                scheme, rest = entry.split("://", 1)
                root = f"{scheme}://{rest.split('/', 1)[0]}"
                if root not in filesystems:  # one filesystem object per bucket/host, not per file
                    filesystems[root] = _filesystem(entry)
                fs = filesystems[root][0]
                # Object stores name files bucket/key; other filesystems (file, hdfs) by their own path.
                inner = rest if scheme in ("s3", "gs", "gcs") else _filesystem(entry)[1]
                with fs.open_input_stream(inner) as f:
                    data = f.read()
            else:
                name = os.path.join(base, entry)
                with open(name, "rb") as f:
                    data = f.read()
        except FileNotFoundError:
            error = f"{name}: no such file"  # the message effnet classify gives for a missing path
        except IsADirectoryError:
            error = f"{name}: is a folder, not an image file (list files one per line)"
        except (OSError, EffnetError) as e:
            error = f"{name}: cannot read: {e}"
        paths.append(name)
        blobs.append(data)
        errors.append(error)
    return {
        "path": np.asarray(paths, dtype=object),
        "bytes": np.asarray(blobs, dtype=object),
        "error": np.asarray(errors, dtype=object),
    }


def read_inputs(paths: Sequence[str | os.PathLike], from_list: Sequence[str | os.PathLike] = ()) -> ray.data.Dataset:
    """A dataset of ``path``, ``bytes``, ``error`` rows: every image under the folders/prefixes in ``paths``
    (by image extension, recursively), every file named explicitly (whatever its extension, so a bad file
    is reported, not skipped), and every line of the ``from_list`` files (read in the cluster).
    """
    base = os.getcwd()
    folders: list[ray.data.Dataset] = []
    listed: list[str] = []
    for raw in paths:
        text = os.fspath(raw)
        if _is_uri(text):
            fs, inner = _filesystem(text)
            kind = fs.get_file_info(inner).type
            if kind == pafs.FileType.Directory:
                ds = ray.data.read_binary_files(text, include_paths=True, file_extensions=_EXTENSIONS)
                folders.append(small_blocks(ds.map_batches(partial(_with_error_column, prefix=_scheme_prefix(text)))))
            else:
                listed.append(text)  # a file, or missing: its row says which
        elif Path(text).is_dir():
            ds = ray.data.read_binary_files(os.path.abspath(text), include_paths=True, file_extensions=_EXTENSIONS)
            folders.append(small_blocks(ds.map_batches(partial(_with_error_column, prefix=""))))
        else:
            listed.append(os.path.abspath(text))
    parts = list(folders)
    if listed:
        parts.append(ray.data.from_items([{"text": p} for p in listed]))
    for file in from_list:
        text = os.fspath(file)
        if not _is_uri(text) and not Path(text).is_file():
            raise EffnetError(f"--from-list {text}: no such file")
        parts.append(ray.data.read_text(text if _is_uri(text) else os.path.abspath(text)))
    if not parts:
        raise EffnetError("no inputs: give image files, folders, URIs or --from-list FILE")
    read = [p if p in folders else _read_lines(p, base) for p in parts]
    return read[0].union(*read[1:]) if len(read) > 1 else read[0]


def small_blocks(ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds`` in blocks of at most ``BLOCK_ROWS`` rows (a streaming repartition: no all-to-all shuffle)."""
    return ds.repartition(target_num_rows_per_block=BLOCK_ROWS)


def _read_lines(lines: ray.data.Dataset, base: str) -> ray.data.Dataset:
    """A dataset of ``text`` lines (paths or URIs) -> their files' rows, read by tasks of ``BLOCK_ROWS`` files.

    A list file is one block of lines (millions, for a big list); it is cut into small blocks first, so
    the files are read by many tasks and the first crops reach the inference actors after one small read.
    The read tasks ask for what the decode tasks ask for (``TASK_ARGS``): Ray Data then fuses each read
    into the decode of the same files, one task instead of two and no bytes through the object store.
    """
    small = lines.repartition(target_num_rows_per_block=BLOCK_ROWS)
    return small.map_batches(partial(_read_listed, base=base), batch_size=BLOCK_ROWS, **TASK_ARGS)


def read_paths(paths: Sequence[str | os.PathLike]) -> ray.data.Dataset:
    """``path``, ``bytes``, ``error`` rows for a known list of files (an eval set the driver has labelled)."""
    return _read_lines(ray.data.from_items([{"text": os.fspath(p)} for p in paths]), os.getcwd())


# ------------------------------------------------------------------------------------------ outputs


@dataclass(frozen=True)
class OutputSpec:
    path: Path
    format: Literal["jsonl", "parquet"]


def output_spec(out: str | os.PathLike) -> OutputSpec:
    """Check ``--output`` before any work: ``*.jsonl`` -> JSON lines, a folder or ``*.parquet`` -> Parquet."""
    text = os.fspath(out)
    if _is_uri(text):
        raise EffnetError(
            f"--output {text}: give a local path (on a filesystem every node sees); write to object storage "
            "from the Python API (effnet.distributed.classify(...).write_parquet(URI))"
        )
    path = Path(text).absolute()
    if not path.parent.is_dir():
        raise EffnetError(f"--output {text}: folder {path.parent} does not exist")
    if path.suffix == ".jsonl":
        if path.is_dir():
            raise EffnetError(f"--output {text} is a folder; a .jsonl output is one file")
        return OutputSpec(path, "jsonl")
    if path.suffix not in ("", ".parquet"):
        raise EffnetError(f"--output {text}: end it in .jsonl (JSON lines) or .parquet, or name a folder (Parquet)")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise EffnetError(f"--output {text} exists; remove it or choose another name (a run never mixes outputs)")
    return OutputSpec(path, "parquet")


class _JsonLinesDatasink(BlockBasedFileDatasink):
    """One ``effnet classify --json`` line per row (``ImageResult.to_dict``), a part file per write task."""

    def __init__(self, path: str) -> None:
        super().__init__(path, file_format="jsonl")

    def write_block_to_file(self, block: BlockAccessor, file: pa.NativeFile) -> None:
        rows: Iterator[Any] = block.iter_rows(public_row_format=True)
        lines = [json.dumps(result_from_row(row).to_dict()) + "\n" for row in rows]
        file.write("".join(lines).encode("utf-8"))


@dataclass(frozen=True)
class WriteSummary:
    path: Path
    rows: int
    errors: int


@contextlib.contextmanager
def _staging(target: Path, kind: str) -> Iterator[Path]:
    """A fresh temporary folder next to ``target``, removed on any failure or Ctrl-C."""
    tmp = temp_dir(target.parent, f".{target.name}.", f".{kind}.tmp")  # renamed to target: the umask's mode
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_results(ds: ray.data.Dataset, spec: OutputSpec) -> WriteSummary:
    """Run ``ds`` (result rows) to completion into ``spec.path``; the final name appears only when complete."""
    target = spec.path
    with _staging(target, "parts") as parts:
        if spec.format == "parquet":
            ds.write_parquet(str(parts), try_create_dir=False)
            table = pads.dataset(str(parts), format="parquet").to_table(columns=["error"])
            rows, errors = table.num_rows, table.num_rows - table.column("error").null_count
            os.rename(parts, target)  # a folder: one rename; an existing empty folder is replaced
            return WriteSummary(target, rows, errors)
        ds.write_datasink(_JsonLinesDatasink(str(parts)))
        rows = errors = 0

        def concatenate(tmp: Path) -> None:
            nonlocal rows, errors
            with tmp.open("wb") as out:
                for part in sorted(parts.iterdir()):
                    with part.open("rb") as f:
                        for line in f:
                            rows += 1
                            errors += "error" in json.loads(line)
                            out.write(line)

        atomic_write(target, concatenate, "the results")
        return WriteSummary(target, rows, errors)


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a written output (either format) as dicts, for tests and quick checks."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return pads.dataset(str(path), format="parquet").to_table().to_pylist()
