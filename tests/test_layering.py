"""Imports flow one way (ARCHITECTURE.md): a lower layer never imports a higher one at import time.

Function-level (lazy) imports are allowed: ``config/build.py`` is the one place that turns names
into objects and imports registries from every layer lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "voxelflow"

# Layer rank of each top-level module or package; an import must go to a rank <= its own.
BASE = {"types": 0, "errors": 0, "registry": 0, "synthetic": 0, "__init__": 10, "__main__": 10}
LAYERS = {
    **BASE,
    "networks": 1, "losses": 1, "metrics": 2, "io": 2, "config": 3, "transforms": 3,
    "data": 4, "sampling": 5, "applications": 6, "engine": 7, "zoo": 8, "planning": 8, "cv": 8, "niftynet": 8, "demo": 9, "cli": 9, "api": 10,
}
# metrics may use io (evaluate action); networks/losses only the base trio.
ALLOWED_EXTRA = {("metrics", "io")}


def _top_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in tree.body:  # module level only: lazy imports inside functions are allowed
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n.split(".")[1] for n in names if n.startswith("voxelflow.") and n.count(".") >= 1]


def _layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path: Path) -> None:
    layer = _layer_of(path)
    rank = LAYERS.get(layer)
    assert rank is not None, f"{layer} has no layer rank: add it to LAYERS in this test"
    for target in _top_level_imports(path):
        target_rank = LAYERS.get(target, 0)
        if layer == target or (layer, target) in ALLOWED_EXTRA:
            continue
        assert target_rank < rank or (target_rank == 0), (
            f"{path.relative_to(PACKAGE)} (layer {layer}, rank {rank}) imports voxelflow.{target} "
            f"(rank {target_rank}) at module level: imports must flow downwards"
        )
