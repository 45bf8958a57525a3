"""``voxelflow zoo list|info|install|remove|pack``: share trained models as zoo entries.

The zoo home is ``$VOXELFLOW_ZOO_HOME`` (default ``~/.voxelflow/zoo``); ``--home`` overrides it.

Example:
    $ voxelflow zoo pack runs/brain --out brain.zip --card card.yaml
    $ voxelflow zoo install brain.zip
    $ voxelflow zoo list
    $ voxelflow infer --model brain --input images/ --out predictions/
"""

from __future__ import annotations

import argparse
import sys

import yaml

from voxelflow.errors import ConfigError
from voxelflow.zoo.entry import CARD_NAME
from voxelflow.zoo.store import (
    install,
    installed_entries,
    read_index,
    remove,
    resolve_model,
    zoo_home,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``zoo`` sub-command and its actions."""
    parser = subparsers.add_parser(
        "zoo",
        help="list, install, remove, describe and pack model zoo entries",
        description="The local model zoo (home: $VOXELFLOW_ZOO_HOME, default ~/.voxelflow/zoo).",
    )
    parser.add_argument("--home", default=None, help="zoo home folder (overrides the env variable)")
    actions = parser.add_subparsers(dest="zoo_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="installed entries and the local index").set_defaults(
        func=run_list
    )
    info = actions.add_parser("info", help="show an installed entry's model card")
    info.add_argument("name", help="entry name or entry folder")
    info.set_defaults(func=run_info)
    add = actions.add_parser(
        "install", help="install from a folder, .zip/.tar.gz, URL or index name"
    )
    add.add_argument("source", metavar="PATH_OR_URL")
    add.add_argument("--force", action="store_true", help="replace an installed entry of that name")
    add.set_defaults(func=run_install)
    drop = actions.add_parser("remove", help="delete an installed entry")
    drop.add_argument("name")
    drop.set_defaults(func=run_remove)
    _add_pack_parser(actions)
    parser.set_defaults(func=run_list)
    return parser


def _add_pack_parser(actions: argparse._SubParsersAction) -> None:
    pack = actions.add_parser("pack", help="build an entry from a run folder (best checkpoint)")
    pack.add_argument("run_dir", metavar="RUN_DIR")
    pack.add_argument("--out", required=True, help="entry.zip, entry.tar.gz or a new folder")
    pack.add_argument("--name", default=None, help="entry name (default: the run folder's name)")
    pack.add_argument("--version", default="1.0.0", help="entry version")
    pack.add_argument(
        "--card", default=None, help="YAML with card fields (description, license ...)"
    )
    pack.add_argument("--checkpoint", default="best", choices=("best", "last"))
    pack.add_argument("--weights-format", default="pt", choices=("pt", "safetensors"))
    pack.add_argument("--precision", default="float32", choices=("float32", "float16"),
                      help="store floating-point weights in float16: half the size")
    pack.add_argument("--plugin", action="append", default=[], help="plugin .py file (repeatable)")
    pack.add_argument(
        "--folds", default=None, metavar="all|K,K,...",
        help="RUN_DIR holds fold runs (voxelflow train --fold all): pack them as one ensemble "
        "entry (infer --model runs it as infer --folds does)",
    )  # fmt: skip
    pack.set_defaults(func=run_pack)


def run_list(args: argparse.Namespace) -> int:
    """Print installed entries, then entries of the local index that are not installed."""
    home = zoo_home(args.home)
    models = installed_entries(home=home)
    lines = [f"zoo home: {home}", f"installed ({len(models)}):"]
    lines += [
        f"  {m.card.name:<24} {m.card.version:<10} {m.card.application:<15} {m.card.description[:60]}"
        for m in models
    ]
    installed = {m.card.name for m in models}
    available = [r for r in read_index(home) if r.get("name") not in installed]
    if available:
        lines.append(f"available in {home / 'index.json'} ({len(available)}):")
        lines += [
            f"  {r.get('name', '?'):<24} {r.get('version', ''):<10} {r.get('description', '')[:60]}"
            for r in available
        ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the (verified) model card and the entry's location."""
    model = resolve_model(args.name, home=args.home)
    card = yaml.safe_dump(model.card.model_dump(), sort_keys=False, allow_unicode=True)
    sys.stdout.write(f"# {model.path / CARD_NAME} (checksums verified)\n{card}")
    return 0


def run_install(args: argparse.Namespace) -> int:
    """Install and verify an entry."""
    model = install(args.source, home=args.home, force=args.force)
    sys.stdout.write(f"installed {model.card.name} {model.card.version} in {model.path}\n")
    if model.plugin_paths:
        sys.stdout.write(
            "note: this entry ships plugin code; it is only imported with --trust-code\n"
        )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Remove an installed entry."""
    path = remove(args.name, home=args.home)
    sys.stdout.write(f"removed {args.name} ({path})\n")
    return 0


def run_pack(args: argparse.Namespace) -> int:
    """Pack a run folder as an entry."""
    from voxelflow.zoo.pack import pack_run

    card = None
    if args.card:
        with open(args.card, encoding="utf-8") as stream:
            card = yaml.safe_load(stream) or {}
        if not isinstance(card, dict):
            raise ConfigError(
                f"{args.card}: expected a mapping of card fields, got {type(card).__name__}"
            )
    out = pack_run(
        args.run_dir,
        out=args.out,
        name=args.name,
        version=args.version,
        card=card,
        which=args.checkpoint,
        weights_format=args.weights_format,
        precision=args.precision,
        plugins=args.plugin,
        folds=args.folds,
    )
    what = f" (ensemble of folds {args.folds})" if args.folds else ""
    sys.stdout.write(f"packed {args.run_dir}{what} as {out}\n")
    return 0
