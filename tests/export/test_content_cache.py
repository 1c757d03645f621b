"""Issue 23: the export cache is keyed by the weights' content. Two fine-tuning runs (each writes
``RUN/model.safetensors``) in one cache must each be answered by their own model on every backend and
every entry point; a checkpoint rewritten in place gets a new artifact; a renamed copy reuses one."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from effnet.errors import CheckpointError, EffnetError
from effnet.export.cache import exported_artifact, list_entries, prune
from effnet.predict import Classifier
from effnet.source import resolve_source
from effnet.weights import digest
from effnet.weights.digest import file_sha256
from effnet.weights.native import read_native_info
from tests.testutils import run_cli, write_fine_tuned_lite0

LITE0 = "efficientnet-lite0"
# Two runs with different label sets, as in the issue: run B's third class (bullfrog's row) can never be
# an answer of run A's two-class artifact, so serving B with A's IR cannot pass by chance.
RUN_A = {"n01440764": "animal", "n01530575": "object"}
RUN_B = {"n01440764": "alpha", "n01530575": "beta", "n01641577": "gamma"}
# Run B's rows in another order under the same names: a file of exactly B's size with other answers.
RUN_B2 = {"n01641577": "alpha", "n01440764": "beta", "n01530575": "gamma"}
IMAGES = ("n01440764_tench.JPEG", "n01530575_brambling.JPEG", "n01641577_bullfrog.JPEG", "n01601694_water_ouzel.JPEG")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "A": write_fine_tuned_lite0(root / "runA" / "model.safetensors", RUN_A),
        "B": write_fine_tuned_lite0(root / "runB" / "model.safetensors", RUN_B),
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One EFFNET_HOME for the CLI runs of this module: one cache, as every user has."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def cache(home) -> Path:
    return home / "exports"


@pytest.fixture(scope="module")
def images(sample_dir) -> list[Path]:
    return [sample_dir / name for name in IMAGES]


def top1(weights: Path, images: list[Path], backend: str = "torch", **options) -> list[str]:
    clf = Classifier(LITE0, weights, backend=backend, progress=False, **options)
    return [r.predictions[0].label for r in clf.classify(images, top_k=1)]


@pytest.fixture(scope="module")
def reference(runs, images) -> dict[str, list[str]]:
    """The PyTorch answers of each run: what every other backend must give."""
    want = {name: top1(path, images) for name, path in runs.items()}
    assert "gamma" in want["B"] and set(want["A"]) <= set(RUN_A.values())  # the fixture discriminates
    return want


def cli_top1(home: Path, weights: Path, images: list[Path], *args: str) -> list[str]:
    r = run_cli(
        "classify",
        "--json",
        "--no-progress",
        "--weights",
        str(weights),
        *args,
        *map(str, images),
        env={"EFFNET_HOME": str(home)},
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line)["predictions"][0]["label"] for line in r.stdout.splitlines()]


def test_two_runs_in_one_cache_classify_each_with_its_own_model(runs, images, reference, home):
    """The issue's example: `effnet classify --weights runA/...` then `--weights runB/...` (backend auto)."""
    assert cli_top1(home, runs["A"], images) == reference["A"]
    assert cli_top1(home, runs["B"], images) == reference["B"]
    kinds = sorted((e.kind, e.sha256) for e in list_entries(home / "exports"))
    assert kinds == sorted(("openvino", file_sha256(p)) for p in runs.values())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_two_runs_in_one_cache_every_backend(runs, images, reference, cache, backend):
    for name in ("A", "B"):
        assert top1(runs[name], images, backend, cache_dir=cache) == reference[name], name


def test_two_runs_in_one_cache_eval(runs, images, cache, tmp_path):
    """The evaluation loop of run B on OpenVINO, after run A's IR went into the same cache, scores what
    B's PyTorch model scores. (Through the API: `effnet eval` labels a dataset with ImageNet's classes only.)"""
    from effnet.evaluate import evaluate, find_dataset

    for image in images:
        shutil.copy(image, tmp_path / image.name)
    (tmp_path / "val.txt").write_text("".join(f"{p.name} {t}\n" for p, t in zip(images, (0, 1, 2, 2), strict=True)))
    top1(runs["A"], images, "openvino", cache_dir=cache)  # run A's artifact is in the cache first
    reports = {}
    for backend in ("torch", "openvino"):
        options = {} if backend == "torch" else {"cache_dir": cache}
        clf = Classifier(LITE0, runs["B"], backend=backend, progress=False, **options)
        dataset = find_dataset(tmp_path, annotations=tmp_path / "val.txt", labels=clf.labels)
        reports[backend] = evaluate(clf, dataset, batch_size=4).to_dict()
    for field in ("top1", "top5", "per_class", "most_confused", "images"):
        assert reports["openvino"][field] == reports["torch"][field], field
    assert any(row["top5"][0] == 2 for row in reports["torch"]["images"])  # "gamma": no 2-class IR answers it


