"""Ray nodes that do not share the driver's files (tests/distributed/ray_fixtures.py: each node has its own
EFFNET_HOME). The driver's weights file is replaced after submission by another file of the same size,
and its list file is deleted: the rows must still be right, so the weights reached the nodes through the
object store after a sha256 check. The driver's local inputs are read by tasks on the driver's node only,
streamed as the pipeline pulls them. With
--shared-inputs a file the driver saw but a node does not gives an error row naming the file and the node.
The output location is checked from every node before inference, and a run whose rows do not match its
inputs writes nothing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from effnet.errors import EffnetError
from tests.distributed.ray_fixtures import LITE0

pytestmark = pytest.mark.slow


def test_nodes_get_weights_through_the_object_store_and_inputs_read_on_the_drivers_node(
    ray_cluster, node_homes, sample_images, tmp_path
):
    import ray

    from effnet.distributed import classify
    from effnet.predict import Classifier
    from effnet.source import resolve_source

    checkpoint = Path(resolve_source(LITE0, progress=False).checkpoint)
    weights = tmp_path / checkpoint.name
    shutil.copy(checkpoint, weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for src in sample_images[:6]:
        shutil.copy(src, inputs / src.name)
    listing = tmp_path / "list.txt"  # a list only the driver reads: relative entries, its own cwd
    listing.write_text("\n".join(str(p) for p in sorted(inputs.iterdir())[:4]) + f"\n{tmp_path / 'gone.jpg'}\n")
    want = {
        r.path: r.predictions[0].class_index
        for r in Classifier(LITE0, backend="torch", progress=False).classify(sorted(inputs.iterdir()), top_k=1)
    }

    ds = classify(
        [str(p) for p in sorted(inputs.iterdir())[4:]],
        LITE0,
        str(weights),
        from_list=[listing],
        backend="torch",  # no export: the test is about files, and stays a few seconds
        workers=2,
        batch_size=2,
        progress=False,
    )
    # Submitted. From now on the driver's weights path holds nothing the nodes could use: a same-size
    # impostor (a size check would take it); the list was read by the driver, at submission.
    weights.write_bytes(b"\0" * weights.stat().st_size)
    listing.unlink()

    rows = {row["path"]: row for row in ds.iter_rows()}
    assert len(rows) == 7
    assert rows[str(tmp_path / "gone.jpg")]["error"] == f"{tmp_path / 'gone.jpg'}: no such file"
    got = {path: row["class_index"][0] for path, row in rows.items() if row["error"] is None}
    assert got == {str(p): top for p, top in want.items()}
    # The nodes that ran actors verified the shipped bytes into their own caches, never the driver's.
    cached = [home / "ray-weights" / sha / weights.name for home in node_homes]
    present = [c for c in cached if c.is_file()]
    assert present, cached
    assert all(hashlib.sha256(c.read_bytes()).hexdigest() == sha for c in present)
    # Every read of the driver's files ran on the driver's node (the only node that must see them).
    from ray.util.state import list_tasks

    driver_node = ray.get_runtime_context().get_node_id()
    reads = [t for t in list_tasks(limit=10_000, raise_on_missing_output=False) if "ReadDriverFiles" in t.name]
    assert reads and {t.node_id for t in reads} == {driver_node}, {(t.name, t.node_id) for t in reads}


def test_shared_inputs_a_node_cannot_read_are_error_rows_naming_file_and_node(ray_cluster, sample_images, tmp_path):
    from effnet.distributed import classify

    folder = tmp_path / "nfs"
    folder.mkdir()
    for src in sample_images[:3]:
        shutil.copy(src, folder / src.name)
    ds = classify([str(folder)], LITE0, shared_inputs=True, backend="torch", workers=1, progress=False)
    lost = folder / sample_images[0].name
    lost.unlink()  # the driver saw it; the nodes do not (a mount missing on them)
    rows = {row["path"]: row for row in ds.iter_rows()}
    assert len(rows) == 3
    error = rows[str(lost)]["error"]
    assert error.startswith(f"{lost}: no such file on node ") and "--shared-inputs" in error, error
    assert sum(row["error"] is None for row in rows.values()) == 2


def test_output_checked_from_every_node_and_rows_compared_with_inputs(ray_cluster, tmp_path):
    import ray

    from effnet.distributed.outputs import _probe, output_spec, staging, write_results

    # What a node reports when it does not see the driver's folder, or sees another folder of that name.
    elsewhere = tmp_path / "node-local"
    elsewhere.mkdir()
    assert "does not see the driver's folder" in _probe(str(elsewhere), "token")
    (elsewhere / "driver.probe").write_text("another token")
    assert "not the driver's" in _probe(str(elsewhere), "token")

    spec = output_spec(tmp_path / "out.jsonl")
    rows = [
        {"path": "a.jpg", "class_index": [1], "synset": ["n1"], "label": ["x"], "probability": [0.5], "error": None},
        {"path": "b.jpg", "class_index": [], "synset": [], "label": [], "probability": [], "error": "b.jpg: bad"},
    ]
    with pytest.raises(EffnetError, match="wrote 2 rows for 3 inputs"), staging(spec) as parts:
        assert not list(parts.iterdir())  # every node's probe checked and removed
        write_results(ray.data.from_items(rows), spec, parts, expected=3)
    assert list(tmp_path.iterdir()) == [elsewhere]  # nothing under the final name, no staging left
    with staging(spec) as parts:
        summary = write_results(ray.data.from_items(rows), spec, parts, expected=2)
    assert (summary.rows, summary.errors) == (2, 1) and spec.path.is_file()
