"""Tests for effnet.weights.download against a real HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from effnet.weights.download import (
    ChecksumError,
    DownloadError,
    default_cache_dir,
    download,
    part_path,
    sha256_file,
    verify_file,
)
from tests.testutils import REPO

FAST = dict(retries=2, backoff=0, timeout=5, progress=False)

pytestmark = pytest.mark.usefixtures("downloads_allowed")  # a local server on 127.0.0.1 only


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.payload`` with a behaviour chosen by the request path."""

    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv, path = self.server, self.path
        rng = self.headers.get("Range")
        with srv.lock:
            srv.counts[path] += 1
            n = srv.counts[path]
            srv.ranges.append((path, rng))
        data = srv.payload
        if path == "/404.bin":
            self.send_error(404)
        elif path == "/500-once.bin" and n == 1:
            self.send_error(500)
        elif path == "/wrong.bin" or (path == "/wrong-once.bin" and n == 1):
            self._send(bytes(b ^ 0xFF for b in data), None)
        elif path == "/slow.bin":
            # Long enough (~1 s) that a second process asks for the file while the first still downloads it.
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            step = len(data) // 10 + 1
            for i in range(0, len(data), step):
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/drop.bin" and n == 1:
            # Promise the full body, deliver half, then hang up (HTTP/1.0: socket closes after).
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif path in ("/ok.bin", "/drop.bin", "/500-once.bin", "/wrong-once.bin"):
            self._send(data, rng)
        else:
            self.send_error(404)

    def _send(self, data: bytes, rng: str | None) -> None:
        start = 0
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    payload: bytes
    counts: Counter
    ranges: list
    lock: threading.Lock

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.payload = os.urandom(300_000)
    srv.counts, srv.ranges, srv.lock = Counter(), [], threading.Lock()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def _sha(srv: _Server) -> str:
    return hashlib.sha256(srv.payload).hexdigest()


def _parts(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob("*.part"))


def test_success_and_cached_second_call(server, tmp_path):
    dest = tmp_path / "sub" / "w.pth"
    out = download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert out == dest and dest.read_bytes() == server.payload
    assert not _parts(dest)
    # Second call: already there and verified, so no request at all.
    download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert server.counts["/ok.bin"] == 1


def test_prefix_sha_like_timm(server, tmp_path):
    dest = tmp_path / "w.pth"
    download([server.url("/ok.bin")], dest, _sha(server)[:8], None, **FAST)
    assert dest.read_bytes() == server.payload


