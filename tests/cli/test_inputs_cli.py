"""`effnet classify` on what a shell hands it: '-' (stdin), a FIFO, a folder of symlinked folders with macOS
._* companions (issue 24, items 5, 7 and 8), as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.testutils import EXAMPLES, REPO, feed_fifo, write_finetuned_model

CHELSEA, COFFEE = EXAMPLES / "chelsea.png", EXAMPLES / "coffee.png"


def test_classify_reads_stdin_a_fifo_and_symlinked_folders(tmp_path):
    weights = write_finetuned_model(tmp_path / "model.safetensors", tuple("abcdefg"))
    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    (photos / "cats" / "chelsea.png").symlink_to(CHELSEA)
    (photos / "cats" / "._chelsea.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS companion: skipped
    subset = tmp_path / "subset"
    subset.mkdir()
    (subset / "cats").symlink_to(photos / "cats", target_is_directory=True)  # only symlinked folders
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    feeder = feed_fifo(fifo, CHELSEA.read_bytes())
    r = subprocess.run(
        [sys.executable, "-m", "effnet", "classify", "--weights", str(weights), "--backend", "torch", "--json"]
        + ["--no-progress", "--top-k", "3", "-", str(fifo), str(subset), str(COFFEE), str(CHELSEA)],
        input=COFFEE.read_bytes(),
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )
    feeder.join(5)
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [row["path"] for row in rows] == ["-", str(fifo), str(subset / "cats" / "chelsea.png"), str(COFFEE),
                                             str(CHELSEA)]  # fmt: skip
    by_path = {row["path"]: row["predictions"] for row in rows}
    assert by_path["-"] == by_path[str(COFFEE)]  # stdin held coffee.png
    assert by_path[str(fifo)] == by_path[str(CHELSEA)] == by_path[str(subset / "cats" / "chelsea.png")]
