"""effnet.fileio: the one atomic writer (umask modes, one-line errors) and the writability check (issue 24,
items 7 and 8). Read-only and full disks end to end: tests/cli/test_disk_errors.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

import effnet
from effnet.errors import EffnetError
from effnet.train.checkpoint import save_checkpoint, write_log
from effnet.weights.native import NativeInfo, save_native
from effnet.weights.records import default_record
from tests.testutils import run_cli


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (subprocesses inherit it), then restore it."""
    old = os.umask(0o022)
    os.umask(old)

    def set_to(mask: int) -> None:
        os.umask(mask)

    yield set_to
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_mode_and_leaves_no_temporary(tmp_path, umask, mask, mode):
    from effnet.fileio import atomic_write

    umask(mask)
    target = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("new"), "the file")
    assert target.read_text() == "new" and _mode(target) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_every_writer_goes_through_it(tmp_path, umask):
    """The writers the issue found at 0600: effnet-native checkpoints (weights convert, train's model) and
    train's checkpoint and log."""
    umask(0o022)
    lite0 = effnet.create_model("efficientnet-lite0")
    info = NativeInfo(model="efficientnet-lite0", preprocess=default_record("efficientnet-lite0").preprocess)
    native = save_native(lite0.state_dict(), tmp_path / "m.safetensors", info)
    run = tmp_path / "run"
    written = [native, save_checkpoint(run, {"epoch": torch.tensor(1)}), write_log(run, [{"epoch": 1}])]
    assert {p.name: _mode(p) for p in written} == {p.name: 0o644 for p in written}


def test_weights_convert_writes_0644_under_umask_022(tmp_path, umask):
    umask(0o022)
    src = tmp_path / "lite0.pth"
    torch.save(effnet.create_model("efficientnet-lite0").state_dict(), src)
    r = run_cli("weights", "convert", str(src), str(tmp_path / "lite0.safetensors"))
    assert r.returncode == 0, r.stderr
    assert _mode(tmp_path / "lite0.safetensors") == 0o644


def test_write_errors_are_one_line(tmp_path):
    from effnet.fileio import atomic_write, write_error

    with pytest.raises(EffnetError, match=r"cannot write the file .*: folder .* does not exist"):
        atomic_write(tmp_path / "no" / "a.txt", lambda tmp: tmp.write_text("x"), "the file")
    (tmp_path / "dir").mkdir()
    with pytest.raises(EffnetError, match="Is a directory"):
        atomic_write(tmp_path / "dir", lambda tmp: tmp.write_text("x"), "the file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]  # no temporary left behind
    # A C++ writer's "iostream error" with less room than the write needs is said as the OS says a full disk.
    e = write_error(RuntimeError("basic_ios::clear: iostream error"), tmp_path / "m.xml", "the IR", needed=10**18)
    assert "No space left on device" in str(e) and str(tmp_path / "m.xml") in str(e)
    e = write_error(RuntimeError("something else"), tmp_path / "m.xml", "the IR", needed=1)
    assert str(e).endswith("something else")


def test_new_output_dir_removes_only_the_folders_it_made_when_the_work_fails(tmp_path):
    from effnet.fileio import new_output_dir

    with pytest.raises(ZeroDivisionError), new_output_dir(tmp_path / "a" / "b", "the IR"):
        raise ZeroDivisionError
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ZeroDivisionError), new_output_dir(tmp_path / "kept", "the IR"):
        raise ZeroDivisionError
    assert (tmp_path / "kept").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(EffnetError, match=f"{tmp_path / 'file'} is not a directory"):
        with new_output_dir(tmp_path / "file" / "out", "the IR"):
            pass


def test_temp_dir_has_the_umask_mode(tmp_path, umask):
    """Folders renamed into place whole (Ray's Parquet output) get the umask's mode, not mkdtemp's 0700."""
    from effnet.fileio import temp_dir

    umask(0o022)
    made = temp_dir(tmp_path, ".out.", ".tmp")
    assert made.is_dir() and made.name.startswith(".out.") and _mode(made) == 0o755
