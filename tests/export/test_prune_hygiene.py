"""Issue 29 (cache hygiene): `effnet weights cache prune` removes only entries it recognises as its own, never
follows a symlink, and says what it could not remove instead of skipping the rest in silence."""

from __future__ import annotations

import json
import os
from pathlib import Path

from effnet.export.cache import list_entries, prune, remove_stale_builds
from tests.testutils import run_cli

OLD = {"kind": "onnx", "schema": 1, "weights": {"sha256": ""}}  # an old key: always pruned


def entry(root: Path, digest: str, info: dict = OLD) -> Path:
    path = root / f"efficientnet-lite0-onnx-{digest:0>20}"
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"x" * 10)
    (path / "export.json").write_text(json.dumps(info))
    return path


def test_a_users_folder_in_the_cache_is_left_alone(tmp_path):
    notes = tmp_path / "my notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    other = tmp_path / "efficientnet-lite0-backup"  # not MODEL-KIND-DIGEST
    other.mkdir()
    stale = entry(tmp_path, "1")
    assert [e.path for e in list_entries(tmp_path)] == [stale]
    assert [e.path for e in prune(tmp_path, older_than=0)] == [stale]
    assert (notes / "todo.txt").read_text() == "keep me" and other.is_dir() and not stale.exists()


def test_a_symlinked_entry_is_unlinked_not_followed(tmp_path):
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    target = entry(outside, "2")
    cache.mkdir()
    link = cache / target.name
    link.symlink_to(target, target_is_directory=True)
    failures: list[str] = []
    assert [e.path for e in prune(cache, older_than=0, failures=failures)] == [link]
    assert not failures and not os.path.lexists(link) and (target / "model.onnx").is_file()
    assert list(cache.iterdir()) == []  # no .building-pruned-* left behind


def test_a_symlinked_lock_does_not_stop_the_other_stale_builds(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    elsewhere = tmp_path / "elsewhere.lock"
    elsewhere.write_text("")
    (cache / ".building-aaaa").mkdir()
    (cache / ".building-aaaa.lock").symlink_to(elsewhere)
    (cache / ".building-bbbb").mkdir()  # a killed build without a lock: stale
    (cache / ".building-cccc.lock").symlink_to(tmp_path / "missing")  # dangling
    failures: list[str] = []
    removed = remove_stale_builds(cache, failures)
    assert {p.name for p in removed} >= {".building-aaaa", ".building-bbbb"}
    assert list(cache.iterdir()) == [] and elsewhere.is_file() and not failures


def test_what_cannot_be_removed_is_reported_and_the_rest_is_pruned(tmp_path, monkeypatch):
    import effnet.export.cache_store as store

    stuck, free = entry(tmp_path, "3"), entry(tmp_path, "4")
    real = store._remove_tree

    def remove(path: Path) -> None:  # the stuck entry's tree holds a file this user may not delete
        if (path / "stuck").exists():
            raise OSError(13, "Permission denied")
        real(path)

    (stuck / "stuck").write_text("")
    monkeypatch.setattr(store, "_remove_tree", remove)
    failures: list[str] = []
    removed = prune(tmp_path, older_than=0, failures=failures)
    assert {e.path for e in removed} == {free} and not free.exists()  # only what went is counted
    assert failures and all("Permission denied" in f for f in failures)
    (leftover,) = [p for p in tmp_path.iterdir() if p.name.startswith(".building-pruned-")]
    assert f"{stuck}: Permission denied; what is left of it is in {leftover}" in failures  # not invisible


def test_cache_list_shows_each_entrys_checkpoint_path(tmp_path):
    home = tmp_path / "home"
    entry(home / "exports", "5", {**OLD, "schema": 3, "checkpoint": "/runs/a/model.safetensors"})
    r = run_cli("weights", "cache", "list", env={"EFFNET_HOME": str(home)})
    assert r.returncode == 0 and "from /runs/a/model.safetensors" in r.stdout, r.stdout + r.stderr
