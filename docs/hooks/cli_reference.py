"""MkDocs hook: the command-line reference, generated from the ``voxelflow`` argument parsers.

``<!-- voxelflow:cli-reference -->`` becomes one section per sub-command (and per action of
commands such as ``voxelflow config`` and ``voxelflow zoo``) holding its ``--help`` text, so
the page lists exactly the commands and options of the installed version. Run without MkDocs:
``python docs/hooks/cli_reference.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

MARKER = re.compile(r"<!--\s*voxelflow:cli-reference\s*-->")
HELP_WIDTH = "96"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Name → parser of the sub-commands of ``parser`` (empty when it has none)."""
    for action in parser._actions:  # argparse offers no public accessor for sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def walk(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, str]]:
    """``(command line, help text)`` of every sub-command, depth first."""
    for name, child in subcommands(parser).items():
        command = f"{prefix} {name}"
        yield command, child.format_help()
        yield from walk(child, command)


def cli_reference_markdown() -> str:
    """One ``###`` section per command with its help text, in the order of ``--help``."""
    from voxelflow.cli.main import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps help to the terminal width
    try:
        parser = build_parser()
        parts = [f"```text\n{parser.format_help().rstrip()}\n```"]
        for command, text in walk(parser, "voxelflow"):
            parts.append(f"### {command}\n\n```text\n{text.rstrip()}\n```")
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n\n".join(parts) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook event: expand the command-line reference marker."""
    if not MARKER.search(markdown):
        return markdown
    return MARKER.sub(lambda _match: cli_reference_markdown(), markdown)


if __name__ == "__main__":
    sys.stdout.write(cli_reference_markdown())
