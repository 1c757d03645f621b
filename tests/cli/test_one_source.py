"""classify and eval resolve the model source once (issue 32): the CLI resolves it and hands the resolved
object to the local or the Ray engine; nothing downstream resolves it again.

Counted in the process that runs the command: every resolution runs :func:`effnet.source.resolve_source`
(a model file's base weights, resolved inside it, are part of the same resolution)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import torch

import effnet
import effnet.source
from effnet.cli import main

LITE0 = "efficientnet-lite0"


def _effnet_modules_holding(function) -> list:
    return [
        m
        for m in list(sys.modules.values())
        if getattr(m, "__name__", "").startswith("effnet") and getattr(m, "resolve_source", None) is function
    ]


@pytest.fixture
def resolutions(monkeypatch) -> Iterator[list[tuple]]:
    """The (model, weights) of each outermost resolve_source call made from now on, however it was imported."""
    real = effnet.source.resolve_source
    calls: list[tuple] = []
    depth = [0]

    def counting(*args, **kwargs):
        if depth[0] == 0:
            calls.append(args[:2])
        depth[0] += 1
        try:
            return real(*args, **kwargs)
        finally:
            depth[0] -= 1

    # effnet.source itself (what later imports bind) and every module that imported it by name already.
    for module in _effnet_modules_holding(real):
        monkeypatch.setattr(module, "resolve_source", counting)
    yield calls
    for module in _effnet_modules_holding(counting):  # imported during the test: bound to the counter
        module.resolve_source = real


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory):
    """A Lite0 graph written by torch.onnx.export itself: no effnet metadata, so its source is the flags'."""
    path = tmp_path_factory.mktemp("plain") / "plain.onnx"
    net = effnet.create_model(LITE0, pretrained=False)
    torch.onnx.export(net, torch.zeros(1, 3, 224, 224), str(path), input_names=["data"], dynamo=False)
    return path


def test_classify_resolves_the_model_source_once(resolutions, sample_images, capsys):
    images = [str(p) for p in sample_images[:2]]
    assert main(["classify", "--model", LITE0, "--backend", "torch", "--json", "--no-progress", *images]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert resolutions == [(LITE0, None)]


def test_eval_resolves_the_model_source_once_with_and_without_a_model_file(resolutions, sample_dir, plain_onnx):
    base = ["eval", str(sample_dir), "--model", LITE0, "--limit", "2", "--no-progress"]
    assert main([*base, "--backend", "torch"]) == 0
    assert resolutions == [(LITE0, None)]
    resolutions.clear()
    # A model file says (or here, being made elsewhere, is given) its classes before the dataset is read:
    # that resolution is the one the classifier is built on.
    assert main([*base, "--model-path", str(plain_onnx), "--output-kind", "logits"]) == 0
    assert resolutions == [(LITE0, None)]
