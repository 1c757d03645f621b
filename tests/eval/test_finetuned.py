"""`effnet eval` of a fine-tuned model with `--weights RUN/model.safetensors` alone (issue 24, item 3; what
docs/training.md promises): the run's own class folders, and --annotations naming the run's classes or
giving indices into the model's class list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from effnet.evaluate.datasets import DatasetError, find_dataset
from effnet.labels import get_labels
from tests.testutils import EXAMPLES, run_cli, write_finetuned_model

CLASSES = ("big cat", "cup")  # a run's folder names: spaces allowed
IMAGES = {"big cat": ["chelsea.png"], "cup": ["coffee.png"]}


def class_folders(root: Path, names: tuple[str, ...] = CLASSES) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        for image in IMAGES[name]:
            os.symlink(EXAMPLES / image, root / name / image)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    write_finetuned_model(run / "model.safetensors", CLASSES)
    return run


def test_eval_takes_the_runs_class_folders_and_class_names(run_dir, tmp_path):
    data = class_folders(tmp_path / "val")
    weights = str(run_dir / "model.safetensors")
    by_folder = run_cli("eval", str(data), "--weights", weights, "--backend", "torch", "--no-progress", "--json",
                        str(tmp_path / "folders.json"))  # fmt: skip
    assert by_folder.returncode == 0, by_folder.stderr
    assert "[class-folders]" in by_folder.stdout
    ann = tmp_path / "val.txt"
    ann.write_bytes("big cat/chelsea.png big cat\ncup/coffee.png 1\n".encode("utf-8-sig"))  # a name, an index
    by_file = run_cli("eval", str(data), "--weights", weights, "--backend", "torch", "--no-progress",
                      "--annotations", str(ann), "--json", str(tmp_path / "annotated.json"))  # fmt: skip
    assert by_file.returncode == 0, by_file.stderr
    reports = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("folders", "annotated")]
    for report in reports:
        assert report["count"] == 2 and report["failed"] == 0
        assert [(c["label"], c["count"]) for c in report["per_class"]] == [("big cat", 1), ("cup", 1)]
    # The same images with the same labels, whichever way they were given: the same answers.
    assert reports[0]["top1_correct"] == reports[1]["top1_correct"]
    assert sorted(map(json.dumps, reports[0]["images"])) == sorted(map(json.dumps, reports[1]["images"]))


def test_finetuned_labels_in_dataset_layouts(tmp_path):
    labels = get_labels(list(CLASSES))
    data = class_folders(tmp_path / "val")
    assert {(s.path.name, s.label) for s in find_dataset(data, labels=labels).samples} == {
        ("chelsea.png", 0),
        ("coffee.png", 1),
    }
    (data / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"dog.*not classes of this model.*big cat, cup"):
        find_dataset(data, labels=labels)
    (data / "dog").rmdir()
    ann = tmp_path / "val.txt"
    ann.write_text("big cat/chelsea.png 0\ncup/coffee.png cup\n")
    assert find_dataset(data, ann, labels=labels).samples[0].label == 0
    ann.write_text("big cat/chelsea.png dog\n")
    with pytest.raises(DatasetError, match=r"val.txt:1: expected a class index or one of the model's class names"):
        find_dataset(data, ann, labels=labels)
    # Classes named by numbers: the name wins over the index (what a user of such a run writes).
    numbered = get_labels(["10", "2"])  # sorted folder names: "10" is class 0
    (tmp_path / "flat").mkdir()
    os.symlink(EXAMPLES / "chelsea.png", tmp_path / "flat" / "a.png")
    (tmp_path / "n.txt").write_text("a.png 10\n")
    assert find_dataset(tmp_path / "flat", tmp_path / "n.txt", labels=numbered).samples[0].label == 0
