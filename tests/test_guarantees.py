"""Every test that docs/guarantees.md names exists (so each guarantee stays backed by a test)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_named_test_exists() -> None:
    text = (ROOT / "docs" / "guarantees.md").read_text()
    references = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", text)
    assert len(references) >= 10
    missing = [f"{file}::{name}" for file, name in references
               if not (ROOT / file).is_file() or name not in _test_names(ROOT / file)]
    assert missing == []


def test_the_page_is_in_the_site_navigation() -> None:
    assert "guarantees.md" in (ROOT / "mkdocs.yml").read_text()
