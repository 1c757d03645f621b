"""The house rules of ARCHITECTURE.md, checked: every module sits in one layer of the table written there,
no import climbs a layer outside the commented allow-list below, modules stay under 400 lines, library code
raises instead of asserting, and every path the code map names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.testutils import REPO

SRC = REPO / "src" / "effnet"
ARCHITECTURE = REPO / "ARCHITECTURE.md"
MAX_LINES = 400

# Imports that climb a layer on purpose, each with its reason. Keep this list short: a new entry is a sign
# that a concept has no home yet (design.md).
ALLOWED_CLIMBS: dict[tuple[str, str], str] = {
    # WeightsRecord.transforms() is the torchvision-style convenience that returns the record's own
    # preprocessing as a callable; it imports lazily, inside the method, so the weights layer loads without it.
    ("effnet.weights.record", "effnet.transforms"): "WeightsRecord.transforms(), lazy",
}


def _layer_table() -> list[tuple[int, str, list[str]]]:
    """The ```layers block of ARCHITECTURE.md: ``N name: module-prefix ...`` lines, lowest layer first."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    match = re.search(r"```layers\n(.*?)```", text, re.S)
    if match is None:
        raise AssertionError("ARCHITECTURE.md has no ```layers block (the one place the layer order is written)")
    table = []
    for line in match.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, _, names = line.partition(":")
        number, name = head.split()
        table.append((int(number), name, names.split()))
    return table


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _layer_of(module: str, table: list[tuple[int, str, list[str]]]) -> list[int]:
    """Every layer whose table entry names ``module``: ``effnet.X`` or anything below the package ``effnet.X``;
    ``__init__`` and ``__main__`` name the package's own entry modules."""
    rest = module.removeprefix("effnet").lstrip(".") or "__init__"
    found = []
    for number, _name, names in table:
        for name in names:
            if rest == name or rest.startswith(name + "."):
                found.append(number)
    return found


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported effnet module, line) for every import in the file: top level, lazy and TYPE_CHECKING alike.
    ``from effnet.x import y`` counts as an import of ``effnet.x.y`` when that is a module."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "effnet" or target.startswith("effnet."):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.append((sub if sub in modules else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("effnet")]
    return out


def test_every_module_sits_in_exactly_one_layer() -> None:
    table = _layer_table()
    numbers = [number for number, _, _ in table]
    assert numbers == sorted(set(numbers)), f"layer numbers must rise, each once: {numbers}"
    unplaced = {m: _layer_of(m, table) for m in _modules()}
    bad = {m: layers for m, layers in unplaced.items() if len(layers) != 1}
    assert not bad, (
        "each module must be named by exactly one line of ARCHITECTURE.md's layers table "
        f"(module: the layers naming it): {bad}"
    )


def test_imports_only_look_down() -> None:
    table = _layer_table()
    modules = _modules()
    climbs = []
    for module, path in modules.items():
        placed = _layer_of(module, table)
        if len(placed) != 1:  # test_every_module_sits_in_exactly_one_layer names it
            continue
        own = placed[0]
        for target, line in _imports(module, path, modules):
            # `from effnet.x import name` may name a submodule or a symbol: judge the deepest module that exists.
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            layers = _layer_of(target, table)
            if layers and layers[0] > own and (module, target) not in ALLOWED_CLIMBS:
                climbs.append(f"{path.relative_to(REPO)}:{line} {module} (layer {own}) -> {target} (layer {layers[0]})")
    assert not climbs, "imports that climb a layer (move the concept down, or allow-list it with a reason):\n" + (
        "\n".join(climbs)
    )


def test_allow_list_is_still_needed() -> None:
    modules = _modules()
    used = {(m, t) for m, p in modules.items() for t, _ in _imports(m, p, modules)}
    stale = [pair for pair in ALLOWED_CLIMBS if pair not in used]
    assert not stale, f"allow-listed climbs that no longer occur: drop them from ALLOWED_CLIMBS: {stale}"


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(REPO)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them along their concerns): {big}"


def test_library_code_raises_instead_of_asserting() -> None:
    found = [
        f"{p.relative_to(REPO)}:{node.lineno}"
        for p in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert not found, f"assert in library code (python -O drops it; raise with context instead): {found}"


def test_code_map_names_only_what_exists() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:src|tests|benchmarks|docs|scripts)/[\w./-]*)`", text))
    assert named, "ARCHITECTURE.md names no paths: the code map is missing"
    missing = sorted(p for p in named if not (REPO / p.rstrip("/")).exists())
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


def test_code_map_names_every_package_and_top_level_module() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    packages = [p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    modules = [p.stem for p in SRC.glob("*.py") if p.stem not in ("__init__", "__main__")]
    tops = sorted(packages + modules)
    missing = [t for t in tops if not re.search(rf"`src/effnet/{re.escape(t)}(/|\.py)?`", text)]
    assert not missing, f"ARCHITECTURE.md's code map does not name these (add a line saying what each owns): {missing}"