def test_two_runs_in_one_cache_serve(runs, images, reference, cache):
    """The server of run B on OpenVINO, with run A's IR in the same cache, answers like B's PyTorch model."""
    import asyncio

    import httpx

    from effnet.serve import ServeConfig, ServedModel, create_app

    top1(runs["A"], images, "openvino", cache_dir=cache)
    served = ServedModel(Classifier(LITE0, runs["B"], backend="openvino", cache_dir=cache, progress=False))
    app = create_app(served, ServeConfig(max_wait_ms=0))

    async def main() -> list[str]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                answers = []
                for image in images:
                    r = await c.post("/v1/classify?top_k=1", content=image.read_bytes())
                    assert r.status_code == 200, r.text
                    answers.append(r.json()["predictions"][0]["label"])
                return answers

    assert asyncio.run(main()) == reference["B"]


def test_checkpoint_rewritten_in_place_with_same_size_and_mtime_gets_a_new_artifact(
    runs, images, reference, cache, tmp_path
):
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(runs["B"], ckpt)
    assert top1(ckpt, images, "openvino", cache_dir=cache) == reference["B"]
    other = write_fine_tuned_lite0(tmp_path / "b2" / "model.safetensors", RUN_B2)
    assert other.stat().st_size == ckpt.stat().st_size  # the test's premise: nothing but the content differs
    before = ckpt.stat()
    with open(ckpt, "r+b") as f:  # in place: same inode, same size
        f.write(other.read_bytes())
    os.utime(ckpt, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = ckpt.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    want = top1(ckpt, images)
    assert want != reference["B"]  # the rewrite changed the answers
    assert top1(ckpt, images, "openvino", cache_dir=cache) == want


def test_a_copy_under_another_name_reuses_the_cached_artifact(runs, cache, tmp_path):
    source = resolve_source(LITE0, runs["B"])
    # No fp16 option is the backend's fp16=False (`effnet quantize` asks without it): one entry, not two.
    with exported_artifact("openvino", source, cache_dir=cache) as original:
        pass
    entries = {e.path for e in list_entries(cache)}
    copy = tmp_path / "renamed-run" / "best.safetensors"
    copy.parent.mkdir()
    shutil.copy(runs["B"], copy)
    with exported_artifact("openvino", resolve_source(LITE0, copy), cache_dir=cache, fp16=False) as reused:
        assert reused == original
    assert {e.path for e in list_entries(cache)} == entries  # nothing was built


def test_an_ir_for_another_class_count_is_an_error_naming_both(runs, cache):
    """Issue 24: `Classifier(..., backend="openvino", model_path=IR)` with another run's IR raised IndexError."""
    with exported_artifact("openvino", resolve_source(LITE0, runs["A"]), cache_dir=cache, fp16=False) as ir_a:
        with pytest.raises(EffnetError) as e:
            Classifier(LITE0, runs["B"], backend="openvino", model_path=ir_a, progress=False)
    message = str(e.value)
    # The IR says which weights it was exported from (issue 28): refused before it runs, naming both.
    assert str(ir_a) in message and str(runs["B"]) in message and "--weights" in message


def test_an_onnx_export_of_other_weights_in_the_entry_is_an_error(runs, cache):
    """Belt and braces: a cache entry that holds the wrong file (whatever put it there) is never served."""
    with exported_artifact("onnx", resolve_source(LITE0, runs["B"]), cache_dir=cache) as onnx_b:
        pass
    with exported_artifact("onnx", resolve_source(LITE0, runs["A"]), cache_dir=cache) as onnx_a:
        pass
    saved = onnx_b.read_bytes()
    try:
        shutil.copy(onnx_a, onnx_b)
        with pytest.raises(EffnetError, match="outputs 2 classes, but it is served with 3 labels"):
            Classifier(LITE0, runs["B"], backend="onnxruntime", cache_dir=cache, progress=False)
    finally:
        onnx_b.write_bytes(saved)


def test_native_files_carry_and_check_the_sha256_of_their_weights(runs, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from effnet.weights.load import read_checkpoint
    from effnet.weights.native import tensors_sha256

    info = read_native_info(runs["B"])
    state = read_checkpoint(runs["B"])
    assert len(info.weights_sha256) == 64 and info.weights_sha256 == tensors_sha256(state)
    assert resolve_source(LITE0, runs["B"]).record.weights_sha256 == info.weights_sha256
    with safe_open(str(runs["B"]), framework="pt") as f:
        metadata = f.metadata()
    state["classifier.bias"] = state["classifier.bias"] + 1.0  # new tensors under the old metadata
    tampered = tmp_path / "tampered.safetensors"
    save_file(state, str(tampered), metadata=metadata)
    with pytest.raises(CheckpointError, match="tampered.safetensors: its tensors have sha256"):
        read_checkpoint(tampered)


def test_the_sha256_index_hashes_a_file_once_per_change(tmp_path, monkeypatch):
    calls: list[Path] = []
    real = digest.sha256_file
    monkeypatch.setattr(digest, "sha256_file", lambda p: calls.append(p) or real(p))
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    os.utime(f, ns=(0, 10**18))
    # An entry written in the same file-system clock tick as the file's last change (its ctime) is not kept
    # (racily clean): let one tick pass, as it does between writing a checkpoint and using it.
    time.sleep(0.05)
    first = file_sha256(f)
    assert first == real(f) and len(calls) == 1
    assert file_sha256(f) == first and file_sha256(tmp_path / "." / "w.bin") == first and len(calls) == 1
    with open(f, "r+b") as fh:  # same size, same mtime, same inode: only the content (and the ctime) differ
        fh.write(b"b")
    os.utime(f, ns=(0, 10**18))
    assert file_sha256(f) == real(f) != first and len(calls) == 2


def test_old_weak_key_entries_are_ignored_and_pruned(runs, cache, tmp_path):
    old = cache / "efficientnet-lite0-openvino-0123456789abcdef0123"  # what the weak key made
    old.mkdir(parents=True)
    (old / "model.xml").write_text("<net/>")
    (old / "export.json").write_text(
        json.dumps({"kind": "openvino", "weights": {"record": "file:model.safetensors", "sha256": ""}})
    )
    entries = {e.path: e for e in list_entries(cache)}
    assert not entries[old].current and all(e.current for p, e in entries.items() if p != old)
    assert [e.path for e in prune(cache, dry_run=True)] == [old] and old.exists()
    assert [e.path for e in prune(cache)] == [old] and not old.exists()
    assert {e.path for e in list_entries(cache)} == set(entries) - {old}


def test_cache_list_and_prune_cli(runs, cache, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(cache, home / "exports")
    env = {"EFFNET_HOME": str(home)}
    r = run_cli("weights", "cache", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    entries = listed["entries"]
    assert entries and listed["total_size"] == sum(e["size"] for e in entries) > 0
    assert {file_sha256(runs["B"]), file_sha256(runs["A"])} <= {e["sha256"] for e in entries}
    assert all(e["current"] and e["model"] == LITE0 for e in entries)
    oldest = entries[0]  # least recently used first
    os.utime(Path(oldest["path"]) / "export.json", (1, 1))  # last used in 1970
    r = run_cli("weights", "cache", "prune", "--older-than", "30d", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [e["path"] for e in json.loads(r.stdout)["removed"]] == [oldest["path"]]
    assert not Path(oldest["path"]).exists()
    rest = sorted(entries[1:], key=lambda e: e["last_used"])
    keep = rest[-1]["size"]
    r = run_cli("weights", "cache", "prune", "--max-size", str(keep), "--dry-run", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [e["path"] for e in json.loads(r.stdout)["removed"]] == [e["path"] for e in rest[:-1]]
    assert all(Path(e["path"]).exists() for e in rest)  # a dry run removes nothing
    r = run_cli("weights", "cache", "prune", "--all", env=env)
    assert r.returncode == 0 and f"removed {len(rest)} entries" in r.stdout, r.stdout + r.stderr
    assert not [p for p in (home / "exports").iterdir()]
    r = run_cli("weights", "cache", "prune", "--older-than", "soon", env=env)
    assert r.returncode == 2 and "expected a number with s, m, h, d or w" in r.stderr


def test_the_int8_entry_is_keyed_by_content_too(runs, tmp_path):
    from effnet.export.cache import int8_model_dir

    copy = tmp_path / "best.safetensors"
    shutil.copy(runs["B"], copy)
    dirs = {name: int8_model_dir(resolve_source(LITE0, path), tmp_path) for name, path in runs.items()}
    assert dirs["A"] != dirs["B"] == int8_model_dir(resolve_source(LITE0, copy), tmp_path)


def _hash_in_child(path: str, home: str, out) -> None:
    os.environ["EFFNET_HOME"] = home
    out.put(file_sha256(path))


def test_two_processes_hash_a_new_file_once_and_agree(tmp_path):
    """The index under concurrent processes: both get the file's sha256, one entry is written whole."""
    import hashlib
    import multiprocessing

    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(8 << 20))
    time.sleep(0.05)  # older than one clock tick: the entry may be kept
    ctx = multiprocessing.get_context("fork")  # two real processes, without importing effnet twice more
    out = ctx.Queue()
    procs = [ctx.Process(target=_hash_in_child, args=(str(f), str(tmp_path / "home"), out)) for _ in range(2)]
    for p in procs:
        p.start()
    outs = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outs == [hashlib.sha256(f.read_bytes()).hexdigest()] * 2
    entries = list((tmp_path / "home" / digest.INDEX_DIR).glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["sha256"] == outs[0]
