"""The audit tests reuse the training tests' 64 px Lite0 weights (for the `effnet train` data-check test)."""

from tests.train.conftest import tiny_weights  # noqa: F401 - a fixture: pytest finds it by name here
