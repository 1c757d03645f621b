"""The audit's checks on synthetic embeddings (no model): grouping, folds, ranking."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from effnet.train.datacheck import duplicate_groups, group_folds, label_issues, unit_rows


def test_near_copies_group_and_distinct_rows_do_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 64))
    x[10] = x[3] + 0.01 * rng.normal(size=64)
    x[150] = x[3] + 0.02 * rng.normal(size=64)
    x[77] = x[5]
    groups = duplicate_groups(unit_rows(x), threshold=0.9, same=[[5, 77]])
    assert sorted(sorted(m) for m, _ in groups) == [[3, 10, 150], [5, 77]]
    assert dict((tuple(sorted(m)), s) for m, s in groups)[(5, 77)] == pytest.approx(1.0, abs=1e-6)


def test_a_group_stays_in_one_fold_and_every_fold_holds_every_class():
    labels = np.array([0] * 30 + [1] * 30)
    folds = group_folds(labels, [[0, 1, 2, 3], [40, 41]], 5, seed=1)
    assert len(set(folds[[0, 1, 2, 3]])) == 1 and len(set(folds[[40, 41]])) == 1
    assert all({0, 1} <= set(labels[folds == f]) for f in range(5))


def test_label_issues_are_the_disbelieved_labels_worst_first():
    y = np.array([0] * 10 + [1] * 10)
    probs = np.tile([0.9, 0.1], (20, 1))
    probs[10:] = [0.1, 0.9]
    probs[2], probs[15] = [0.2, 0.8], [0.97, 0.03]  # image 2 looks like class 1, image 15 surely class 0
    issues = label_issues(y, probs)
    assert [(i.index, i.given, i.suggested) for i in issues] == [(15, 1, 0), (2, 0, 1)]
    assert [round(i.score, 2) for i in issues] == [0.97, 0.8]


def test_weights_cut_after_a_stage_take_duplicates_from_their_pretrained_head(lite0_checkpoint, tmp_path):
    # The near-duplicate threshold was measured on the full network's head convolution: weights cut after
    # stage 5 (effnet train --freeze body) have none, so the duplicate checks read the pretrained Lite0.
    import effnet
    from effnet.audit.run import duplicate_source, tap_name
    from effnet.source import resolve_source
    from effnet.weights.native import NativeInfo, save_native

    plain = resolve_source("efficientnet-lite0")
    model = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint, embedding_stage=5)
    info = NativeInfo(model="efficientnet-lite0", preprocess=plain.preprocess, embedding_stage=5)
    source = resolve_source("efficientnet-lite0", save_native(model.state_dict(), tmp_path / "cut.safetensors", info))
    full, why = duplicate_source(source)
    assert full is not None and why == ""
    assert full.record is not None and full.record.embedding_stage is None and full.checkpoint != source.checkpoint
    assert duplicate_source(plain) == (plain, "")
    assert (tap_name(None, 5), tap_name(None, None), tap_name(4, 5)) == ("stage 5", "head", "stage 4")


def test_the_label_check_says_why_it_cannot_run():
    from effnet.audit.run import label_check_skipped

    names = ("cat", "dog", "fox")
    assert "only one class (dog)" in label_check_skipped(np.array([1, 1, 1, 1, 1]), names)
    assert "only 3 readable images" in label_check_skipped(np.array([0, 1, 1]), names)
    assert "class fox has fewer than 2" in label_check_skipped(np.array([0, 0, 1, 1, 2]), names)
    assert label_check_skipped(np.array([], dtype=np.int64), names) == "no readable images"
    assert label_check_skipped(np.array([0, 0, 1, 1]), names) is None


def test_a_probe_at_chance_makes_the_label_list_unreliable():
    from effnet.audit.run import labels_reliable

    assert not labels_reliable(0.525, 0.5)  # the attacker's random split: chance
    assert labels_reliable(0.86, 0.5)  # the injected-label test folder (docs/audit.md)
    assert not labels_reliable(0.91, 0.9)  # always answering the big class is as good
    assert not labels_reliable(0.79, 0.3)  # below effnet train's 80 % gate


def test_val_sharing_files_with_data_is_refused_before_any_work(sample_images, tmp_path):
    import os

    from effnet.audit import audit
    from effnet.errors import EffnetError

    for k, label in enumerate(("a", "b")):
        (tmp_path / "data" / label).mkdir(parents=True)
        os.symlink(sample_images[k], tmp_path / "data" / label / "1.jpg")
    data = tmp_path / "data"
    with pytest.raises(EffnetError, match="shares images with"):
        audit(data, data, model="no-such-model")  # refused before the model is even looked up
    with pytest.raises(EffnetError, match="shares images with"):
        audit(data, tmp_path, model="no-such-model")  # DATA inside --val (its class folder "data")


def test_a_missing_extra_is_named_before_any_embedding(sample_images, tmp_path):
    import os

    from tests.testutils import run_cli

    # A cleanlab that cannot be imported, first on the path: the audit names the extra before it embeds.
    (tmp_path / "shim" / "cleanlab").mkdir(parents=True)
    (tmp_path / "shim" / "cleanlab" / "__init__.py").write_text("raise ImportError('cleanlab is broken here')\n")
    for k, label in enumerate(("a", "b")):
        (tmp_path / "data" / label).mkdir(parents=True)
        os.symlink(sample_images[k], tmp_path / "data" / label / "1.jpg")
    env = {
        "PYTHONPATH": f"{tmp_path / 'shim'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "EFFNET_HOME": str(tmp_path / "home"),
    }
    result = run_cli("audit", str(tmp_path / "data"), "--model", "efficientnet-lite0", env=env, timeout=120)
    assert result.returncode != 0
    assert "effnet[audit]" in result.stderr and "cleanlab" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "embeddings").exists()


def _two_class_folder(sample_images, root):
    import os

    for k, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for j in range(2):
            os.symlink(sample_images[2 * k + j], root / label / f"{j}.jpg")
    return root


def test_a_failed_audit_leaves_no_output_folders_and_outputs_never_share_a_file(sample_images, tmp_path):
    from tests.testutils import run_cli

    data = _two_class_folder(sample_images, tmp_path / "data")
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not weights")
    failed = run_cli(
        "audit", str(data), "--model", "efficientnet-lite0", "--weights", str(bogus),
        "--report", str(tmp_path / "newrep" / "deep"), "--json", str(tmp_path / "newdir" / "x" / "r.json"),
        "--write-relabel", str(tmp_path / "csvdir" / "r.csv"),
    )  # fmt: skip
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.safetensors", "data"]
    for args in (
        ["--json", str(tmp_path / "o" / "same"), "--write-relabel", str(tmp_path / "o" / "same")],
        ["--report", str(tmp_path / "rep"), "--json", str(tmp_path / "rep" / "audit.json")],
        ["--json", "-", "--write-relabel", "-"],
    ):
        refused = run_cli("audit", str(data), "--model", "no-such-model", *args)
        assert refused.returncode != 0 and refused.stderr.count("\n") == 1, refused.stderr
        assert "stdout" in refused.stderr or "one file" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.safetensors", "data"]


def test_unreadable_reasons_terminal_names_and_csv_cells(sample_images, tmp_path, monkeypatch):
    from PIL import Image

    from effnet.audit.embed import file_facts
    from effnet.audit.outputs import relabel_csv_text
    from effnet.audit.run import AuditReport
    from effnet.cli.audit import shown

    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    assert file_facts(tmp_path / "dangling.jpg").error == "cannot be read: No such file or directory"
    assert file_facts(sample_images[0]).error is None
    Image.new("RGB", (20, 20)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 400 px: over the limit, under twice it (a warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak as a warning
        bomb = file_facts(tmp_path / "big.png")
    assert bomb.error is not None and "too many pixels" in bomb.error and "400" in bomb.error

    assert shown("a\nb\x1b[31m\tc") == "a\\nb\\x1b[31m\\tc" and shown("ok é") == "ok é"
    report = AuditReport(data="d", val=None, model="m", weights="w", classes={})
    report.label_issues = [
        {"path": "=HYPERLINK(1)", "given": "+cat", "suggested": "@dog", "score": 0.5},
        {"path": "-x.jpg", "given": "cat", "suggested": "dog", "score": 0.25},
    ]
    rows = relabel_csv_text(report).splitlines()
    assert rows[1:] == ["'=HYPERLINK(1),'+cat,'@dog,0.5", "'-x.jpg,cat,dog,0.25"]
