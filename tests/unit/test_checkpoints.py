"""Reading and strictly loading checkpoints: formats, converters and every kind of bad file."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import effnet
from effnet.errors import CheckpointError
from effnet.weights.convert import detect_key_format, rename_table, to_foreign
from effnet.weights.load import load_into, read_checkpoint


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return effnet.create_model("efficientnet-lite0")


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("fmt", ["effnet", "timm", "lukemelas"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_in_every_key_format(lite0, tmp_path, fmt, suffix):
    state = lite0.state_dict() if fmt == "effnet" else to_foreign(lite0.state_dict(), lite0.plan, fmt)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    assert detect_key_format(read_checkpoint(path)) == fmt
    assert _same_weights(effnet.create_model("efficientnet-lite0", pretrained=path), lite0)


def test_containers_and_dataparallel_prefix(lite0, tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in lite0.state_dict().items()}, "epoch": 3}, path)
    assert _same_weights(effnet.create_model("efficientnet-lite0", pretrained=path), lite0)


def test_missing_num_batches_tracked_is_tolerated(lite0, tmp_path):
    path = tmp_path / "no_nbt.pth"
    torch.save({k: v for k, v in lite0.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    loaded = effnet.create_model("efficientnet-lite0", pretrained=path)
    assert torch.equal(loaded.head.bn.running_var, lite0.head.bn.running_var)
    assert torch.equal(loaded.stem.conv.weight, lite0.stem.conv.weight)


def test_wrong_keys_and_shapes_are_all_listed_at_once(lite0, tmp_path):
    state = to_foreign(lite0.state_dict(), lite0.plan, "timm")
    del state["blocks.1.0.conv_pw.weight"]
    del state["bn2.running_var"]
    state["blocks.9.9.extra.weight"] = torch.zeros(1)
    state["classifier.weight"] = torch.zeros(10, 1280)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        effnet.create_model("efficientnet-lite0", pretrained=path)
    msg = str(e.value)
    assert "2 missing: stages.1.0.expand.conv.weight, head.bn.running_var" in msg
    assert "1 unexpected: blocks.9.9.extra.weight" in msg
    assert "1 mis-shaped: classifier.weight: checkpoint (10, 1280) vs model (1000, 1280)" in msg
    assert str(path) in msg


def test_b5_checkpoint_into_lite0_is_refused(tmp_path):
    path = tmp_path / "b5.pth"
    torch.save(effnet.create_model("efficientnet-b5").state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit efficientnet-lite0"):
        effnet.create_model("efficientnet-lite0", pretrained=path)


def test_new_head_keeps_the_body(lite0, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(lite0.state_dict(), path)
    m = effnet.create_model("efficientnet-lite0", pretrained=path, num_classes=7)
    assert m.classifier.weight.shape == (7, 1280)
    assert torch.equal(m.head.conv.weight, lite0.head.conv.weight)


def test_truncated_file(lite0, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(lite0.state_dict(), good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(bad)


def test_empty_missing_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.touch()
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(junk)


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"stem.conv.weight": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint(path)
    path2 = tmp_path / "evil_zip.pth"
    torch.save({"payload": _RunsCode()}, path2)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(path2)


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"stem.conv.weight": torch.zeros(1), "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="not named tensors"):
        read_checkpoint(path)


def test_unrecognized_key_format(tmp_path):
    with pytest.raises(CheckpointError, match="unrecognized checkpoint"):
        detect_key_format({"backbone.0.weight": torch.zeros(1)})  # features.* is torchvision


def test_direct_load_into_reports_source(lite0):
    state = lite0.state_dict()
    state.pop("stem.conv.weight")
    with pytest.raises(CheckpointError, match="my-source does not fit"):
        load_into(effnet.create_model("efficientnet-lite0"), state, lite0.plan, source="my-source")


def test_rename_table_covers_lite0_lukemelas_package_keys(lite0_checkpoint, lite0):
    keys = set(read_checkpoint(lite0_checkpoint))
    assert keys == set(rename_table(lite0.plan, "lukemelas"))


def test_param_shapes_are_the_models_own():
    from effnet.model import EfficientNet
    from effnet.specs import get_variant
    from effnet.weights.convert import param_shapes

    for name in ("efficientnet-b0", "efficientnet-b5", "efficientnet-lite2"):
        model = EfficientNet(get_variant(name), num_classes=7)
        assert param_shapes(model.plan, 7) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_torchvision_table_covers_every_parameter():
    from effnet.specs import build_plan, get_variant
    from effnet.weights.convert import param_shapes, rename_table

    plan = build_plan(get_variant("efficientnet-b5"))
    table = rename_table(plan, "torchvision")
    assert set(table.values()) == set(param_shapes(plan, 1000))
    # a block without expansion keeps its squeeze-excite at layer 1, an expanding block at layer 2
    assert table["features.1.0.block.1.fc1.weight"] == "stages.0.0.se.reduce.weight"
    assert table["features.2.0.block.2.fc2.bias"] == "stages.1.0.se.expand.bias"
    assert table["features.8.0.weight"] == "head.conv.weight" and table["classifier.1.bias"] == "classifier.bias"


def test_conventions_per_format():
    from effnet.weights.to_native import conventions

    assert conventions("torchvision", "efficientnet-b0")[:2] == ("symmetric", 1e-5)
    assert conventions("torchvision", "efficientnet-b5")[:2] == ("symmetric", 1e-3)
    from pathlib import Path

    pad, eps, pre = conventions("timm", "efficientnet-b5", Path("tf_efficientnet_b5_aa-99018a74.pth"))
    assert (pad, eps, pre.input_size, pre.resize_size) == ("same", 1e-3, 456, 488)
    with pytest.raises(CheckpointError, match="--conventions tf"):  # timm keys, no timm name: no guess
        conventions("timm", "efficientnet-b5", Path("b5.pth"))


def test_records_of_lite_and_b5_metrics():
    from effnet.weights.records import default_record, get_record, records_for

    for n, size in ((1, 240), (2, 260)):
        r = default_record(f"efficientnet-lite{n}")
        assert (r.preprocess.input_size, r.preprocess.resize_size) == (size, size + 32)
        assert r.preprocess.mean == (127.0,) * 3 and r.preprocess.std == (128.0,) * 3 and r.padding == "same"
    assert all(r.metrics is not None and r.metrics.top5 is not None for r in records_for("efficientnet-b5")[:5])
    aa = get_record("tf_efficientnet_b5.aa_in1k")
    assert (aa.metrics.top1, aa.other_metrics[0].top1) == (83.69, 83.696)
    tv = get_record("efficientnet-b5.torchvision")
    assert (tv.padding, tv.bn_eps, tv.key_format, tv.preprocess.resize_size) == ("symmetric", 1e-3, "torchvision", 456)
