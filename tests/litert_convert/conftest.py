"""The converter's tests need ``effnet[litert]`` (litert-torch), which is not in the default or CI install:
it pulls about 1 GB (jax, jaxlib, transformers, torchao, litert-converter) and pins typing-extensions and
pydantic below what the rest of effnet's extras install (docs/export.md, "TFLite"). They run where the
converter is installed, e.g. a venv made for it:

    python3 -m venv /tmp/litert-venv && /tmp/litert-venv/bin/pip install -e '.[litert,lite0,lite1,lite2,test]'
    /tmp/litert-venv/bin/python -m pytest tests/litert_convert

Where litert-torch cannot be imported this folder is not collected (never a skip: under CI=true a skip fails).
The runtime's tests (tests/export/test_litert.py) always run.
"""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("litert_torch") is not None else ["test_*.py"]
