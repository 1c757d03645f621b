"""effnet.device: the one parser and validator of device strings."""

from __future__ import annotations

import pytest
import torch

from effnet.device import DeviceError, device_kind, is_cuda, parse_device, resolve_device
from effnet.errors import EffnetError


@pytest.mark.parametrize(
    "text, canonical",
    [("cpu", "cpu"), (" CPU ", "cpu"), ("cuda", "cuda"), ("cuda:0", "cuda:0"), ("CUDA:3", "cuda:3"), ("auto", "auto")],
)
def test_parse_device_accepts_the_four_forms(text, canonical):
    assert parse_device(text) == canonical


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cuda:-1", "mps", "", "cpu:0", "cuda0"])
def test_parse_device_rejects_everything_else_with_the_choices(text):
    with pytest.raises(DeviceError, match="one of auto, cpu, cuda, cuda:N"):
        parse_device(text)
    assert issubclass(DeviceError, EffnetError)


def test_cpu_and_auto_resolve_to_a_device_that_exists():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_cuda_without_cuda_names_the_torch_build(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as e:
        resolve_device("cuda")
    message = str(e.value)
    assert message.startswith("CUDA requested (--device cuda) but torch.cuda.is_available() is False")
    assert torch.__version__ in message
    assert ("built without CUDA" if torch.version.cuda is None else "no GPU is visible") in message
    assert resolve_device("auto") == torch.device("cpu")  # auto falls back, never errors


def test_cuda_index_beyond_the_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


def test_device_kind():
    assert device_kind("cuda:1") == "cuda" and device_kind(torch.device("cpu")) == "cpu"
    assert is_cuda("cuda") and not is_cuda("cpu")
    with pytest.raises(DeviceError, match="resolve_device"):
        device_kind("auto")
