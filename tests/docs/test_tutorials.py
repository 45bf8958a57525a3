"""The tutorials of docs/tutorials/ run as written, each in its own temporary folder.

A tutorial is a Markdown page; its code blocks run in order:

- ```` ```python ```` blocks run in one namespace shared by the page (like notebook cells);
- ```` ```bash ```` blocks run line by line (``voxelflow ...`` through
  :func:`voxelflow.cli.main.main` in this process); every command must exit with 0;
- a block preceded by ``<!-- file: NAME -->`` is written to ``NAME`` instead of being run;
- ```` ```text ```` blocks and blocks preceded by ``<!-- skip -->`` are shown, not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
BLOCK = re.compile(r"(?:<!-- (file: \S+|skip) -->\n)?```(\w+)\n(.*?)```", re.DOTALL)


@dataclass
class Block:
    """One fenced code block of a tutorial."""

    language: str
    code: str
    file: str | None = None
    skip: bool = False


def blocks(page: Path) -> list[Block]:
    """The code blocks of a tutorial page, in order."""
    found = []
    for marker, language, code in BLOCK.findall(page.read_text(encoding="utf-8")):
        file = marker.removeprefix("file: ") if marker.startswith("file: ") else None
        found.append(Block(language, code, file, marker == "skip"))
    return found


def run_command(line: str, cwd: Path) -> None:
    """One shell line, which must exit with 0; ``voxelflow ...`` runs in this process (fast)."""
    words = shlex.split(line.replace("$PWD", str(cwd)))
    exported = words[:1] == ["export"]
    words = words[1:] if exported else words
    while words and ENV_ASSIGNMENT.match(words[0]):  # ``NAME=value command`` or ``export``
        name, value = words.pop(0).split("=", 1)
        if name != "PYTHONPATH":  # the working folder is already importable (see the fixture)
            os.environ[name] = value
    if not words:
        return
    if words[0] == "voxelflow":
        from voxelflow.cli.main import main

        assert main(words[1:]) == 0, line
        return
    result = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def run_tutorial(page: Path, cwd: Path) -> dict[str, object]:
    """Run every block of ``page`` in ``cwd``; returns the Python namespace."""
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    environment = dict(os.environ)
    try:
        _run_blocks(page, cwd, namespace)
    finally:  # variables exported by the tutorial do not leak into other tests
        os.environ.clear()
        os.environ.update(environment)
    return namespace


def _run_blocks(page: Path, cwd: Path, namespace: dict[str, object]) -> None:
    for index, block in enumerate(blocks(page)):
        if block.skip or block.language == "text":
            continue
        if block.file is not None:
            (cwd / block.file).parent.mkdir(parents=True, exist_ok=True)
            (cwd / block.file).write_text(block.code, encoding="utf-8")
        elif block.language == "python":
            exec(compile(block.code, f"{page.name}[block {index}]", "exec"), namespace)
        elif block.language == "bash":
            for line in block.code.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    run_command(line, cwd)
        elif block.language != "yaml":
            raise AssertionError(
                f"{page.name}: block {index} has an unknown language {block.language!r}"
            )


@pytest.fixture
def tutorial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, importable (plugins written by a tutorial) and isolated."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / ".zoo"))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    modules = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - modules:  # plugin modules written by the tutorial
        if (
            getattr(sys.modules[name], "__file__", "")
            and str(tmp_path) in sys.modules[name].__file__
        ):
            del sys.modules[name]


def test_every_tutorial_is_tested_and_in_the_nav() -> None:
    pages = {page.name for page in TUTORIALS.glob("*.md")}
    assert pages == {*TESTED, "index.md"}
    nav = (TUTORIALS.parents[1] / "mkdocs.yml").read_text(encoding="utf-8")
    for page in pages:
        assert f"tutorials/{page}" in nav, page


def test_blocks_are_parsed() -> None:
    parsed = blocks(TUTORIALS / "segmentation-folder.md")
    assert [b.file for b in parsed if b.file] == ["experiment.yaml"]
    assert {b.language for b in parsed} == {"python", "bash", "yaml"}


TESTED = ["plan.md", "segmentation-folder.md", "python-api.md", "custom-loss.md", "fine-tuning.md"]


@pytest.mark.slow
@pytest.mark.parametrize("page", TESTED)
def test_tutorial_runs(page: str, tutorial_folder: Path) -> None:
    run_tutorial(TUTORIALS / page, tutorial_folder)
