"""``voxelflow config``: schema, show, validate and convert experiment configurations.

* ``voxelflow config schema`` prints the JSON schema of the experiment (editor autocompletion).
* ``voxelflow config show -c exp.yaml [--set k=v] [--defaults]`` prints the resolved YAML,
  defaults included; ``--defaults`` also fills in every component's options (network, loss,
  optimiser, scheduler, sampler, augmentations, normalisers) with their defaults.
* ``voxelflow config validate -c exp.yaml`` checks a file and reports every problem.
* ``voxelflow config convert niftynet.ini > exp.yaml`` converts a NiftyNet INI; the per-key
  report of what did not map goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from voxelflow.cli.common import add_config_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``config`` and its sub-commands to the CLI."""
    parser = subparsers.add_parser(
        "config",
        help="show, validate or convert experiment configurations",
        description=__doc__.split("\n\n")[0],
    )
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    schema = actions.add_parser("schema", help="print the JSON schema of experiment files")
    schema.add_argument("--indent", type=int, default=2, help="JSON indentation")
    schema.set_defaults(config_func=run_schema)
    show = actions.add_parser("show", help="print the resolved configuration (defaults included)")
    add_config_args(show)
    show.add_argument(
        "--defaults",
        action="store_true",
        help="also write every component's options with their defaults (network, loss, ...)",
    )
    show.set_defaults(config_func=run_show)
    validate = actions.add_parser("validate", help="check a configuration, listing every problem")
    add_config_args(validate)
    validate.add_argument(
        "--no-data",
        action="store_true",
        help="check the config only, not the dataset table, its files and their headers",
    )
    validate.set_defaults(config_func=run_validate)
    convert = actions.add_parser(
        "convert", help="convert a NiftyNet .ini to YAML (report on stderr)"
    )
    convert.add_argument("ini", help="NiftyNet configuration file")
    convert.add_argument(
        "-o", "--output", default=None, help="write the YAML here instead of stdout"
    )
    convert.add_argument(
        "--all",
        action="store_true",
        help="report every key, not only those that did not map exactly",
    )
    convert.set_defaults(config_func=run_convert)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action (``schema``, ``show``, ``validate`` or ``convert``)."""
    return int(args.config_func(args))


def run_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema of :class:`~voxelflow.config.schema.ExperimentConfig`."""
    from voxelflow.config.schema import ExperimentConfig

    sys.stdout.write(json.dumps(ExperimentConfig.model_json_schema(), indent=args.indent) + "\n")
    return 0


def _load(args: argparse.Namespace) -> Any:
    from voxelflow.config.load import load_experiment

    overrides = list(args.overrides)
    if getattr(args, "run_dir", None):
        overrides.append(f"system.run_dir={args.run_dir}")
    return load_experiment(args.config, overrides)


def run_show(args: argparse.Namespace) -> int:
    """Print the resolved configuration as YAML (``--defaults``: components' defaults too)."""
    from voxelflow.config.load import experiment_to_yaml

    experiment = _load(args)
    if not getattr(args, "defaults", False):
        sys.stdout.write(experiment_to_yaml(experiment))
        return 0
    import yaml

    from voxelflow.config.options import with_component_defaults

    text = yaml.safe_dump(with_component_defaults(experiment), sort_keys=False, allow_unicode=True)
    sys.stdout.write(text)
    return 0


def run_validate(args: argparse.Namespace) -> int:
    """Validate; errors are raised as ConfigError (exit code 2, one message listing all)."""
    from voxelflow.config.check import check_experiment, raise_if_problems

    experiment = _load(args)
    raise_if_problems(check_experiment(experiment, data=not args.no_data), source=str(args.config))
    sys.stdout.write(f"{args.config}: valid ({experiment.application})\n")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert a NiftyNet INI: YAML on stdout (or ``-o``), the report on stderr."""
    from pathlib import Path

    from voxelflow.config.load import dump_experiment, experiment_to_yaml
    from voxelflow.niftynet.conversion import convert_niftynet_ini

    experiment, notes = convert_niftynet_ini(args.ini)
    shown = notes if args.all else [n for n in notes if n.status != "mapped"]
    for note in shown:
        sys.stderr.write(f"{note}\n")
    counts = {
        status: sum(n.status == status for n in notes)
        for status in dict.fromkeys(n.status for n in notes)
    }
    sys.stderr.write(
        f"{args.ini}: {len(notes)} keys: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + "\n"
    )
    if args.output:
        dump_experiment(experiment, Path(args.output))
    else:
        sys.stdout.write(experiment_to_yaml(experiment))
    return 0
