"""The ``voxelflow`` command line.

Each sub-command lives in its own module ``voxelflow.cli.cmd_<name>`` exposing
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``. Exit codes:
0 success, 2 usage or configuration error, 1 runtime failure. voxelflow's own errors print
as one line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from voxelflow.errors import ConfigError, VoxelflowError
from voxelflow.version import __version__

#: sub-command name → module; the order is the order shown by ``--help``.
COMMANDS = {
    "demo": "voxelflow.cli.cmd_demo",
    "plan": "voxelflow.cli.cmd_plan",
    "train": "voxelflow.cli.cmd_train",
    "infer": "voxelflow.cli.cmd_infer",
    "evaluate": "voxelflow.cli.cmd_evaluate",
    "cv": "voxelflow.cli.cmd_cv",
    "info": "voxelflow.cli.cmd_info",
    "view": "voxelflow.cli.cmd_view",
    "config": "voxelflow.cli.cmd_config",
    "list": "voxelflow.cli.cmd_list",
    "profile": "voxelflow.cli.cmd_profile",
    "zoo": "voxelflow.cli.cmd_zoo",
    "export": "voxelflow.cli.cmd_export",
}

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="voxelflow",
        description="Deep learning on medical images: train, infer, evaluate and share models.",
    )
    parser.add_argument("--version", action="version", version=f"voxelflow {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        # a listed command whose module is missing is a packaging error, never skipped silently
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.debug else "voxelflow: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"voxelflow: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VoxelflowError as exc:
        if args.debug:
            raise
        print(f"voxelflow: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except OSError as exc:  # a full or read-only disk met by a write no writer wrapped
        from voxelflow.io.disk import disk_error_message

        message = disk_error_message(exc)
        if args.debug or message is None:
            raise
        print(f"voxelflow: error: {message}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print("voxelflow: interrupted", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
