"""The cache of exported artifacts (``$EFFNET_HOME/exports``): the ONNX export, the OpenVINO IR and the INT8 IR.

The INT8 IR made by ``effnet quantize`` lives here too (:func:`int8_model_dir`), so the OpenVINO backend
and quantization share one notion of where an artifact of a source is.
Keys: :mod:`effnet.export.cache_keys`; building, listing and pruning entries: :mod:`effnet.export.cache_store`
(their public names are re-exported here).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import EffnetError
from ..source import ModelSource
from ..weights.records import find_record
from ._common import ExportKind
from .cache_keys import (
    DEFAULT_OPTIONS,
    KEY_SCHEMA,
    cache_key,
    exports_dir,
    int8_cache_key,
    key_digest,
    weights_key,
)
from .cache_store import (
    CacheEntry,
    list_entries,
    locked_build_dir,
    prune,
    remove_stale_builds,
    touch_entry,
    write_entry_info,
)
from .onnx import export_onnx
from .openvino import export_openvino

__all__ = [
    "exports_dir",
    "cache_key",
    "key_digest",
    "exported_artifact",
    "locked_build_dir",
    "remove_stale_builds",
    "INT8_XML",
    "int8_model_dir",
    "int8_model_path",
    "int8_cache_key",
    "KEY_SCHEMA",
    "weights_key",
    "CacheEntry",
    "list_entries",
    "prune",
]

INT8_XML = "model.xml"


def _build(kind: ExportKind, source: ModelSource, directory: Path, options: dict[str, Any]) -> Path:
    if kind == "onnx":
        return export_onnx(source, directory / "model.onnx", progress=False, **options)
    return export_openvino(source, directory, name="model", progress=False, **options)


def _artifact(kind: ExportKind, directory: Path) -> Path:
    return directory / ("model.onnx" if kind == "onnx" else "model.xml")


@contextlib.contextmanager
def exported_artifact(
    kind: ExportKind, source: ModelSource, *, cache_dir: Path | None = None, **options: Any
) -> Iterator[Path]:
    """Yield the path of an export of ``source`` (``model.onnx`` or ``model.xml``), from the cache if present.

    The cache entry is a directory built under a temporary name and renamed into
    place in one step, so it is complete whenever it exists; concurrent builders
    both succeed and one result is kept. Random-init sources (no checkpoint) and
    unwritable caches get a temporary export, deleted when the block ends.
    """
    root = cache_dir or exports_dir()
    options = {**DEFAULT_OPTIONS[kind], **options}
    if source.checkpoint is not None:
        key = cache_key(kind, source, options)
        entry = root / f"{source.model}-{kind}-{key_digest(key)}"
        with contextlib.suppress(OSError):  # a read-only cache still serves what it holds
            remove_stale_builds(root)
        if _artifact(kind, entry).is_file():
            touch_entry(entry)
            yield _artifact(kind, entry)
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
            build = locked_build_dir(root)
            building = build.__enter__()
        except OSError as e:
            print(
                f"effnet: export cache {root} is not writable ({e.strerror or e}); exporting to a temporary directory",
                file=sys.stderr,
            )
        else:
            try:
                _build(kind, source, building, options)
                write_entry_info(building, key, source)
                if weights_key(source) != key["weights"]:
                    # The checkpoint changed while it was exported: what was built may be either version.
                    raise EffnetError(
                        f"{source.checkpoint} changed while it was being exported; nothing was cached, run again"
                    )
                try:
                    os.rename(building, entry)
                except OSError:
                    if not _artifact(kind, entry).is_file():  # not a lost race: a real failure
                        raise
            finally:
                build.__exit__(None, None, None)
            yield _artifact(kind, entry)
            return
    with tempfile.TemporaryDirectory(prefix="effnet-export-") as tmp:
        yield _build(kind, source, Path(tmp), options)


def _int8_key(source: ModelSource) -> str:
    return key_digest(int8_cache_key(source))


def int8_model_dir(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """The export-cache directory of the INT8 IR of ``source``'s weights (it may not exist yet)."""
    return (cache_dir or exports_dir()) / f"{source.model}-openvino-int8-{_int8_key(source)}"


def int8_model_path(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """The cached INT8 IR (``model.xml``) of ``source``, or an error saying how to make it."""
    xml = int8_model_dir(source, cache_dir) / INT8_XML
    if xml.is_file():
        touch_entry(xml.parent)
    else:
        # A record's name is a valid --weights value; a local file's (an effnet-native "file:NAME") is not.
        weights = source.record.name if source.record and find_record(source.record.name) else str(source.checkpoint)
        raise EffnetError(
            f"no INT8 model of {source.model} ({weights}) in the export cache ({xml.parent}): create it with "
            f"`effnet quantize --model {source.model} --weights {weights} --calibration IMAGE_DIR`"
        )
    return xml
