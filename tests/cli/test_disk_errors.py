"""Read-only, full and wrong folders get one line naming the path, before the long work, and leave nothing
behind (issue 24, items 6 and 7). Read-only and full filesystems are real tmpfs mounts in a private mount
namespace (`run_cli(mounts=...)`): the tests run as root, whom chmod does not stop."""

from __future__ import annotations

import json

import pytest

from effnet.weights.records import get_record
from tests.testutils import EXAMPLES, run_cli

LITE0 = ("--model", "efficientnet-lite0")
B5 = get_record("tf_efficientnet_b5.aa_in1k")


def _one_line(r, *needles: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_download_into_a_read_only_effnet_home_is_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"EFFNET_HOME": str(home), "EFFNET_OFFLINE": "0"}  # the check comes before any network access
    r = run_cli("weights", "download", "efficientnet-b5", env=env, mounts=f"mount -t tmpfs -o ro tmpfs {home}")
    _one_line(r, "Read-only file system", str(home), "EFFNET_HOME")


def test_download_when_effnet_home_is_a_file_is_one_line(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder")
    r = run_cli("weights", "download", "efficientnet-b5", env={"EFFNET_HOME": str(home), "EFFNET_OFFLINE": "0"})
    _one_line(r, f"{home} is not a directory", "EFFNET_HOME")


def test_a_corrupt_cached_b5_is_called_corrupt_not_missing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / B5.filename).write_bytes(b"\0" * 1000)
    (home / get_record("tf_efficientnet_b5.ra_in1k").filename).write_bytes(b"\0" * 1000)  # no size recorded
    env = {"EFFNET_HOME": str(home)}
    r = run_cli("classify", "--model", "efficientnet-b5", "--backend", "torch", str(EXAMPLES / "chelsea.png"), env=env)
    _one_line(r, f"the cached file {home / B5.filename} is corrupt", f"expected {B5.size} bytes, got 1000")
    assert "place the file at" not in r.stderr and "delete it" in r.stderr

    listing = run_cli("weights", "list", "--model", "efficientnet-b5", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert not rows[B5.name]["cached"] and rows[B5.name]["status"] == "partial"
    assert (
        not rows["tf_efficientnet_b5.ra_in1k"]["cached"] and rows["tf_efficientnet_b5.ra_in1k"]["status"] == "corrupt"
    )
    assert rows["tf_efficientnet_b5.ap_in1k"]["status"] == "not cached"
    text = run_cli("weights", "list", "--model", "efficientnet-b5", env=env)
    line = next(x for x in text.stdout.splitlines() if B5.name in x)
    assert "partial" in line and " cached" not in line.replace("not cached", "")
    assert "delete it and run `effnet weights download tf_efficientnet_b5.aa_in1k`" in text.stderr


def test_export_openvino_on_a_full_disk_says_so_and_leaves_no_folder(tmp_path):
    pytest.importorskip("openvino")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = run_cli(
        "export",
        "openvino",
        *LITE0,
        "-o",
        str(disk / "ir"),
        mounts=f"mount -t tmpfs -o size=1m tmpfs {disk}",  # Lite0's IR is 18 MB
        after=f'echo "left: $(ls -A {disk})"',
    )
    _one_line(r, "No space left on device", str(disk / "ir"))
    assert "iostream error" not in r.stderr
    assert r.stdout.splitlines()[-1] == "left: "  # no IR, no temporary folder, no empty output folder


def test_quantize_onto_a_read_only_folder_fails_before_calibrating(tmp_path, sample_images):
    pytest.importorskip("nncf")
    disk, home = tmp_path / "disk", tmp_path / "home"
    disk.mkdir()
    r = run_cli(
        "quantize",
        *LITE0,
        "--calibration",
        str(sample_images[0]),
        "-o",
        str(disk / "int8"),
        env={"EFFNET_HOME": str(home)},
        mounts=f"mount -t tmpfs -o ro tmpfs {disk}",
    )
    _one_line(r, "Read-only file system", str(disk / "int8"))
    assert not (home / "exports").exists()  # failed before the fp32 export and the calibration


def test_quantize_into_a_read_only_cache_fails_before_calibrating_and_says_o(tmp_path, sample_images):
    pytest.importorskip("nncf")
    home = tmp_path / "home"
    home.mkdir()
    r = run_cli(
        "quantize",
        *LITE0,
        "--calibration",
        str(sample_images[0]),
        env={"EFFNET_HOME": str(home)},
        mounts=f"mount -t tmpfs -o ro tmpfs {home}",
    )
    _one_line(r, "Read-only file system", str(home / "exports"), "-o DIR")
    assert "Statistics collection" not in r.stderr and "exporting to a temporary directory" not in r.stderr
