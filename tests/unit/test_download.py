"""Tests for effnet.weights.download against a real HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from effnet.weights.download import ChecksumError, DownloadError, default_cache_dir, download, sha256_file, verify_file

FAST = dict(retries=2, backoff=0, timeout=5, progress=False)


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
        elif path == "/wrong.bin":
            self._send(bytes(b ^ 0xFF for b in data), None)
        elif path == "/drop.bin" and n == 1:
            # Promise the full body, deliver half, then hang up (HTTP/1.0: socket closes after).
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif path in ("/ok.bin", "/drop.bin", "/500-once.bin"):
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


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_success_and_cached_second_call(server, tmp_path):
    dest = tmp_path / "sub" / "w.pth"
    out = download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert out == dest and dest.read_bytes() == server.payload
    assert not _part(dest).exists()
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
    assert "/wrong.bin" in str(ei.value) and _sha(server) in str(ei.value)
    assert not dest.exists() and not _part(dest).exists()


def test_wrong_mirror_then_good_mirror(server, tmp_path):
    dest = tmp_path / "w.pth"
    download([server.url("/wrong.bin"), server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload


def test_dropped_connection_resumes_with_range(server, tmp_path):
    dest = tmp_path / "w.pth"
    download([server.url("/drop.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload and not _part(dest).exists()
    half = len(server.payload) // 2
    assert [r for p, r in server.ranges if p == "/drop.bin"] == [None, f"bytes={half}-"]


def test_part_already_complete_gets_416(server, tmp_path):
    dest = tmp_path / "w.pth"
    _part(dest).write_bytes(server.payload)
    download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload
    assert server.ranges == [("/ok.bin", f"bytes={len(server.payload)}-")]


def test_corrupt_part_is_discarded(server, tmp_path):
    dest = tmp_path / "w.pth"
    _part(dest).write_bytes(b"\0" * 1000)  # stale garbage from some earlier run
    with pytest.raises(ChecksumError):
        download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert not _part(dest).exists() and not dest.exists()
    # The next call starts from scratch and succeeds.
    download([server.url("/ok.bin")], dest, _sha(server), len(server.payload), **FAST)
    assert dest.read_bytes() == server.payload


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
    assert not dest.exists() and not _part(dest).exists()

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
    assert not dest.exists() and not _part(dest).exists()


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
