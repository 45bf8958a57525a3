"""Every ``>>>`` example in the package's docstrings runs as a doctest (one test per module).

Examples that need files or training are marked ``# doctest: +SKIP`` in their docstring; the
others must run and print what they show.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import voxelflow

PACKAGE = Path(voxelflow.__file__).parent
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def modules_with_examples() -> list[str]:
    """Dotted names of the modules whose source has a ``>>>`` example (``__main__`` excluded)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__" or ">>>" not in path.read_text(encoding="utf-8"):
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _source(name: str) -> str:
    relative = Path(*name.split("."))
    package = PACKAGE.parent / relative / "__init__.py"
    path = package if package.is_file() else (PACKAGE.parent / relative).with_suffix(".py")
    return path.read_text(encoding="utf-8")


def run_doctests(name: str) -> doctest.TestResults:
    """Run the examples of module ``name``; failures are reported in the assertion message."""
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in finder.find(module, name, globs=dict(vars(module))):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
    return results


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name: str) -> None:
    run_doctests(name)


def test_most_examples_are_run_not_skipped() -> None:
    """SKIP is for examples that need files or training; the rest run."""
    sources = {name: _source(name) for name in modules_with_examples()}
    examples = sum(text.count(">>> ") for text in sources.values())
    skipped = sum(text.count("doctest: +SKIP") for text in sources.values())
    assert examples > 100
    assert skipped < examples / 3, f"{skipped} of {examples} examples skipped"


def test_a_wrong_example_fails() -> None:
    """The harness itself: a docstring that shows a wrong value is a failure."""

    def wrong() -> None:
        """
        >>> 1 + 1
        3
        """

    test = doctest.DocTestFinder().find(wrong, "wrong", globs={})[0]
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    runner.run(test, out=lambda text: None)
    assert runner.summarize(verbose=False).failed == 1
