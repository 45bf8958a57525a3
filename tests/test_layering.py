"""Imports flow one way (docs/architecture.md, "Layers"): a layer imports only lower or equal ranks.

Every import is checked: module level, inside functions and methods, under ``try``, absolute and
relative (``from ..engine import x`` is resolved against the importing module's package).
Two exceptions, both listed below and printed by ``test_upward_imports_are_listed``:

- an upward import under ``if TYPE_CHECKING:`` (annotations only, never executed);
- ``config/build.py`` imports any layer lazily: it is the one place that turns names into objects.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "voxelflow"

# Rank of each top-level module or package of voxelflow; see docs/architecture.md.
RANKS: dict[str, int] = {
    "types": 0, "errors": 0, "registry": 0, "synthetic": 0, "version": 0,
    "networks": 1, "losses": 1, "optim": 1,
    "io": 2, "metrics": 2,
    "config": 3, "transforms": 3,
    "data": 4,
    "sampling": 5,
    "applications": 6,
    "engine": 7,
    "zoo": 8, "niftynet": 8, "planning": 8, "cv": 8,
    "demo": 9, "cli": 9,
    "api": 10,
    # The package's own entry points sit above everything.
    "__init__": 11, "__main__": 11,
}
# Modules that may import any layer inside functions (never at module level): the build path,
# which turns names into objects (build.py) and checks a whole config through it (check.py).
LAZY_IMPORTS_ALLOWED = {"config/build.py", "config/check.py"}
# Upward imports not yet inverted, each with its reason (none left: the two there were, config →
# niftynet and engine → zoo, go through entry points); the test fails when a new one appears.
KNOWN_UPWARD: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    """One ``import`` statement's target inside the package, with where it was written."""

    source: str  # path relative to the package root, e.g. "engine/run.py"
    line: int
    target: str  # dotted module, e.g. "voxelflow.zoo.pack"
    module_level: bool
    type_checking: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _package_of(relative: Path, root_name: str) -> list[str]:
    """Dotted package of a module file: ``engine/run.py`` → ["voxelflow", "engine"]."""
    parts = [root_name, *relative.parts[:-1]]
    return parts


def _resolve(node: ast.ImportFrom, package: list[str]) -> list[str]:
    """Absolute module names an ``ImportFrom`` reaches (a bare ``from . import x`` reaches ``x``)."""
    if node.level == 0:
        return [node.module] if node.module else []
    base = package[: len(package) - (node.level - 1)]
    if node.module:
        return [".".join([*base, node.module])]
    return [".".join([*base, alias.name]) for alias in node.names]


def collect_imports(root: Path) -> list[Import]:
    """Every import of ``root.name`` modules written anywhere in the package at ``root``."""
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        package = _package_of(relative, root.name)
        tree = ast.parse(path.read_text(), filename=str(path))
        _walk(tree, relative.as_posix(), package, root.name, found, depth=0, type_checking=False)
    return found


def _walk(
    node: ast.AST, source: str, package: list[str], root_name: str, found: list[Import],
    *, depth: int, type_checking: bool,
) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            names = (
                [alias.name for alias in child.names] if isinstance(child, ast.Import)
                else _resolve(child, package)
            )
            for name in names:
                if name == root_name or name.startswith(root_name + "."):
                    found.append(Import(source, child.lineno, name, depth == 0, type_checking))
            continue
        inner_depth = depth + isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        inner_tc = type_checking or (isinstance(child, ast.If) and _is_type_checking(child.test))
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                _walk_one(stmt, source, package, root_name, found, inner_depth, True)
            for stmt in child.orelse:
                _walk_one(stmt, source, package, root_name, found, inner_depth, type_checking)
            continue
        _walk(child, source, package, root_name, found, depth=inner_depth, type_checking=inner_tc)


def _walk_one(
    stmt: ast.stmt, source: str, package: list[str], root_name: str, found: list[Import],
    depth: int, type_checking: bool,
) -> None:
    wrapper = ast.Module(body=[stmt], type_ignores=[])
    _walk(wrapper, source, package, root_name, found, depth=depth, type_checking=type_checking)


