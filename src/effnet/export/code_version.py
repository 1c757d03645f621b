"""The version of the code that writes an artifact: a sha256 of the effnet source files an export runs.

``effnet.__version__`` is the same in every commit, and a commit hash does not exist for a wheel or an
uncommitted tree; the bytes of the modules that build the network, load its weights and write the file do.
The export cache keys on it (a stale artifact is never reused after the code that made it changed) and every
artifact carries it (``code_version`` in its metadata).
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

__all__ = ["EXPORT_CODE", "code_files", "code_fingerprint"]

# Where an export starts, relative to the effnet package: the exporters and quantization (a folder means
# every .py file in it). Every effnet module they import, at any depth and inside functions too, is found
# from their source with ast (:func:`code_files`): a listed file list drifted (optimize.py's BN folding,
# artifact.py, pipeline.py's calibration feeding were missing) whenever a module was added or split. Read
# from the files, not from sys.modules, so the fingerprint is the same in every process. A root that does
# not exist (a module renamed since) is skipped.
EXPORT_CODE = ("export", "quantize.py", "weights", "source.py", "factory.py", "model.py", "specs.py")


def _module_file(root: Path, parts: list[str]) -> Path | None:
    """The file of effnet module ``parts`` (relative to the package), or None when it is not one."""
    base = root.joinpath(*parts) if parts else root
    if base.with_suffix(".py").is_file() and parts:
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(root: Path, file: Path) -> set[Path]:
    """The effnet source files ``file`` imports (relative ``from .x import y``, ``import effnet.x``)."""
    package = list(file.relative_to(root).parent.parts)
    found: set[Path] = set()
    for node in ast.walk(ast.parse(file.read_bytes(), str(file))):
        targets: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            name = (node.module or "").split(".")
            if node.level:
                if node.level - 1 > len(package):
                    continue
                mod = package[: len(package) - (node.level - 1)] + name
            elif name[0] == "effnet":
                mod = name[1:]
            else:
                continue
            mod = [m for m in mod if m]
            targets.append(mod)
            targets += [mod + [alias.name] for alias in node.names]  # `from . import optimize`: a submodule
        elif isinstance(node, ast.Import):
            targets += [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "effnet"]
        for parts in targets:
            for n in range(1, len(parts) + 1):  # a package's __init__ runs before its submodule
                hit = _module_file(root, parts[:n])
                if hit is not None:
                    found.add(hit)
            if not parts and (root / "__init__.py").is_file():  # `from .. import x` runs the package's own
                found.add(root / "__init__.py")
    return found


_PACKAGE = Path(__file__).resolve().parent.parent


@cache
def code_files(root: Path = _PACKAGE) -> tuple[str, ...]:
    """The effnet source files an export depends on, relative to the package ``root``, sorted:
    :data:`EXPORT_CODE` and everything they import from effnet, transitively (quantization evaluates
    through the backends, so they are in it too)."""
    todo: list[Path] = []
    for entry in EXPORT_CODE:
        path = root / entry
        todo += sorted(path.rglob("*.py")) if path.is_dir() else ([path] if path.is_file() else [])
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo += sorted(_imports(root, file) - seen)
    return tuple(sorted(f.relative_to(root).as_posix() for f in seen))


@cache
def code_fingerprint(root: Path = _PACKAGE) -> str:
    """``sha256:`` + the first 16 hex digits of the sha256 over the names and bytes of :func:`code_files`."""
    digest = hashlib.sha256()
    for name in code_files(root):
        digest.update(name.encode() + b"\0")
        digest.update((root / name).read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]
