"""NiftyNet's console scripts: ``net_segment``, ``net_regress``, ``net_gan``, ``net_autoencoder``,
``net_classify``, ``net_run`` and ``net_download``.

``net_<app> train|inference|evaluation -c config.ini [--key value ...]`` converts the INI with
:func:`voxelflow.niftynet.conversion.convert_niftynet` (the command's application, as NiftyNet) and
runs it with NiftyNet's semantics (:mod:`voxelflow.niftynet.actions`). The console scripts themselves live in
:mod:`voxelflow.cli.niftynet_scripts`, beside the voxelflow command line they run. ``--key value`` /
``--key=value`` overrides any key of the system sections or the application section, as
NiftyNet's command line did (``--lr 0.01``, ``--max_iter 10``); an unknown ``--key`` is refused,
as NiftyNet refused it. ``--set a.b=value`` overrides the converted experiment. A voxelflow YAML
given with ``-c`` is run by voxelflow's own command unchanged. Exit codes: 0, 1 (a run error),
2 (a configuration error, one line naming the key).

Example:
    $ net_segment train -c config/default_segmentation.ini --max_iter 100
    $ net_run inference -a net_segment -c config/default_segmentation.ini
    $ net_download highres3dnet_brain_parcellation   # refused: TensorFlow weights
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("voxelflow.niftynet")

#: NiftyNet's action names (niftynet/utilities/user_parameters_parser.py ACTIONS)
ACTIONS = {
    "train": "train",
    "training": "train",
    "inference": "inference",
    "infer": "inference",
    "evaluation": "evaluation",
    "eval": "evaluation",
    "evaluate": "evaluation",
}
#: NiftyNet's application names and class paths (application_factory.SUPPORTED_APP)
APPLICATIONS = {
    "net_segment": "segmentation",
    "net_regress": "regression",
    "net_classify": "classification",
    "net_autoencoder": "autoencoder",
    "net_gan": "gan",
    "niftynet.application.segmentation_application.SegmentationApplication": "segmentation",
    "niftynet.application.regression_application.RegressionApplication": "regression",
    "niftynet.application.classification_application.ClassificationApplication": ("classification"),
    "niftynet.application.autoencoder_application.AutoencoderApplication": "autoencoder",
    "niftynet.application.gan_application.GANApplication": "gan",
}
USAGE = (
    "usage: {prog} train|inference|evaluation -c CONFIG.ini {app}[--NIFTYNET_KEY VALUE ...] "
    "[--set key.path=value]"
)


@dataclass
class Invocation:
    """A parsed NiftyNet command line."""

    action: str
    config: Path
    application: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)


def parse_arguments(argv: Sequence[str], *, application: str | None) -> Invocation:  # noqa: C901  (NiftyNet's own argument grammar, one branch per form)
    """NiftyNet's command line: ``ACTION -c CONFIG [-a APP] [--key value ...] [--set a.b=v]``.

    Raises:
        ConfigError: no or an unknown action, no ``-c``, an unknown application or ``--key``.
    """
    from voxelflow.errors import ConfigError
    from voxelflow.niftynet.conversion import APPLICATION_KEYS, SYSTEM_SECTIONS
    from voxelflow.registry import suggest

    known = {k for table in SYSTEM_SECTIONS.values() for k in table} | APPLICATION_KEYS
    args = list(argv)
    if not args or args[0] not in ACTIONS:
        got = args[0] if args else "nothing"
        raise ConfigError(f"expected an action train, inference or evaluation, got {got!r}")
    found = Invocation(action=ACTIONS[args[0]], config=Path(), application=application)
    config: str | None = None
    rest, index = args[1:], 0
    while index < len(rest):
        item = rest[index]
        value = rest[index + 1] if index + 1 < len(rest) else None
        if item in ("-c", "--conf", "--config"):
            if value is None:
                raise ConfigError(f"{item}: expected a configuration file")
            config, index = value, index + 2
        elif item in ("-a", "--application_name"):
            if value is None:
                raise ConfigError(f"{item}: expected an application name or class path")
            found.application, index = _application(value), index + 2
        elif item == "--set":
            if value is None:
                raise ConfigError("--set: expected key.path=value")
            found.sets.append(value)
            index += 2
        elif item.startswith("--"):
            key, has_inline, inline = item[2:].partition("=")
            if key not in known:
                hint = suggest(key, sorted(known))
                raise ConfigError(f"--{key}: not a NiftyNet parameter (NiftyNet refused it).{hint}")
            if has_inline:
                found.overrides[key], index = inline, index + 1
            elif value is not None:
                found.overrides[key], index = value, index + 2
            else:
                raise ConfigError(f"--{key}: expected a value")
        else:
            raise ConfigError(f"unexpected argument {item!r}")
    if config is None:
        raise ConfigError("expected -c CONFIG (a NiftyNet .ini or a voxelflow .yaml), got none")
    found.config = Path(config)
    return found


def split_arguments(argv: Sequence[str]) -> tuple[str, str, list[str], dict[str, str], list[str]]:
    """Former parser, kept for callers of its tuple: (voxelflow command, config, --set values,
    NiftyNet overrides, other arguments passed on).

    Raises:
        ConfigError: no action, an unknown action, or no ``-c``.
    """
    from voxelflow.errors import ConfigError
    from voxelflow.niftynet.conversion import APPLICATION_KEYS, SYSTEM_SECTIONS

    known = {k for table in SYSTEM_SECTIONS.values() for k in table} | APPLICATION_KEYS
    args = list(argv)
    if not args or args[0] not in ACTIONS:
        got = args[0] if args else "nothing"
        raise ConfigError(f"expected an action train, inference or evaluation, got {got!r}")
    command = {"train": "train", "inference": "infer", "evaluation": "evaluate"}[ACTIONS[args[0]]]
    config, sets, overrides, passed = None, [], {}, []
    rest, index = args[1:], 0
    while index < len(rest):
        item = rest[index]
        key, has_inline, inline = item.lstrip("-").partition("=")
        if item in ("-c", "--conf", "--config") and index + 1 < len(rest):
            config, index = rest[index + 1], index + 2
        elif item == "--set" and index + 1 < len(rest):
            sets.append(rest[index + 1])
            index += 2
        elif item.startswith("--") and key in known:
            if has_inline:
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
    return command, config, sets, overrides, passed


def _application(name: str) -> str:
    from voxelflow.errors import ConfigError

    application = APPLICATIONS.get(name.strip())
    if application is None:
        raise ConfigError(
            f"-a {name}: expected one of net_segment, net_regress, net_classify, "
            "net_autoencoder, net_gan or a NiftyNet application class path such as "
            "niftynet.application.segmentation_application.SegmentationApplication"
        )
    return application


def run_niftynet(
    argv: Sequence[str] | None,
    *,
    program: str,
    application: str | None,
    run_voxelflow: Callable[[list[str]], int],
) -> int:
    """Run one NiftyNet command line; returns the exit code (0, 1 or 2).

    ``run_voxelflow`` runs a voxelflow command line (the console scripts in
    :mod:`voxelflow.cli.niftynet_scripts` pass ``voxelflow.cli.main.main``).
    """
    from voxelflow.errors import ConfigError, VoxelflowError

    argv = list(sys.argv[1:] if argv is None else argv)
    app_hint = "" if application else "-a APPLICATION "
    usage = USAGE.format(prog=program, app=app_hint)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage + "\n\n" + (__doc__ or "") + "\n")
        return 0 if argv else 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="voxelflow: %(message)s")
    try:
        invocation = parse_arguments(argv, application=application)
        if invocation.application is None and invocation.config.suffix.lower() == ".ini":
            raise ConfigError(f"{program}: expected -a APPLICATION (net_segment, net_regress, ...)")
        from voxelflow.niftynet.actions import run_invocation

        return run_invocation(invocation, run_voxelflow)
    except ConfigError as exc:
        sys.stderr.write(f"{program}: configuration error: {_one_line(exc)}\n")
        return 2
    except VoxelflowError as exc:
        sys.stderr.write(f"{program}: error: {_one_line(exc)}\n")
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
