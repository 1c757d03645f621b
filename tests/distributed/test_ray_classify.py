"""`--engine ray` on a real two-node Ray cluster (this machine): the rows equal local classify's, bad
files become error rows, every input gives exactly one row even when an actor is killed mid-run, both
output formats read back, and Ctrl-C leaves nothing under the final name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.distributed.ray_fixtures import LITE0
from tests.testutils import REPO, run_cli

pytestmark = pytest.mark.slow


def local_json(paths: list[str]) -> dict[str, dict]:
    r = run_cli("classify", "--json", "--no-progress", "--model", LITE0, *paths)
    assert r.returncode in (0, 1), r.stderr
    return {row["path"]: row for row in map(json.loads, r.stdout.splitlines())}


def ray_cli(cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "classify", "--engine", "ray", "--ray-address", cluster.address, "--no-progress", "--model", LITE0, *args
    )


def assert_same_predictions(got: dict, want: dict) -> None:
    assert set(got) == set(want) and got["path"] == want["path"]
    if "error" in want:
        assert got == want
        return
    g, w = got["predictions"], want["predictions"]
    assert [p["class_index"] for p in g] == [p["class_index"] for p in w], got["path"]
    assert [(p["synset"], p["label"]) for p in g] == [(p["synset"], p["label"]) for p in w]
    for a, b in zip(g, w, strict=True):
        assert abs(a["probability"] - b["probability"]) <= 1e-5, got["path"]


def test_two_nodes_give_local_classify_rows_for_every_sample(ray_cluster, sample_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    r = ray_cli(ray_cluster, "--workers", "2", "--output", str(out), str(sample_dir))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    summary = r.stderr.strip().splitlines()[-1]
    assert "100 images, 0 errors" in summary and "images/s" in summary and "2 workers" in summary, summary
    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = local_json([str(sample_dir)])
    assert len(got) == len(want) == 100 and len({row["path"] for row in got}) == 100
    for row in got:
        assert_same_predictions(row, want[row["path"]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_bad_files_from_list_and_parquet_read_back(ray_cluster, sample_images, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for src in sample_images[:3]:
        shutil.copy(src, folder / src.name)
    (folder / "text.jpg").write_text("not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.JPEG").write_bytes(sample_images[3].read_bytes()[:2000])
    (folder / "notes.txt").write_text("not an image extension: not discovered")
    (folder / "._text.jpg").write_bytes(b"\x00\x05\x16\x07 a macOS companion: not discovered")
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    shutil.copy(sample_images[6], linked / sample_images[6].name)
    (folder / "linked").symlink_to(linked, target_is_directory=True)  # followed, as by every command
    listing = tmp_path / "list.txt"
    listing.write_bytes(  # with a byte-order mark, as Windows editors save it: the first line is still a path
        (
            "\n".join(
                [str(sample_images[4]), f"file://{sample_images[5]}", str(tmp_path / "missing.jpg"), "", "# comment"]
            )
            + "\n"
        ).encode("utf-8-sig")
    )
    out = tmp_path / "out.parquet"
    r = ray_cli(ray_cluster, "--output", str(out), "--from-list", str(listing), str(folder))
    assert r.returncode == 1, r.stderr  # some images failed
    assert "Traceback" not in r.stderr and "10 images, 4 errors" in r.stderr, r.stderr
    table = pq.read_table(out)
    assert table.column_names == ["path", "class_index", "synset", "label", "probability", "error"]
    rows = {Path(row["path"]).name: row for row in table.to_pylist()}
    assert len(rows) == table.num_rows == 10  # exactly one row per input
    assert rows[sample_images[6].name]["path"] == str(folder / "linked" / sample_images[6].name)
    errors = {name: row["error"] for name, row in rows.items() if row["error"] is not None}
    assert set(errors) == {"text.jpg", "empty.png", "truncated.JPEG", "missing.jpg"}
    assert errors["missing.jpg"] == f"{tmp_path / 'missing.jpg'}: no such file"
    assert errors["empty.png"].endswith("empty file (0 bytes)") and "not an image" in errors["text.jpg"]
    assert all(row["class_index"] == [] for name, row in rows.items() if name in errors)
    assert rows[sample_images[5].name]["path"] == f"file://{sample_images[5]}"  # a URI row keeps its scheme
    good = {row["path"].removeprefix("file://"): row for name, row in rows.items() if name not in errors}
    want = local_json(list(good))
    for path, row in good.items():
        predictions = [
            {"class_index": i, "synset": s, "label": lab, "probability": p}
            for i, s, lab, p in zip(row["class_index"], row["synset"], row["label"], row["probability"], strict=True)
        ]
        assert_same_predictions({"path": path, "predictions": predictions}, want[path])


def test_killed_actor_is_restarted_and_no_row_is_lost_or_doubled(ray_cluster, sample_images):
    import threading
    from collections import Counter

    from ray.util.state import list_actors

    from effnet.distributed import classify

    paths = [str(p) for p in sample_images] * 3  # 300 inputs: the run is still going when the kill lands
    ds = classify(paths, model=LITE0, workers=1, batch_size=1, progress=False)
    seen: list[str] = []
    consumer = threading.Thread(target=lambda: seen.extend(row["path"] for row in ds.iter_rows()))
    consumer.start()

    def inference_actors():
        # This session's cluster by address: another Ray on the machine would confuse autodetection.
        alive = list_actors(address=ray_cluster.address, filters=[("state", "=", "ALIVE")], detail=True)
        return [a for a in alive if "InferenceActor" in a.class_name]

    deadline = time.monotonic() + 300
    while (len(seen) < 2 or not inference_actors()) and time.monotonic() < deadline and consumer.is_alive():
        time.sleep(0.2)
    (actor,) = inference_actors()
    os.kill(actor.pid, signal.SIGKILL)  # a worker process dies mid-run: it has batches in flight
    at_kill = len(seen)
    consumer.join(timeout=600)
    assert not consumer.is_alive()
    assert at_kill < len(paths)
    assert Counter(seen) == Counter(paths)  # every input once: none lost, none duplicated
    restarted = [a for a in list_actors(address=ray_cluster.address, detail=True) if a.actor_id == actor.actor_id]
    assert restarted and restarted[0].num_restarts >= 1, restarted


def test_ctrl_c_leaves_no_partial_output(ray_cluster, sample_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "effnet",
            "classify",
            "--engine",
            "ray",
            "--ray-address",
            ray_cluster.address,
            "--no-progress",
            "--model",
            LITE0,
            "--batch-size",
            "1",
            "--output",
            str(out),
            str(sample_dir),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob(".out.jsonl.*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)  # writing has started
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    # Ray Data's executor thread is stopped before ray.shutdown(), not left to auto-connect again.
    assert "Connecting to existing Ray cluster" not in stderr, stderr
    assert list(tmp_path.iterdir()) == []  # neither the final name nor any staging file


def test_missing_extra_names_it_without_a_traceback(tmp_path, sample_images):
    hide = tmp_path / "hide"
    hide.mkdir()
    # Simulates an install without the extra: a finder that makes `import ray` / `import pyarrow` fail.
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'pyarrow'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    r = run_cli("classify", "--engine", "ray", "--output", str(tmp_path / "o.jsonl"), str(sample_images[0]), env=env)
    assert r.returncode == 1, r.stderr
    assert "pip install 'effnet[ray]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


def test_usage_errors_exit_2(tmp_path, sample_images):
    r = run_cli("classify", "--engine", "ray", str(sample_images[0]))
    assert r.returncode == 2 and "--output" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("classify", "--output", str(tmp_path / "o.jsonl"), str(sample_images[0]))
    assert r.returncode == 2 and "--engine ray" in r.stderr, r.stderr
    r = run_cli("eval", "--shared-inputs", str(sample_images[0].parent))
    assert r.returncode == 2 and "--shared-inputs is for --engine ray" in r.stderr, r.stderr
