"""download(), mirrors and safe extraction against a real HTTP server on 127.0.0.1 (Range supported)."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from bgad.data import download as dl
from bgad.data.download import (
    ArchiveSpec,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    download_archive,
    safe_extract,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate_once: set[str] = set()
    log: list[tuple[str, str | None]] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.log.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.truncate_once:
            self.truncate_once.discard(self.path)
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    _Handler.files = {}
    _Handler.truncate_once = set()
    _Handler.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def _tar_xz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_good_download_and_extract(server, tmp_path):
    url, h = server
    payload = _tar_xz({"ds/a.txt": b"hello", "ds/sub/b.txt": b"world" * 1000})
    h.files["/good.tar.xz"] = payload
    dest = download(f"{url}/good.tar.xz", tmp_path / "good.tar.xz", _sha(payload), progress=True)
    assert dest.read_bytes() == payload and not (tmp_path / "good.tar.xz.part").exists()
    out = safe_extract(dest, tmp_path / "x")
    assert (out / "ds/sub/b.txt").read_bytes() == b"world" * 1000
    # already there with the right checksum: no request
    n = len(h.log)
    download(f"{url}/good.tar.xz", dest, _sha(payload), progress=False)
    assert len(h.log) == n


def test_wrong_checksum(server, tmp_path):
    url, h = server
    h.files["/bad.zip"] = b"not what you expected" * 100
    with pytest.raises(ChecksumError, match="expected 0000"):
        download(f"{url}/bad.zip", tmp_path / "bad.zip", "0" * 64, progress=False)
    assert not (tmp_path / "bad.zip").exists() and not (tmp_path / "bad.zip.part").exists()


def test_truncated_download_resumes_with_range(server, tmp_path):
    url, h = server
    payload = bytes(range(256)) * 4000  # ~1 MB
    h.files["/big.bin"] = payload
    h.truncate_once.add("/big.bin")
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="resume"):
        download(f"{url}/big.bin", dest, _sha(payload), progress=False)
    part = tmp_path / "big.bin.part"
    assert 0 < part.stat().st_size < len(payload)
    have = part.stat().st_size
    download(f"{url}/big.bin", dest, _sha(payload), progress=False)
    assert dest.read_bytes() == payload
    assert h.log[-1] == ("/big.bin", f"bytes={have}-")


def test_http_404_and_offline(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{url}/missing", tmp_path / "m", None, progress=False)
    port = _free_port()
    with pytest.raises(DownloadError, match="cannot reach"):
        download(f"http://127.0.0.1:{port}/x.tar.xz", tmp_path / "x", None, progress=False, timeout=5)


def test_mirrors_then_manual_instructions(server, tmp_path, monkeypatch):
    url, h = server
    payload = b"zip-bytes" * 50
    h.files["/second/btad.zip"] = payload
    port = _free_port()
    spec = ArchiveSpec(
        "btad",
        "btad.zip",
        _sha(payload),
        (f"http://127.0.0.1:{port}/btad.zip", f"{url}/second/btad.zip"),
        "h",
    )
    monkeypatch.setitem(dl.ARCHIVES, "btad", spec)
    got = download_archive("btad", tmp_path, progress=False)
    assert got.read_bytes() == payload
    spec = ArchiveSpec(
        "btad", "btad.zip", "f" * 64, (f"http://127.0.0.1:{port}/btad.zip", f"{url}/second/btad.zip"), "h"
    )
    monkeypatch.setitem(dl.ARCHIVES, "btad", spec)
    with pytest.raises(DownloadError) as ei:
        download_archive("btad", tmp_path / "other", progress=False)
    msg = str(ei.value)
    assert "cannot reach" in msg and "sha256" in msg
    assert "bgad-bench data prepare btad --archive FILE" in msg and "place it at" in msg


def test_offline_message_mvtec(tmp_path, monkeypatch):
    port = _free_port()
    spec = dl.ARCHIVES["mvtec"]
    monkeypatch.setitem(
        dl.ARCHIVES,
        "mvtec",
        ArchiveSpec(
            "mvtec", spec.filename, spec.sha256, (f"http://127.0.0.1:{port}/m.tar.xz",), spec.homepage
        ),
    )
    with pytest.raises(DownloadError, match=r"bgad-bench data prepare mvtec --archive FILE"):
        download_archive("mvtec", tmp_path, progress=False)


def test_dotdot_member_rejected(server, tmp_path):
    url, h = server
    payload = _tar_xz({"ok.txt": b"1", "../evil.txt": b"2"})
    h.files["/evil.tar.xz"] = payload
    dest = download(f"{url}/evil.tar.xz", tmp_path / "evil.tar.xz", _sha(payload), progress=False)
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil.txt"):
        safe_extract(dest, tmp_path / "x")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "x" / "ok.txt").exists()


def test_absolute_and_symlink_members_rejected(tmp_path):
    p = tmp_path / "abs.tar.xz"
    p.write_bytes(_tar_xz({"/etc/passwd_copy": b"x"}))
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        safe_extract(p, tmp_path / "x")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        link = tarfile.TarInfo("ds/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../outside"
        tf.addfile(link)
    p2 = tmp_path / "link.tar.xz"
    p2.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(p2, tmp_path / "y")
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a/../../b.txt", b"x")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(z, tmp_path / "z")


def test_zip_extract(tmp_path):
    z = tmp_path / "ok.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("BTech/01/train/ok/0000.bmp", b"x")
    out = safe_extract(z, tmp_path / "z")
    assert (out / "BTech/01/train/ok/0000.bmp").read_bytes() == b"x"


def test_safe_extract_corrupt(tmp_path):
    p = tmp_path / "broken.tar.xz"
    p.write_bytes(_tar_xz({"a.txt": b"x" * 10000})[:40])
    with pytest.raises(dl.DatasetError):
        safe_extract(p, tmp_path / "x")


def test_default_archive_path(monkeypatch, tmp_path):
    monkeypatch.setenv("BGAD_CACHE_DIR", str(tmp_path))
    assert (
        dl.default_archive_path("mvtec")
        == (tmp_path / "downloads" / "mvtec_anomaly_detection.tar.xz").resolve()
    )
    assert isinstance(dl.default_archive_path("btad"), Path)
