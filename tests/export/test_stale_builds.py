"""An export killed mid-build leaves a ``.building-*`` directory: the next use of the cache removes it,
and never one whose builder is still alive."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from filelock import FileLock, Timeout

from effnet.export.cache import exported_artifact, locked_build_dir, remove_stale_builds
from effnet.source import resolve_source
from tests.testutils import REPO

# Starts a build and is killed (SIGKILL: no finally, no atexit) while its directory exists.
_KILLED_BUILDER = """
import os, sys, time
from pathlib import Path
from effnet.export.cache import locked_build_dir
with locked_build_dir(Path(sys.argv[1])) as building:
    (building / "model.onnx.partial").write_bytes(b"half an export")
    print(building, flush=True)
    time.sleep(600)
"""


def test_a_killed_builders_directory_is_removed_a_live_ones_is_not(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO / "src"), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    building = tmp_path / os.path.basename(proc.stdout.readline().strip())
    assert building.name.startswith(".building-") and (building / "model.onnx.partial").exists()

    assert remove_stale_builds(tmp_path) == []  # the builder is alive: hands off
    assert building.exists()
    proc.kill()
    proc.wait()
    assert building.exists()  # what a killed export leaves behind
    assert remove_stale_builds(tmp_path) == [building]
    assert not list(tmp_path.iterdir())  # directory and lock file both gone


def test_directories_without_a_lock_and_orphan_locks_are_stale(tmp_path):
    legacy = tmp_path / ".building-abc123"  # made by an effnet from before the lock
    legacy.mkdir()
    (legacy / "model.xml").write_text("<net/>")
    (tmp_path / ".building-gone.lock").write_text("")  # killed between taking the lock and mkdir
    (tmp_path / "efficientnet-lite0-onnx-0123").mkdir()  # a finished entry: never touched
    assert remove_stale_builds(tmp_path) == [legacy]
    assert [p.name for p in tmp_path.iterdir()] == ["efficientnet-lite0-onnx-0123"]


def test_a_build_in_this_process_holds_its_lock(tmp_path):
    with locked_build_dir(tmp_path) as building:
        assert remove_stale_builds(tmp_path) == [] and building.is_dir()
        with pytest.raises(Timeout):  # a second open file description cannot take it either
            FileLock(str(building) + ".lock").acquire(timeout=0)
    assert not list(tmp_path.iterdir())


def test_exported_artifact_cleans_the_cache_it_uses(tmp_path, lite0_checkpoint):
    stale = tmp_path / ".building-deadbeef"
    stale.mkdir()
    source = resolve_source("efficientnet-lite0", str(lite0_checkpoint), progress=False)
    with exported_artifact("onnx", source, cache_dir=tmp_path) as path:
        assert path.is_file() and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name]  # the entry, and nothing else
