"""Outputs of a Ray run: the JSON lines / Parquet written at the end.

Outputs are written by Ray's writers into a temporary folder next to the target and renamed into place
at the end, so the final name never holds a partial result: ``OUT.jsonl`` (the part files joined into one
file, itself renamed into place) or a Parquet folder (``OUT/`` or ``OUT.parquet/``). The inputs are
:mod:`effnet.distributed.inputs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as pads
import ray
import ray.data
from ray.data.block import BlockAccessor
from ray.data.datasource import BlockBasedFileDatasink

from ..errors import EffnetError
from ..fileio import atomic_write, temp_dir, writable_dir
from .uris import is_uri

__all__ = [
    "RESULT_SCHEMA",
    "OutputSpec",
    "WriteSummary",
    "check_writable_everywhere",
    "output_spec",
    "read_results",
    "staging",
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


@dataclass(frozen=True)
class OutputSpec:
    path: Path
    format: Literal["jsonl", "parquet"]


def output_spec(out: str | os.PathLike) -> OutputSpec:
    """Check ``--output`` before any work: ``*.jsonl`` -> JSON lines, a folder or ``*.parquet`` -> Parquet.
    An existing output is refused in either format (an empty folder is not an output yet)."""
    text = os.fspath(out)
    if is_uri(text):
        raise EffnetError(
            f"--output {text}: give a local path (on a filesystem every node sees); write to object storage "
            "from the Python API (effnet.distributed.classify(...).write_parquet(URI))"
        )
    path = Path(text).absolute()
    if not path.parent.is_dir():
        raise EffnetError(f"--output {text}: folder {path.parent} does not exist")
    writable_dir(path.parent, "the results")  # before Ray starts (seconds), not at the end of the run
    exists = f"--output {text} exists; remove it or choose another name (outputs never overwrite each other)"
    if path.suffix == ".jsonl":
        if path.is_dir():
            raise EffnetError(f"--output {text} is a folder; a .jsonl output is one file")
        if path.exists() or path.is_symlink():
            raise EffnetError(exists)
        return OutputSpec(path, "jsonl")
    if path.suffix not in ("", ".parquet"):
        raise EffnetError(f"--output {text}: end it in .jsonl (JSON lines) or .parquet, or name a folder (Parquet)")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise EffnetError(exists)
    return OutputSpec(path, "parquet")


def _image_row_dict(row: dict[str, Any]) -> dict[str, Any]:
    from .worker import result_from_row  # here: worker imports the model (torch), and the probe task (_probe,
    # run in the workers that then read and decode) imports this module

    return result_from_row(row).to_dict()


class _JsonLinesDatasink(BlockBasedFileDatasink):
    """One ``effnet classify --json`` line per row (``ImageResult.to_dict``, or ``row_dict``: a video's frame
    rows), a part file per write task."""

    def __init__(self, path: str, row_dict: Callable[[dict[str, Any]], dict[str, Any]] = _image_row_dict) -> None:
        super().__init__(path, file_format="jsonl")
        self.row_dict = row_dict

    def write_block_to_file(self, block: BlockAccessor, file: pa.NativeFile) -> None:
        rows: Iterator[Any] = block.iter_rows(public_row_format=True)
        lines = [json.dumps(self.row_dict(row)) + "\n" for row in rows]
        file.write("".join(lines).encode("utf-8"))


@dataclass(frozen=True)
class WriteSummary:
    path: Path
    rows: int
    errors: int


@contextlib.contextmanager
def staging(spec: OutputSpec) -> Iterator[Path]:
    """A fresh temporary folder next to ``spec.path``, checked to be the same folder on every node, removed
    on any failure or Ctrl-C. Enter it before the pipeline runs: a node that cannot see or write the
    output location then fails the job before any inference, not after it."""
    target = spec.path
    tmp = temp_dir(target.parent, f".{target.name}.", f".{spec.format}.tmp")  # renamed to target: the umask's mode
    try:
        check_writable_everywhere(tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _probe(folder: str, token: str) -> str:
    """On one node: the driver's token is there (the same filesystem), and this node can write beside it."""
    node = ray.util.get_node_ip_address()
    try:
        seen = (Path(folder) / "driver.probe").read_text()
    except OSError as e:
        return f"node {node} does not see the driver's folder {folder} ({e.strerror or e})"
    if seen != token:
        return f"node {node} has another folder at {folder} (not the driver's: not a shared filesystem)"
    try:
        (Path(folder) / f"{node}.{os.getpid()}.probe").write_text(token)
    except OSError as e:
        return f"node {node} cannot write in {folder} ({e.strerror or e})"
    return ""


def check_writable_everywhere(folder: Path, timeout: float = 120.0) -> None:
    """Raise :class:`EffnetError` unless every alive node sees ``folder`` as the driver does and can write
    in it (a zero-CPU task pinned to each node). Nodes that join later (autoscaling) are not checked."""
    token = os.urandom(16).hex()
    (folder / "driver.probe").write_text(token)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(str(folder), token)
        for node in nodes
    ]
    try:
        problems = [p for p in ray.get(refs, timeout=timeout) if p]
    except ray.exceptions.GetTimeoutError:
        problems = [f"not every node answered within {timeout:.0f} s"]
    for f in folder.glob("*.probe"):
        f.unlink(missing_ok=True)
    if problems:
        raise EffnetError(
            f"--output {folder.parent}: the output must be on a filesystem every node sees and can write "
            f"(NFS, EFS...): {'; '.join(problems)}"
        )


def _check_count(rows: int, expected: int | None, target: Path) -> None:
    if expected is not None and rows != expected:
        raise EffnetError(
            f"the run wrote {rows:,} rows for {expected:,} inputs (each input must give exactly one); "
            f"nothing was written to {target}"
        )


def write_results(
    ds: ray.data.Dataset,
    spec: OutputSpec,
    parts: Path,
    expected: int | None = None,
    row_dict: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> WriteSummary:
    """Run ``ds`` (result rows) to completion into ``spec.path`` through the staging folder ``parts``
    (:func:`staging`); the final name appears only when complete and holding ``expected`` rows. ``row_dict``:
    a row -> its JSON line's object, for rows other than images' (a video's frames)."""
    target = spec.path
    if spec.format == "parquet":
        ds.write_parquet(str(parts), try_create_dir=False)
        table = pads.dataset(str(parts), format="parquet").to_table(columns=["error"])
        rows, errors = table.num_rows, table.num_rows - table.column("error").null_count
        _check_count(rows, expected, target)
        os.rename(parts, target)  # a folder: one rename; an existing empty folder is replaced
        return WriteSummary(target, rows, errors)
    ds.write_datasink(_JsonLinesDatasink(str(parts), row_dict or _image_row_dict))
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
        _check_count(rows, expected, target)  # before the rename: a short result never takes the final name

    atomic_write(target, concatenate, "the results")
    return WriteSummary(target, rows, errors)


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a written output (either format) as dicts, for tests and quick checks."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return pads.dataset(str(path), format="parquet").to_table().to_pylist()
