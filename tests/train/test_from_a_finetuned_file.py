"""Issue 28: `effnet train --weights RUN/model.safetensors` takes the model from the file (no --model), and
`--freeze body` from a fine-tuned file with the same classes runs the documented linear probe, not SGD."""

from __future__ import annotations

import json

from tests.testutils import run_cli, write_finetuned_model


def test_train_takes_the_model_from_the_file_and_probes_with_freeze_body(tiny_task, tmp_path):
    train, val = tiny_task
    weights = write_finetuned_model(tmp_path / "runA" / "model.safetensors", ("animal", "object"))
    out = tmp_path / "runB"
    r = run_cli(
        "train",
        str(train),
        "--val",
        str(val),
        "--weights",
        str(weights),
        "--freeze",
        "body",
        "--output",
        str(out),
        "--no-progress",
        "--json",
        "--device",
        "cpu",
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "holds weights for" not in r.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row.get("phase") for row in log] == ["linear probe"], log  # the probe alone, no SGD epochs
    assert json.loads(r.stdout)["classes"] == ["animal", "object"]
