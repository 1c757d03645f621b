"""The CI=true hook (tests/ci_skips.py, loaded by tests/conftest.py), run on small test files with pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SKIPS = """
import pytest

@pytest.fixture
def needs_data():
    pytest.skip("../shared not found")

def test_skips_in_body():
    pytest.skip("extra not installed")

def test_skips_in_fixture(needs_data):
    pass

@pytest.mark.skipif(True, reason="condition")
def test_skipif_mark():
    pass

@pytest.mark.gpu
def test_gpu_may_skip():
    pytest.skip("no CUDA")

@pytest.mark.gpu
@pytest.mark.skipif(True, reason="no CUDA")
def test_gpu_skipif():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail_stays_xfail():
    assert False

def test_passes():
    pass
"""

MODULE_SKIP = """
import pytest
pytest.importorskip("no_such_module_effnet_test")

def test_never_collected():
    pass
"""


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makepyfile(test_sample=SKIPS, test_module_skip=MODULE_SKIP)
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    # A collection error stops a real run before any test (pytest's default); here both files run in one session.
    # In-process, the hook module is imported already, so pytest warns it cannot rewrite its asserts: harmless.
    return pytester.runpytest(
        "-p", "tests.ci_skips", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestWarning",
        "--continue-on-collection-errors",
    )  # fmt: skip


def test_under_ci_a_skip_fails_except_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = _run(pytester)
    # A body skip becomes a failure; skips in setup (fixture, skipif) and at import become errors.
    # The gpu-marked skips and the xfail stay what they are.
    result.assert_outcomes(passed=1, failed=1, errors=3, skipped=2, xfailed=1)
    for line in (
        "*CI=true*test_skips_in_body (call)*extra not installed*",
        "*CI=true*test_skips_in_fixture (setup)*../shared not found*",
        "*CI=true*test_skipif_mark (setup)*condition*",
        "*CI=true*collecting test_module_skip.py*no_such_module_effnet_test*",
    ):
        result.stdout.fnmatch_lines([line])
    assert result.ret != 0


def test_without_ci_skips_stay_skips(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    result = _run(pytester)
    result.assert_outcomes(passed=1, skipped=6, xfailed=1)
    assert result.ret == 0
