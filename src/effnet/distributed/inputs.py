"""Inputs of a Ray run: which files to read, and where each is read.

The driver expands what it was given (folders, prefixes, list files) into one entry per input, so it
knows how many rows the output must have; local folders are listed with the folder walk every command uses
(:func:`effnet.files.walk_images`: symlinked folders followed, hidden and ``._*`` files skipped); local files
are read by the driver and shipped through the object store unless the user declares them shared
(:func:`read_inputs`); URIs are read by tasks. The outputs are :mod:`effnet.distributed.outputs`.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray
import ray.data
from ray.data import DataContext
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ..errors import EffnetError
from ..files import absolute, find_images, read_list
from .uris import is_uri, list_uri_folder, local_path, uri_filesystem

__all__ = [
    "BLOCK_ROWS",
    "SHIP_LIMIT_BYTES",
    "TASK_ARGS",
    "Inputs",
    "list_inputs",
    "list_lines",
    "read_inputs",
    "read_paths",
    "small_blocks",
]

# Rows per block from reading on. Each block costs three Ray tasks (read, decode, the actor's call) and Ray Data's
# per-task work: 64 ran a 10k-image Lite0 eval 1.6x faster than 16, and 128 slower (docs/distributed.md, cause 5).
BLOCK_ROWS = 64
# The remote arguments of the read and decode tasks. ``memory``: what a decode worker was seen to hold
# (Ray Data warned of ~330 MiB at 64 MiB reserved, Lite0 on this machine) with room for a B5 block (64 x
# 456 x 456 x 3 = 40 MB) and a 12 MP photo being decoded (36 MB). It also keeps decode out of the
# inference actors' operator: Ray Data fuses a task map into an actor map whose remote arguments equal
# its own, and then every actor would decode its input itself, between forward passes, instead of decode
# tasks running beside it on the node's other CPUs.
TASK_ARGS: dict[str, Any] = {"num_cpus": 1.0, "memory": 512 * 2**20}

# The most bytes of local inputs a Ray Client driver (``ray://``, not a node) reads and puts into the object
# store itself: it holds every block's ref until the job ends. Past it, the object store of the server's node
# and the client's one network link become the job's bottleneck: such inputs belong on storage every node
# reads. A driver on a node streams its files instead (:class:`_DriverFiles`), with no limit.
SHIP_LIMIT_BYTES = 2 * 2**30


def list_lines(list_file: str) -> list[str]:
    """The entries of a ``--from-list`` file (read by the driver: it names it), blank lines and # comments out."""
    try:
        if is_uri(list_file) and not list_file.startswith("file://"):
            fs, inner = uri_filesystem(list_file)
            with fs.open_input_stream(inner) as f:
                text = f.read().decode("utf-8-sig")  # a byte-order mark is not part of the first name
        else:
            path = Path(local_path(list_file) or list_file)
            if not path.is_file():
                raise EffnetError(f"--from-list {list_file}: no such file")
            text = read_list(path)
    except (OSError, UnicodeDecodeError) as e:
        raise EffnetError(f"--from-list {list_file}: cannot read: {e}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _expand(paths: Sequence[str | os.PathLike], from_list: Sequence[str | os.PathLike]) -> list[str]:
    """Every input, named as its row will name it: the folders and prefixes in ``paths`` expanded (image
    extensions, recursively), files named explicitly kept whatever their extension (a bad file is reported,
    not skipped), local paths made absolute (a node's working directory is not the driver's). A list's lines
    are files, taken as they are (no look-up per line: a list may name millions of objects)."""
    out: list[str] = []
    for raw in paths:
        text = os.fspath(raw)
        local = local_path(text)
        if local is None:
            listed = list_uri_folder(text)
            out.extend(listed if listed is not None else [text])  # a file, or missing: its row says which
        elif Path(local).is_dir():
            prefix = "file://" if text.startswith("file://") else ""
            out.extend(prefix + str(p) for p in find_images([absolute(local)]))
        else:
            out.append(text if text.startswith("file://") else absolute(local))
    out.extend(line if is_uri(line) else absolute(line) for f in from_list for line in list_lines(os.fspath(f)))
    return out


def _read_file(local: str) -> bytes:
    """A local input's bytes, read by a Ray task. Opened without blocking and checked to be a regular file
    first: open() on a FIFO without a writer blocks forever, and a task is no shell's stream to read."""
    fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK)  # no effect on a regular file's reads
    with open(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder: read() raises IsADirectoryError
            raise io.UnsupportedOperation(local)  # an OSError: the caller's error row
        return f.read()


def _read_error(name: str, e: OSError | EffnetError, where: str = "") -> str:
    if isinstance(e, io.UnsupportedOperation):
        return f"{name}: not a regular file (a FIFO or device: --engine ray reads files; classify it locally)"
    if isinstance(e, FileNotFoundError):
        return f"{name}: no such file{where}"  # the message effnet classify gives for a missing path
    if isinstance(e, IsADirectoryError):
        return f"{name}: is a folder, not an image file (list files one per line)"
    return f"{name}: cannot read{where}: {str(e).removeprefix(name + ': ')}"  # an EffnetError names it already


def _read_listed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch of entries (cluster URIs, or with --shared-inputs local paths) -> path, bytes, error (and
    ``label`` as it came, where the entries carry one: an eval's, see :func:`read_inputs`).

    Runs in a Ray task, on any node. A local path the driver saw but this node does not is an error row
    naming the node: --shared-inputs promised that every node sees it.
    """
    paths: list[str] = []
    blobs: list[bytes | None] = []
    errors: list[str] = []
    filesystems: dict[str, tuple[pafs.FileSystem, str]] = {}
    for raw in batch["text"]:
        name = str(raw)
        data: bytes | None = None
        error = ""
        local = local_path(name)
        try:
            if local is None:
                scheme, rest = name.split("://", 1)
                root = f"{scheme}://{rest.split('/', 1)[0]}"
                if root not in filesystems:  # one filesystem object per bucket/host, not per file
                    filesystems[root] = uri_filesystem(name)
                fs = filesystems[root][0]
                # Object stores name files bucket/key; other filesystems (hdfs) by their own path.
                inner = rest if scheme in ("s3", "gs", "gcs") else uri_filesystem(name)[1]
                with fs.open_input_stream(inner) as f:
                    data = f.read()
            else:
                data = _read_file(local)
        except (OSError, EffnetError) as e:
            node = ray.util.get_node_ip_address()
            where = "" if local is None else f" on node {node} (--shared-inputs: every node must see it)"
            error = _read_error(name, e, where)
        paths.append(name)
        blobs.append(data)
        errors.append(error)
    columns = _columns(paths, blobs, errors)
    if "label" in batch:
        columns["label"] = np.asarray(batch["label"], np.int64)
    return columns


def _columns(paths: list[str], blobs: list[bytes | None], errors: list[str]) -> dict[str, np.ndarray]:
    return {
        "path": np.asarray(paths, dtype=object),
        "bytes": np.asarray(blobs, dtype=object),
        "error": np.asarray(errors, dtype=object),
    }


@dataclass(frozen=True)
class Inputs:
    """What a job reads: a dataset of ``path``, ``bytes``, ``error`` rows, one per input (and ``label``, an
    int64, where the job gave each input its label: ``read_inputs(labels=...)``)."""

    dataset: ray.data.Dataset
    count: int  # rows the dataset yields (the output must have exactly as many)
    shipped: int  # local inputs read on the driver's node (or, from a Ray Client, by the driver)
    shipped_bytes: int  # their size as the driver saw it when it listed them


def _read_local(entries: list[tuple[str, str]], labels: list[int] | None = None) -> list[pa.Table]:
    """One read task of :class:`_DriverFiles`: ``(name, local path)`` entries (and their labels) -> one block."""
    paths: list[str] = []
    blobs: list[bytes | None] = []
    errors: list[str] = []
    for name, local in entries:
        data: bytes | None = None
        error = ""
        try:
            data = _read_file(local)
        except OSError as e:
            error = _read_error(name, e)
        paths.append(name)
        blobs.append(data)
        errors.append(error)
    columns = {"path": paths, "bytes": pa.array(blobs, pa.binary()), "error": errors}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    return [pa.table(columns)]


class _DriverFiles(Datasource):
    """Local files read on the driver's node, ``BLOCK_ROWS`` per read task, as the pipeline pulls them.

    ``supports_distributed_reads = False`` is Ray Data's own way of pinning reads to the driver's node
    (what it does for ``local://`` paths): a driver is a process of a node of its cluster, so that node
    sees the files the driver saw. The reads are tasks of the streaming executor, so they start only as
    the operators downstream take blocks (backpressure: Ray Data's object store budget per operator) and
    the driver itself holds only the list of names. No size limit: memory does not grow with the job.
    """

    def __init__(
        self, entries: list[tuple[str, str, int]], block_rows: int = BLOCK_ROWS, labels: list[int] | None = None
    ) -> None:
        super().__init__()
        self._entries, self._block_rows, self._labels = entries, block_rows, labels

    @property
    def supports_distributed_reads(self) -> bool:
        return False

    def get_name(self) -> str:
        return "DriverFiles"

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(size for _, _, size in self._entries)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: DataContext | None = None
    ) -> list[ReadTask]:
        tasks = []
        for start in range(0, len(self._entries), self._block_rows):
            chunk = self._entries[start : start + self._block_rows]
            meta = BlockMetadata(
                num_rows=len(chunk), size_bytes=sum(s for _, _, s in chunk), input_files=None, exec_stats=None
            )
            pairs = [(name, path) for name, path, _ in chunk]  # each task carries its own files, not the list
            labels = None if self._labels is None else self._labels[start : start + self._block_rows]
            tasks.append(ReadTask(partial(_read_local, pairs, labels), meta, per_task_row_limit=per_task_row_limit))
        return tasks


# Reads on the driver's node ask for no CPU: they are a few file reads per block, and a head node started
# with --num-cpus 0 (common, to keep work off it) could not run them otherwise. ``concurrency`` bounds them.
LOCAL_READ_ARGS: dict[str, Any] = {"num_cpus": 0, "concurrency": 2}


def _stream_local(
    entries: list[tuple[str, str]], block_rows: int, labels: list[int] | None = None
) -> tuple[ray.data.Dataset, int, int]:
    """The driver's local files as a dataset read on its node; returns it, the files present, their bytes."""
    sized: list[tuple[str, str, int]] = []
    present = total = 0
    for name, path in entries:
        try:
            size = os.stat(path).st_size
            present += 1
        except OSError:
            size = 0  # its read gives the error row, with the reason as the read sees it
        total += size
        sized.append((name, path, size))
    source = _DriverFiles(sized, block_rows, labels)
    blocks = -(-len(sized) // block_rows)  # one block per read task: Ray Data would otherwise split them smaller
    return ray.data.read_datasource(source, override_num_blocks=blocks, **LOCAL_READ_ARGS), present, total


def _ship(
    entries: list[tuple[str, str]], block_rows: int = BLOCK_ROWS, labels: list[int] | None = None
) -> tuple[list[Any], int, int]:
    """Read ``(name, local path)`` entries in this process into blocks of ``BLOCK_ROWS`` rows, each put into
    the object store as it is read. Only for a Ray Client (``ray://``), whose driver is no node of the
    cluster: every ref lives until the job ends, hence the limit. Returns refs, bytes, missing."""
    total = 0
    for _, local in entries:
        with contextlib.suppress(OSError):
            total += os.stat(local).st_size
    if total > SHIP_LIMIT_BYTES:
        raise EffnetError(
            f"the {len(entries):,} local inputs hold {total / 2**30:.1f} GiB, more than a Ray Client driver ships "
            f"through the object store ({SHIP_LIMIT_BYTES / 2**30:.0f} GiB): put them where every node sees them "
            "and add --shared-inputs, give URIs (s3://, gs://), or run the driver on a node of the cluster"
        )
    refs: list[Any] = []
    shipped = missing = 0
    for start in range(0, len(entries), block_rows):
        block = _read_local(
            entries[start : start + block_rows], None if labels is None else labels[start : start + block_rows]
        )[0]
        errors = [e for e in block.column("error").to_pylist() if e]
        missing += len(errors)
        shipped += sum(len(b) for b in block.column("bytes").to_pylist() if b is not None)
        refs.append(ray.put(block))
    return refs, shipped, missing


def list_inputs(paths: Sequence[str | os.PathLike], from_list: Sequence[str | os.PathLike] = ()) -> list[str]:
    """Every input, named as its row will name it (folders, prefixes and list files expanded); an error when
    there is none. Needs no Ray: call it before connecting, so a folder without images fails in a second."""
    entries = _expand(paths, from_list)
    if not entries:
        raise EffnetError("no inputs: give image files, folders, URIs or --from-list FILE (no images found)")
    # Rows carry names as Arrow strings (UTF-8): a name's undecodable bytes, kept by Python as surrogates, cannot.
    if bad := next((e for e in entries if not e.isascii() and e.encode("utf-8", "replace").decode() != e), None):
        raise EffnetError(
            f"{bad!r}: a file name that is not UTF-8 cannot go into Ray's rows; rename it, or classify locally"
        )
    return entries


def read_inputs(
    paths: Sequence[str | os.PathLike], from_list: Sequence[str | os.PathLike] = (), *, shared: bool = False,
    listed: Sequence[str] | None = None, block_rows: int = BLOCK_ROWS, labels: Sequence[int] | None = None,
) -> Inputs:  # fmt: skip
    """Rows for every image under the folders/prefixes in ``paths`` and the ``from_list`` files' lines.

    Where each input is read (docs/distributed.md, "Inputs"):

    - a URI other than ``file://`` (``s3://``, ``gs://``...): by tasks in the cluster, on any node;
    - a local path (or ``file://``): on the driver's node, which names it and so must see it: read tasks
      pinned there stream the files' bytes into the pipeline as it pulls them (:class:`_DriverFiles`), so
      no other node needs the driver's disk and the driver's memory does not grow with the job. From a Ray
      Client (``ray://``), whose driver is no node, the driver reads them itself (up to
      ``SHIP_LIMIT_BYTES``). With ``shared=True`` (``--shared-inputs``: the user says every node sees these
      paths, e.g. NFS) the driver only checks each exists, and tasks on any node read them; a node that
      lacks one gives an error row naming the file and the node. A file missing on the driver is an error row.

    The driver expands folders and list files itself, so it knows how many rows the output must have;
    ``listed`` is that expansion when :func:`list_inputs` already made it (then ``paths`` is not read again).
    ``block_rows``: files per block (videos: one, so each goes to an actor of its own). ``labels``: one int per
    entry (an eval's true classes), carried in each row's ``label`` column beside its bytes, so the actor that
    classifies an image also knows its label (``effnet eval --engine ray``'s lean rows).
    """
    entries = list(listed) if listed is not None else list_inputs(paths, from_list)
    if labels is not None and len(labels) != len(entries):
        raise EffnetError(f"{len(labels):,} labels for {len(entries):,} inputs: one label per input")
    in_cluster: list[str] = []
    local: list[tuple[str, str]] = []
    cluster_labels: list[int] = []  # with labels: those of in_cluster and of local, in the same order
    local_labels: list[int] = []
    for i, name in enumerate(entries):
        path = local_path(name)
        label = [] if labels is None else [int(labels[i])]
        # shared: the driver checks only that each exists; one it lacks is read here, as its error row
        if path is None or (shared and os.path.isfile(path)):
            in_cluster.append(name)
            cluster_labels.extend(label)
        else:
            local.append((name, path))
            local_labels.extend(label)
    parts: list[ray.data.Dataset] = []
    shipped = shipped_bytes = 0
    local_y = None if labels is None else local_labels
    if local and ray.util.client.ray.is_connected():
        refs, shipped_bytes, missing = _ship(local, block_rows, local_y)
        shipped = len(local) - missing
        parts.append(ray.data.from_arrow_refs(refs))
    elif local:
        streamed, shipped, shipped_bytes = _stream_local(local, block_rows, local_y)
        parts.append(streamed)
    if in_cluster:
        items: list[dict[str, Any]] = [{"text": name} for name in in_cluster]
        if labels is not None:
            items = [{**item, "label": y} for item, y in zip(items, cluster_labels, strict=True)]
        parts.append(_read_lines(ray.data.from_items(items), block_rows))
    dataset = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return Inputs(dataset, len(entries), shipped, shipped_bytes)


def small_blocks(ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds`` in blocks of at most ``BLOCK_ROWS`` rows (a streaming repartition: no all-to-all shuffle)."""
    return ds.repartition(target_num_rows_per_block=BLOCK_ROWS)


def _read_lines(lines: ray.data.Dataset, block_rows: int = BLOCK_ROWS) -> ray.data.Dataset:
    """A dataset of ``text`` entries (URIs or shared paths) -> their files' rows, read by tasks of
    ``BLOCK_ROWS`` files.

    The entries are cut into small blocks first, so the files are read by many tasks and the first crops
    reach the inference actors after one small read. The read tasks ask for what the decode tasks ask for
    (``TASK_ARGS``): Ray Data then fuses each read into the decode of the same files, one task instead of
    two and no bytes through the object store.
    """
    small = lines.repartition(target_num_rows_per_block=block_rows)
    return small.map_batches(_read_listed, batch_size=block_rows, **TASK_ARGS)


def read_paths(
    paths: Sequence[str | os.PathLike], *, shared: bool = False, labels: Sequence[int] | None = None
) -> Inputs:
    """Rows for a known list of files (an eval set the driver has labelled: ``labels``, one per path, ride in
    the rows), read as :func:`read_inputs` says."""
    return read_inputs(list(paths), shared=shared, labels=labels)
