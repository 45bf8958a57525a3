"""docs/architecture.md stays true to the tree: every source path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "voxelflow"
DOC = ROOT / "docs" / "architecture.md"
# `name.py`, `pkg/`, `pkg/name.py`, `pkg/<name>/` ... inside backticks or after an arrow
_PATH = re.compile(r"(?<![\w./<>-])((?:[a-z_]+|<name>)/)*(?:[a-z_]+\.py|[a-z_]+/)(?![\w])")


def _named_paths(text: str) -> set[str]:
    paths: set[str] = set()
    fences = re.findall(r"```.*?```", text, flags=re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = re.findall(r"`([^`]+)`", prose)
    spans += [p for f in fences for p in re.findall(r"([a-z_/<>]+\.py)", f)]
    for span in spans:
        for match in _PATH.finditer(span):
            paths.add(match.group(0))
    return paths


def _exists(path: str, context: Path) -> bool:
    if "<name>" in path or "<command>" in path:
        template = path.replace("<name>", "*").replace("<command>", "*")
        return any(any(base.glob(template.rstrip("/"))) for base in (PACKAGE, context, ROOT))
    candidates = [PACKAGE / path, ROOT / path, ROOT / "docs" / path, ROOT / "tests" / path]
    candidates += [d / path for d in (context,)]
    return any(c.exists() for c in candidates)


def test_every_path_in_architecture_doc_exists() -> None:
    text = DOC.read_text()
    named = _named_paths(text)
    assert len(named) > 40, "the path pattern no longer finds the doc's paths"
    missing = set()
    current_package = PACKAGE
    for line in text.splitlines():
        head = re.match(r"- `([a-z_]+)/`", line)
        if head:
            current_package = PACKAGE / head.group(1)
        for path in _named_paths(line):
            if not _exists(path, current_package) and not _exists(path, PACKAGE / "applications"):
                missing.add(path)
    assert not missing, f"docs/architecture.md names paths that do not exist: {sorted(missing)}"


def test_checker_finds_a_missing_path(tmp_path: Path) -> None:
    assert not _exists("engine/inferer.py", PACKAGE / "engine")
    assert _exists("trainer.py", PACKAGE / "engine")
