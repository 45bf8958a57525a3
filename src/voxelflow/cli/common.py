"""Arguments and helpers shared by the CLI sub-commands."""

from __future__ import annotations

import argparse


def add_config_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add ``-c/--config``, repeatable ``--set key.path=value`` and ``--run-dir``."""
    parser.add_argument(
        "-c", "--config", required=required, help="experiment YAML (or NiftyNet .ini)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.max_iterations=100 (repeatable)",
    )
    parser.add_argument(
        "--run-dir", default=None, help="run folder (overrides the config's system.run_dir)"
    )
