"""Under ``CI=true`` a skipped test is a failed test, except tests marked ``gpu`` (a GPU is the one thing a
CI machine may truly lack). A broken install (a missing extra, an absent ``../shared``) would otherwise turn
the strongest tests (parity, real weights, export, browser) into silent skips.

Loaded by ``tests/conftest.py``; kept in its own module (no torch, no fixtures) so ``tests/unit/test_ci_skips.py``
can load it into a pytester run with ``-p tests.ci_skips``. Covers skips in the test body, in fixtures and
``skipif`` marks (setup), and at import time (``pytest.importorskip`` at module level: a collection error,
which stops the run before any test, as every collection error does).
A GPU-only module must mark its tests ``gpu`` and skip per test (``pytestmark = [pytest.mark.gpu,
pytest.mark.skipif(...)]``), not skip the whole module at import.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

ALLOWED_MARKER = "gpu"


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _reason(longrepr: object) -> str:
    # A skip's longrepr is (path, lineno, "Skipped: reason").
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _message(where: str, longrepr: object) -> str:
    return (
        f"CI=true: {where} was skipped, and under CI a skip is a failure (only tests marked "
        f"'{ALLOWED_MARKER}' may skip): {_reason(longrepr)}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and ci()) or hasattr(report, "wasxfail"):  # an xfail is not a skip
        return
    if item.get_closest_marker(ALLOWED_MARKER) is not None:
        return
    report.outcome = "failed"
    report.longrepr = _message(f"{item.nodeid} ({report.when})", report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and ci():
        report.outcome = "failed"
        report.longrepr = _message(f"collecting {collector.nodeid}", report.longrepr)