def _layer(dotted_or_path: str) -> str:
    """Top-level layer: "engine/run.py" → "engine"; "voxelflow.zoo.pack" → "zoo"."""
    if "/" in dotted_or_path or dotted_or_path.endswith(".py"):
        return dotted_or_path.split("/")[0].removesuffix(".py")
    parts = dotted_or_path.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(
    imports: list[Import], ranks: dict[str, int], lazy_allowed: set[str],
) -> tuple[list[Import], list[Import]]:
    """Split upward imports into (violations, allowed-under-TYPE_CHECKING-or-lazy)."""
    violations: list[Import] = []
    allowed: list[Import] = []
    for imp in imports:
        source_rank = ranks[_layer(imp.source)]
        target_rank = ranks[_layer(imp.target)]
        if target_rank <= source_rank:
            continue
        exempt = imp.type_checking or (imp.source in lazy_allowed and not imp.module_level)
        (allowed if exempt else violations).append(imp)
    return violations, allowed


def _describe(imp: Import) -> str:
    where = "module level" if imp.module_level else "inside a function"
    tc = " under TYPE_CHECKING" if imp.type_checking else ""
    return (
        f"{imp.source}:{imp.line} (layer {_layer(imp.source)}, rank {RANKS[_layer(imp.source)]}) "
        f"imports {imp.target} (rank {RANKS[_layer(imp.target)]}) {where}{tc}"
    )


def test_every_layer_has_a_rank() -> None:
    layers = {_layer(path.relative_to(PACKAGE).as_posix()) for path in PACKAGE.rglob("*.py")}
    missing = sorted(layers - RANKS.keys())
    assert not missing, f"layers without a rank (add them to RANKS and docs/architecture.md): {missing}"


def test_imports_flow_one_way() -> None:
    violations, _ = upward_imports(collect_imports(PACKAGE), RANKS, LAZY_IMPORTS_ALLOWED)
    known = {(imp.source, imp.target) for imp in violations} & KNOWN_UPWARD
    assert known == KNOWN_UPWARD, f"fixed, remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - known)}"
    violations = [imp for imp in violations if (imp.source, imp.target) not in KNOWN_UPWARD]
    assert not violations, (
        f"{len(violations)} upward imports (a layer imports only lower or equal ranks):\n"
        + "\n".join(_describe(imp) for imp in violations)
    )


def test_upward_imports_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """The allowed upward imports (TYPE_CHECKING, lazy in config/build.py), printed for review."""
    _, allowed = upward_imports(collect_imports(PACKAGE), RANKS, LAZY_IMPORTS_ALLOWED)
    with capsys.disabled():
        print(f"\n{len(allowed)} allowed upward imports:")
        for imp in allowed:
            print("  " + _describe(imp))
    assert all(imp.type_checking or imp.source in LAZY_IMPORTS_ALLOWED for imp in allowed)


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "voxelflow"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_catches_function_level_relative_and_try_imports(tmp_path: Path) -> None:
    root = _fake_package(tmp_path, {
        "__init__.py": "",
        "io/__init__.py": "",
        "io/read.py": (
            "def f():\n    from voxelflow.engine import run\n"  # function level, absolute
            "def g():\n    from ..engine.run import x\n"  # function level, relative
            "try:\n    from ..zoo import pack\nexcept ImportError:\n    pass\n"  # under try
            "from . import write\n"  # same layer: fine
            "from ..types import Shape\n"  # lower layer: fine
        ),
        "io/write.py": "",
        "engine/__init__.py": "",
        "engine/run.py": "x = 1\n",
        "zoo/__init__.py": "",
        "types.py": "",
    })
    violations, allowed = upward_imports(collect_imports(root), RANKS, set())
    assert sorted((imp.line, imp.target) for imp in violations) == [
        (2, "voxelflow.engine"), (4, "voxelflow.engine.run"), (6, "voxelflow.zoo"),
    ]
    assert allowed == []


def test_checker_allows_type_checking_and_lazy_build_imports(tmp_path: Path) -> None:
    root = _fake_package(tmp_path, {
        "io/read.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from voxelflow.engine.run import Run\n"
            "else:\n    from voxelflow.zoo import pack\n"  # the else branch runs: a violation
        ),
        "config/build.py": (
            "def build():\n    from voxelflow.api import Experiment\n"  # lazy: allowed
        ),
        "config/load.py": "from voxelflow.api import Experiment\n",  # module level: violation
    })
    violations, allowed = upward_imports(collect_imports(root), RANKS, {"config/build.py"})
    assert [(imp.source, imp.target) for imp in violations] == [
        ("config/load.py", "voxelflow.api"), ("io/read.py", "voxelflow.zoo"),
    ]
    assert sorted((imp.source, imp.target) for imp in allowed) == [
        ("config/build.py", "voxelflow.api"), ("io/read.py", "voxelflow.engine.run"),
    ]
