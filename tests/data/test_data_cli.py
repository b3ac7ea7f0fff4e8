"""The `data` typer app: prepare / verify / download via CliRunner."""

from __future__ import annotations

import socket

from test_convert import build_brainmri, build_elpv, build_headct
from typer.testing import CliRunner

from bgad.bench.data_cli import data_app
from bgad.data import download as dl

runner = CliRunner()


def test_prepare_and_verify(tmp_path, monkeypatch):
    monkeypatch.setenv("BGAD_DATA_DIR", str(tmp_path / "data"))
    raw = build_headct(tmp_path / "raw", nested=False, n=12)
    r = runner.invoke(data_app, ["prepare", "headct", "--raw", str(raw)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data" / "headct" / "manifest.csv").is_file()
    assert "prepared headct" in r.output
    r = runner.invoke(data_app, ["verify", "headct", "--no-counts"])
    assert r.exit_code == 0 and "OK" in r.output
    r = runner.invoke(data_app, ["verify", "headct"])
    assert r.exit_code == 1
    assert "problem(s)" in r.output and "official count is 75" in r.output
    # idempotent; another seed into the same root is refused with a clear message
    assert runner.invoke(data_app, ["prepare", "headct", "--raw", str(raw)]).exit_code == 0
    r = runner.invoke(data_app, ["prepare", "headct", "--raw", str(raw), "--seed", "3"])
    assert r.exit_code == 1 and "seed" in r.output


def test_prepare_errors(tmp_path):
    r = runner.invoke(data_app, ["prepare", "brainmri", "--root", str(tmp_path / "b")])
    assert r.exit_code == 1 and "--raw" in r.output
    r = runner.invoke(data_app, ["prepare", "mvtec", "--root", str(tmp_path / "m")])
    assert r.exit_code == 1 and "--archive" in r.output
    r = runner.invoke(data_app, ["prepare", "nosuch"])
    assert r.exit_code == 2 and "unknown dataset" in r.output
    raw = build_brainmri(tmp_path / "raw")
    (raw / "no" / "bad.JPG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = runner.invoke(data_app, ["prepare", "brainmri", "--raw", str(raw), "--root", str(tmp_path / "b")])
    assert r.exit_code == 1 and "bad.JPG" in r.output
    assert not (tmp_path / "b").exists()
    r = runner.invoke(
        data_app, ["prepare", "btad", "--archive", str(tmp_path / "nope.zip"), "--root", str(tmp_path / "x")]
    )
    assert r.exit_code == 1 and "does not exist" in r.output


def test_download_offline(tmp_path, monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    spec = dl.ARCHIVES["mvtec"]
    monkeypatch.setitem(
        dl.ARCHIVES,
        "mvtec",
        dl.ArchiveSpec("mvtec", spec.filename, spec.sha256, (f"http://127.0.0.1:{port}/m",), spec.homepage),
    )
    monkeypatch.setenv("BGAD_CACHE_DIR", str(tmp_path / "cache"))
    r = runner.invoke(data_app, ["download", "mvtec", "--root", str(tmp_path / "mvtec"), "--no-progress"])
    assert r.exit_code == 1
    out = " ".join(r.output.split())
    assert "cannot reach" in out and "bgad-bench data prepare mvtec --archive FILE" in out
    assert "mvtec_anomaly_detection.tar.xz" in out
    r = runner.invoke(data_app, ["download", "aitex"])
    assert r.exit_code == 2


def test_prepare_elpv_finds_the_authors_package_without_raw(tmp_path, monkeypatch):
    """`pip install elpv-dataset` ships images/ and labels.csv in ``elpv_dataset/data``: found on the
    import path; without it the error names the package."""
    monkeypatch.setenv("BGAD_DATA_DIR", str(tmp_path / "data"))
    r = runner.invoke(data_app, ["prepare", "elpv", "--root", str(tmp_path / "none")])
    assert r.exit_code == 1 and "--raw" in r.output and "pip install elpv-dataset" in r.output
    site = tmp_path / "site"
    (site / "elpv_dataset").mkdir(parents=True)
    (site / "elpv_dataset" / "__init__.py").write_text("")
    build_elpv(site / "elpv_dataset" / "data")
    monkeypatch.syspath_prepend(str(site))
    r = runner.invoke(data_app, ["prepare", "elpv"])
    assert r.exit_code == 0, r.output
    assert str(site / "elpv_dataset" / "data") in r.output.replace("\n", "")
    assert (tmp_path / "data" / "elpv" / "manifest.csv").is_file()
