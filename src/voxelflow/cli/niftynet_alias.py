"""NiftyNet-style console scripts: ``net_segment train|inference|evaluation -c config.ini``.

The INI file is converted by :mod:`voxelflow.config.niftynet` (every key that did not map
exactly is logged) and the action is dispatched to ``voxelflow train``, ``voxelflow infer`` or
``voxelflow evaluate``. NiftyNet command-line overrides (``--max_iter 10``, ``--lr=0.001``)
are applied to the INI before conversion; ``--set key.path=value`` overrides apply to the
converted experiment; any other argument is passed on to the voxelflow command. A YAML
config is passed through unchanged.

Example:
    $ net_segment train -c config/default_multimodal_segmentation.ini --max_iter 100
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("voxelflow.niftynet")

ACTIONS = {
    "train": "train",
    "training": "train",
    "inference": "infer",
    "infer": "infer",
    "evaluation": "evaluate",
    "evaluate": "evaluate",
}
USAGE = (
    "usage: {prog} train|inference|evaluation -c CONFIG.ini|CONFIG.yaml "
    "[--set key.path=value] [--niftynet_key value] [voxelflow options]"
)


def split_arguments(argv: Sequence[str]) -> tuple[str, str, list[str], dict[str, str], list[str]]:
    """Split ``argv`` into (action, config, --set overrides, NiftyNet overrides, passed-on args).

    Raises:
        ConfigError: no action, an unknown action, or no ``-c``.
    """
    from voxelflow.config.niftynet import APPLICATION_KEYS, SYSTEM_SECTIONS
    from voxelflow.errors import ConfigError

    niftynet_keys = {k for table in SYSTEM_SECTIONS.values() for k in table} | APPLICATION_KEYS
    args = list(argv)
    if not args or args[0] not in ACTIONS:
        got = args[0] if args else "nothing"
        raise ConfigError(f"expected an action train, inference or evaluation, got {got!r}")
    action, rest = ACTIONS[args[0]], args[1:]
    config, sets, overrides, passed = None, [], {}, []
    index = 0
    while index < len(rest):
        item = rest[index]
        key, has_value, inline = item.lstrip("-").partition("=")
        if item in ("-c", "--conf", "--config") and index + 1 < len(rest):
            config, index = rest[index + 1], index + 2
        elif item == "--set" and index + 1 < len(rest):
            sets.append(rest[index + 1])
            index += 2
        elif item.startswith("--") and key in niftynet_keys:
            if has_value:
                overrides[key], index = inline, index + 1
            elif index + 1 < len(rest):
                overrides[key], index = rest[index + 1], index + 2
            else:
                raise ConfigError(f"--{key}: expected a value")
        else:
            passed.append(item)
            index += 1
    if config is None:
        raise ConfigError("expected -c CONFIG (a NiftyNet .ini or a voxelflow .yaml), got none")
    return action, config, sets, overrides, passed


def run_alias(argv: Sequence[str] | None = None, *, application: str = "segmentation") -> int:
    """Convert (when given an INI) and dispatch to ``voxelflow.cli.main.main``; returns the exit code."""
    from voxelflow.cli.main import main
    from voxelflow.errors import ConfigError, VoxelflowError

    prog = f"net_{_PROGRAMS.get(application, application)}"
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE.format(prog=prog) + "\n" + (__doc__ or "") + "\n")
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="voxelflow: %(message)s")
    try:
        action, config, sets, overrides, passed = split_arguments(argv)
        with tempfile.TemporaryDirectory(prefix="voxelflow-niftynet-") as folder:
            if Path(config).suffix.lower() == ".ini":
                config = str(
                    _convert(Path(config), overrides, Path(folder), application=application)
                )
            elif overrides:
                raise ConfigError(
                    f"NiftyNet overrides {sorted(overrides)} need a .ini config; use --set"
                )
            command = [action, "-c", config, *(a for s in sets for a in ("--set", s)), *passed]
            logger.info("running: voxelflow %s", " ".join(command))
            return main(command)
    except ConfigError as exc:
        sys.stderr.write(f"{prog}: configuration error: {exc}\n{USAGE.format(prog=prog)}\n")
        return 2
    except VoxelflowError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 1


def _convert(ini: Path, overrides: dict[str, str], folder: Path, *, application: str) -> Path:
    from voxelflow.config.load import dump_experiment
    from voxelflow.config.niftynet import convert_niftynet_ini

    experiment, notes = convert_niftynet_ini(ini, overrides=overrides)
    for note in notes:
        if note.status != "mapped":
            logger.warning("%s", note)
    if experiment.application != application:
        logger.warning(
            "%s describes a %s application, not %s; running it as %s",
            ini,
            experiment.application,
            application,
            experiment.application,
        )
    return dump_experiment(experiment, folder / f"{ini.stem}.yaml")


_PROGRAMS = {
    "segmentation": "segment",
    "regression": "regress",
    "classification": "classify",
    "autoencoder": "autoencoder",
    "gan": "gan",
}


def net_segment(argv: Sequence[str] | None = None) -> int:
    """``net_segment`` console script."""
    return run_alias(argv, application="segmentation")


def net_regress(argv: Sequence[str] | None = None) -> int:
    """``net_regress`` console script."""
    return run_alias(argv, application="regression")


def net_classify(argv: Sequence[str] | None = None) -> int:
    """``net_classify`` console script."""
    return run_alias(argv, application="classification")


def net_autoencoder(argv: Sequence[str] | None = None) -> int:
    """``net_autoencoder`` console script."""
    return run_alias(argv, application="autoencoder")


def net_gan(argv: Sequence[str] | None = None) -> int:
    """``net_gan`` console script."""
    return run_alias(argv, application="gan")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(net_segment())
