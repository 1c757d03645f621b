"""effnet audit end to end on folders built from the 100 sample photos (animal vs object, as in tests/train).

One CLI run (session fixture) audits: the 100 photos in their class folders with 10 of them in the wrong
folder, 3 JPEG-re-encoded copies and 1 re-encoded 90 % centre crop of other photos, 1 byte-identical copy, a
truncated and a non-image .jpg; and a --val folder of 3 re-encoded copies of DATA photos. Expected values come
from how the folders were built, never from the audit's own output.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.testutils import run_cli
from tests.train.conftest import class_index, task_label

WRONG = 10


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _reencode(src: Path, dst: Path, crop: bool = False) -> None:
    im = Image.open(src).convert("RGB")
    if crop:  # 90 % of each side, centred
        im = im.crop((im.width * 0.05, im.height * 0.05, im.width * 0.95, im.height * 0.95))
    im.save(dst, format="JPEG", quality=60)


@pytest.fixture(scope="session")
def audited(sample_images, tmp_path_factory, lite0_checkpoint):
    index = class_index()
    images = list(sample_images)
    assert len(images) == 100
    rng = random.Random(0)
    rng.shuffle(images)
    wrong = set(images[:WRONG])
    root = tmp_path_factory.mktemp("audit")
    data, val, out = root / "data", root / "val", root / "out"
    where: dict[Path, Path] = {}  # original -> its path in DATA
    for p in images:
        label = task_label(p, index)
        if p in wrong:
            label = "object" if label == "animal" else "animal"
        (data / label).mkdir(parents=True, exist_ok=True)
        where[p] = data / label / p.name
        os.symlink(p, where[p])
    copies: dict[Path, Path] = {}  # copy -> the DATA path of its original
    for k, p in enumerate(images[WRONG : WRONG + 4]):
        dst = where[p].parent / f"copy{k}-{p.stem}.jpg"
        _reencode(p, dst, crop=k == 3)
        copies[dst] = where[p]
    exact_src = images[WRONG + 4]
    exact = where[exact_src].parent / f"exact-{exact_src.name}"
    shutil.copyfile(exact_src, exact)
    truncated = data / "animal" / "truncated.jpg"
    truncated.write_bytes(images[-1].read_bytes()[:1500])
    garbage = data / "object" / "not-an-image.jpg"
    garbage.write_bytes(b"this is not a JPEG\n" * 10)
    leaks: dict[Path, Path] = {}
    for k, p in enumerate(images[WRONG + 5 : WRONG + 8]):
        label = task_label(p, index)
        (val / label).mkdir(parents=True, exist_ok=True)
        dst = val / label / f"leak{k}-{p.stem}.jpg"
        _reencode(p, dst)
        leaks[dst] = where[p]
    before = _snapshot(data), _snapshot(val)
    result = run_cli(
        "audit", str(data), "--val", str(val), "--model", "efficientnet-lite0",
        "--json", str(out / "r.json"), "--report", str(out / "report"), "--write-relabel", str(out / "relabel.csv"),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {
        "report": json.loads((out / "r.json").read_text()),
        "out": out,
        "stdout": result.stdout,
        "wrong": {str(where[p]) for p in wrong},
        "copies": {str(c): str(o) for c, o in copies.items()},
        "exact": (str(where[exact_src]), str(exact)),
        "broken": {str(truncated), str(garbage)},
        "leaks": {str(c): str(o) for c, o in leaks.items()},
        "unchanged": before == (_snapshot(data), _snapshot(val)),
        "data": data,
    }


def test_injected_wrong_labels_are_found(audited):
    issues = audited["report"]["label_issues"]
    flagged = {row["path"] for row in issues}
    hits = flagged & audited["wrong"]
    recall, precision = len(hits) / WRONG, len(hits) / max(1, len(flagged))
    assert recall >= 0.8 and precision >= 0.6, (recall, precision, sorted(flagged))
    for row in issues:
        assert row["given"] != row["suggested"] and 0.0 <= row["score"] <= 1.0
        assert row["given"] == Path(row["path"]).parent.name
    # most likely first
    assert [r["score"] for r in issues] == sorted((r["score"] for r in issues), reverse=True)


def test_copies_are_paired_with_their_originals_and_no_distinct_photos_are(audited):
    groups = [set(d["paths"]) for d in audited["report"]["duplicates"]]
    for copy, original in audited["copies"].items():
        assert any({copy, original} <= g for g in groups), (copy, original, groups)
    original_of = {**{c: o for c, o in audited["copies"].items()}, audited["exact"][1]: audited["exact"][0]}
    for g in groups:  # a group holds one photo and its copies, never two distinct photos
        assert len({original_of.get(p, p) for p in g}) == 1, g


def test_exact_duplicates_are_marked_exact(audited):
    exact = [d for d in audited["report"]["duplicates"] if d["exact"]]
    assert [sorted(d["paths"]) for d in exact] == [sorted(audited["exact"])]
    assert exact[0]["similarity"] == 1.0


def test_leakage_into_val_is_listed(audited):
    found = {(row["val"], row["data"]) for row in audited["report"]["leakage"]}
    assert found == set(audited["leaks"].items())


def test_unreadable_files_are_listed_and_data_is_untouched(audited):
    assert {row["path"] for row in audited["report"]["unreadable"]} == audited["broken"]
    assert audited["unchanged"]
    r = audited["report"]
    assert r["classes"]["animal"]["images"] + r["classes"]["object"]["images"] == r["images"] == 107


def test_report_page_and_relabel_csv(audited):
    out = audited["out"]
    page = (out / "report" / "audit.html").read_text()
    assert page.count('src="data:image/jpeg;base64,') >= len(audited["report"]["label_issues"])
    assert "http://" not in page and "https://" not in page
    rows = list(csv.DictReader((out / "relabel.csv").open()))
    assert [r["path"] for r in rows] == [r["path"] for r in audited["report"]["label_issues"]]
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


def test_an_output_inside_data_is_refused_before_any_work(audited, tmp_path):
    data = audited["data"]
    result = run_cli("audit", str(data), "--model", "efficientnet-lite0", "--json", str(data / "r.json"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "inside" in result.stderr
    assert not (data / "r.json").exists()


def test_embeddings_are_cached_by_content(sample_images, tmp_path, monkeypatch, lite0_checkpoint):
    from effnet.audit.embed import embed_images, file_facts
    from effnet.source import resolve_source

    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    paths = list(sample_images[:2])
    renamed = tmp_path / "renamed.jpg"
    shutil.copyfile(paths[0], renamed)
    source = resolve_source("efficientnet-lite0")
    first = embed_images(paths, [file_facts(p) for p in paths], source)
    again = embed_images([renamed, paths[1]], [file_facts(p) for p in (renamed, paths[1])], source)
    assert (first.cached, again.cached) == (0, 2)
    assert (first.rows == again.rows).all()


def test_damaged_cache_entries_are_misses_and_nan_weights_are_one_error(
    sample_images, tmp_path, monkeypatch, lite0_checkpoint
):
    import effnet
    from effnet.audit.embed import EMBEDDINGS_DIR, embed_images, file_facts
    from effnet.errors import EffnetError
    from effnet.source import resolve_source
    from effnet.weights.native import NativeInfo, save_native

    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a JPEG" * 10)
    paths = [*sample_images[:2], garbage]
    facts = [file_facts(p) for p in paths]
    source = resolve_source("efficientnet-lite0")
    first = embed_images(paths, facts, source)
    assert set(first.errors) == {2} and str(garbage) not in first.errors[2]  # the report names the path once
    entries = {f.sha256: next((tmp_path / "home" / EMBEDDINGS_DIR).rglob(f"{f.sha256}.npy")) for f in facts[:2]}
    entries[facts[0].sha256].write_bytes(b"")  # zero bytes: np.load raises EOFError
    np.save(entries[facts[1].sha256], np.full(first.rows.shape[1], np.nan, dtype=np.float32))
    again = embed_images(paths, facts, source)
    assert again.cached == 0 and set(again.errors) == {2}
    assert np.isfinite(again.rows[:2]).all() and np.allclose(again.rows[:2], first.rows[:2], atol=1e-5)
    assert all(np.isfinite(np.load(e)).all() for e in entries.values())  # rewritten whole

    state = effnet.create_model("efficientnet-lite0", pretrained=lite0_checkpoint).state_dict()
    first_conv = next(k for k, v in state.items() if v.ndim == 4)
    state[first_conv] = torch.full_like(state[first_conv], float("nan"))
    nan_file = save_native(
        state, tmp_path / "nan.safetensors", NativeInfo(model="efficientnet-lite0", preprocess=source.preprocess)
    )
    nan_source = resolve_source("efficientnet-lite0", nan_file)
    with pytest.raises(EffnetError, match="the model produced non-finite embeddings"):
        embed_images(paths[:2], facts[:2], nan_source)
    written = [e for e in (tmp_path / "home" / EMBEDDINGS_DIR).rglob("*.npy") if e not in entries.values()]
    assert written == []


def test_train_says_when_val_leaks_into_train(sample_images, tiny_weights, tmp_path):
    # 8 + 8 training photos with 2 in the wrong folder, and a validation folder holding a re-encoded copy
    # of a training photo beside 2 distinct photos: train's probe pass names the leak (the 64 px tiny weights;
    # their probe is too weak for the label line, which needs an out-of-sample accuracy of 80 %).
    index = class_index()
    animals = [p for p in sample_images if task_label(p, index) == "animal"]
    objects = [p for p in sample_images if task_label(p, index) == "object"]
    data, val = tmp_path / "data", tmp_path / "val"
    for label, photos in (("animal", animals[:8] + objects[8:9]), ("object", objects[:8] + animals[8:9])):
        (data / label).mkdir(parents=True)
        for p in photos:
            os.symlink(p, data / label / p.name)
    for label, photos in (("animal", animals[10:11]), ("object", objects[10:11])):
        (val / label).mkdir(parents=True)
        for p in photos:
            os.symlink(p, val / label / p.name)
    _reencode(animals[0], val / "animal" / "copy.jpg")
    result = run_cli(
        "train", str(data), "--val", str(val), "--output", str(tmp_path / "run"), "--freeze", "body",
        "--model", "efficientnet-lite0", "--weights", str(tiny_weights), "--workers", "0",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "data check: 1 validation images are near-duplicates" in result.stderr


def test_only_cache_misses_reach_the_engine_once_per_content(sample_images, tmp_path, monkeypatch, lite0_checkpoint):
    # The engine hook --engine ray uses: the local engine, recording what it is asked to embed.
    from effnet.audit import embed as embed_module
    from effnet.source import resolve_source

    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    twin = tmp_path / "twin.jpg"
    shutil.copyfile(sample_images[0], twin)
    paths = [sample_images[0], twin, sample_images[1]]
    facts = [embed_module.file_facts(p) for p in paths]
    source = resolve_source("efficientnet-lite0")
    asked: list[list[str]] = []

    def engine(todo, src, taps):
        asked.append([str(p) for p in todo])
        net = src.build_model().eval()
        yield from embed_module._embed_here(todo, src, taps, net=net, batch_size=8, workers=1)

    first = embed_module.embed_images(paths, facts, source, engine=engine)
    assert asked == [[str(sample_images[0]), str(sample_images[1])]]  # the byte-identical twin is not sent
    assert (first.rows[0] == first.rows[1]).all() and np.isfinite(first.rows).all() and first.cached == 0
    again = embed_module.embed_images(paths, facts, source, engine=engine)
    assert len(asked) == 1 and again.cached == 3 and (again.rows == first.rows).all()


def test_the_engine_is_closed_as_soon_as_the_embedding_loop_stops(sample_images, tmp_path, monkeypatch):
    # --engine ray's engine is a generator inside its cluster (jobs.connected): an error (or Ctrl-C, SIGTERM)
    # in the loop must close it there, so its Ray stops then, not when the traceback holding it is dropped.
    from effnet.audit import embed as embed_module
    from effnet.errors import EffnetError
    from effnet.source import resolve_source

    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    paths = [sample_images[0], sample_images[1]]
    facts = [embed_module.file_facts(p) for p in paths]
    closed: list[str] = []

    def engine(todo, src, taps):
        try:
            yield embed_module.Embedded([0], np.full((1, 4), np.nan, dtype=np.float32), {})  # damaged weights
            yield embed_module.Embedded([1], np.zeros((1, 4), dtype=np.float32), {})
        finally:
            closed.append("closed")

    with pytest.raises(EffnetError, match="non-finite") as raised:
        embed_module.embed_images(paths, facts, resolve_source("efficientnet-lite0"), cache=False, engine=engine)
    assert raised.value is not None and closed == ["closed"]