def test_checksum_mismatch(server, tmp_path):
    dest = tmp_path / "w.pth"
    with pytest.raises(ChecksumError) as ei:
        download([server.url("/wrong.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert "/wrong.bin" in str(ei.value) and _sha(server) in str(ei.value) and "fresh start" in str(ei.value)
    assert not dest.exists() and not _parts(dest)
    # One fresh start from byte 0 (no Range), then the URL is given up: it serves the wrong file.
    assert server.ranges == [("/wrong.bin", None), ("/wrong.bin", None)]


def test_wrong_bytes_once_then_right_bytes(server, tmp_path):
    dest = tmp_path / "w.pth"
    download([server.url("/wrong-once.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload and not _parts(dest)
    assert server.ranges == [("/wrong-once.bin", None), ("/wrong-once.bin", None)]


def test_wrong_mirror_then_good_mirror(server, tmp_path):
    dest = tmp_path / "w.pth"
    download([server.url("/wrong.bin"), server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload


def test_dropped_connection_resumes_with_range(server, tmp_path):
    dest = tmp_path / "w.pth"
    download([server.url("/drop.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload and not _parts(dest)
    half = len(server.payload) // 2
    assert [r for p, r in server.ranges if p == "/drop.bin"] == [None, f"bytes={half}-"]


def test_part_already_complete_gets_416(server, tmp_path):
    dest = tmp_path / "w.pth"
    part_path(dest, server.url("/ok.bin")).write_bytes(server.payload)
    download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload
    assert server.ranges == [("/ok.bin", f"bytes={len(server.payload)}-")]


def test_corrupt_part_is_discarded_and_the_url_retried_from_zero(server, tmp_path):
    dest = tmp_path / "w.pth"
    url = server.url("/ok.bin")
    part_path(dest, url).write_bytes(b"\0" * 1000)  # stale garbage left by some earlier run
    download([url], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload and not _parts(dest)
    # The resume completed a file that failed its checksum; the same URL then started again from byte 0.
    assert server.ranges == [("/ok.bin", "bytes=1000-"), ("/ok.bin", None)]


def test_each_url_has_its_own_part(server, tmp_path):
    dest = tmp_path / "w.pth"
    first, second = server.url("/404.bin"), server.url("/ok.bin")
    assert part_path(dest, first) != part_path(dest, second)
    assert part_path(dest, first).name.startswith("w.pth.") and part_path(dest, first).suffix == ".part"
    # A partial file of another mirror (and one of the old shared kind) is not resumed from this one...
    part_path(dest, first).write_bytes(server.payload[:1000])
    dest.with_name("w.pth.part").write_bytes(b"\0" * 1000)
    download([first, second], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload
    assert [r for p, r in server.ranges if p == "/ok.bin"] == [None]
    # ...and once the file is verified, no partial file of it is left.
    assert not _parts(dest)


def test_bad_file_at_dest_is_replaced(server, tmp_path):
    dest = tmp_path / "w.pth"
    dest.write_bytes(b"not the weights")
    download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload


def test_404_and_mirror_fallback(server, tmp_path):
    dest = tmp_path / "w.pth"
    url = server.url("/404.bin")
    with pytest.raises(DownloadError) as ei:
        download([url], dest, _sha(server), len(server.payload), **FAST)
    assert url in str(ei.value) and "404" in str(ei.value)
    assert not isinstance(ei.value, ChecksumError)
    assert server.counts["/404.bin"] == 1  # 404 is not retried
    assert not dest.exists() and not _parts(dest)

    download([url, server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload


def test_500_once_then_retry(server, tmp_path):
    dest = tmp_path / "w.pth"
    download([server.url("/500-once.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload
    assert server.counts["/500-once.bin"] == 2


def test_offline_message(tmp_path):
    with socket.socket() as s:  # grab a free port, then close it: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError) as ei:
        download([url], dest, "ab" * 32, 1234, **FAST)
    msg = str(ei.value)
    assert url in msg and str(dest) in msg and "--weights" in msg
    assert "no network access" in msg and "abababab" in msg and "1234 bytes" in msg
    assert not dest.exists() and not _parts(dest)


def test_offline_env_fails_fast_without_a_request(server, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_OFFLINE", "1")
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError) as ei:
        download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    msg = str(ei.value)
    assert "EFFNET_OFFLINE=1" in msg and str(dest) in msg and "--weights FILE" in msg
    assert not server.ranges and not dest.exists() and not list(tmp_path.iterdir())
    # A verified cached file needs no network: offline still finds it.
    dest.write_bytes(server.payload)
    assert download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST) == dest
    monkeypatch.setenv("EFFNET_OFFLINE", "0")
    dest.unlink()
    download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert server.counts["/ok.bin"] == 1


_RACER = """
import sys, time
from pathlib import Path
from effnet.weights.download import download
url, dest, sha, size, ready, go = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
download([url], Path(dest), sha, int(size), retries=0, backoff=0, timeout=30, progress=False)
"""


def test_two_processes_racing_download_once(server, tmp_path):
    dest = tmp_path / "cache" / "w.pth"
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if k != "EFFNET_OFFLINE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, server.url("/slow.bin"), str(dest), _sha(server)]
            + [str(len(server.payload)), str(tmp_path / f"ready{i}"), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):  # both imported, waiting on the start line
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert server.counts["/slow.bin"] == 1  # the second process waited for the lock, then found the file
    assert dest.read_bytes() == server.payload
    assert {p.name for p in dest.parent.iterdir()} - {"w.pth.lock"} == {"w.pth"}  # no .part left behind


def test_verify_file(tmp_path):
    p = tmp_path / "f.bin"
    data = os.urandom(5000)
    p.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert sha256_file(p, chunk_size=1000) == digest
    verify_file(p, digest, len(data))
    verify_file(p, digest.upper(), None)
    verify_file(p, digest[:8], len(data))
    with pytest.raises(ChecksumError, match="size"):
        verify_file(p, digest, len(data) + 1)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:8]
    with pytest.raises(ChecksumError, match=wrong):
        verify_file(p, wrong, len(data))
    with pytest.raises(ChecksumError):
        verify_file(p, "f" * 64 if digest != "f" * 64 else "0" * 64, None)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "eh"))
    assert default_cache_dir() == tmp_path / "eh"
    monkeypatch.delenv("EFFNET_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "effnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "effnet"
