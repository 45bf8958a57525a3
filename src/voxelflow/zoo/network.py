"""Rebuild the application (every module) of a run folder or a zoo entry, weights loaded strictly.

The application is built exactly as inference builds it (the fitted preprocessing state and the
application's task state from ``preprocessing.json``), so any application packs and loads:
segmentation and classification (``network``), GAN (``generator`` + ``discriminator``) ...

Example:
    >>> network, experiment, checkpoint = network_from_run("runs/brain")  # doctest: +SKIP
    >>> application, experiment, entry = application_from_entry("my-entry")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from voxelflow.errors import CheckpointError, ConfigError
from voxelflow.types import PathLike

if TYPE_CHECKING:
    from voxelflow.applications.base import Application
    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.zoo.store import InstalledModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkShape:
    """How a network is built: dimensions and channel counts."""

    spatial_dims: int
    in_channels: int
    out_channels: int


def _conv_weights(state: Mapping[str, torch.Tensor], spatial_dims: int) -> list[torch.Tensor]:
    return [
        tensor
        for name, tensor in state.items()
        if name.endswith("weight") and tensor.ndim == spatial_dims + 2
    ]


def input_channels(network: nn.Module, spatial_dims: int) -> int | None:
    """Input channels of the network's first convolution (None when it has none)."""
    convolutions = _conv_weights(network.state_dict(), spatial_dims)
    return int(convolutions[0].shape[1]) if convolutions else None


def describe_network(application: Application, experiment: ExperimentConfig) -> NetworkShape:
    """Dimensions and channels of the application's main module (for the model card).

    ``spatial_dims``: of the network window (2D training on slices: 2); ``in_channels``: the
    number of image columns (else the first convolution's input channels); ``out_channels``:
    the application's ``num_classes`` when it has one, else the first dimension of the module's
    last weight matrix or kernel (a classifier's last linear layer, a decoder's last convolution).
    """
    from voxelflow.applications.segmentation.application import network_window

    spatial_dims = len(network_window(experiment.sampling.window))
    state = application.modules[main_module_name(application)].state_dict()
    convolutions = _conv_weights(state, spatial_dims)
    in_channels = len(experiment.dataset.inputs.get("image", []))
    if in_channels == 0 and convolutions:
        in_channels = int(convolutions[0].shape[1])
    out_channels = getattr(application, "num_classes", None)
    if not isinstance(out_channels, int):
        matrices = [t for k, t in state.items() if k.endswith("weight") and t.ndim >= 2]
        out_channels = int(matrices[-1].shape[0]) if matrices else 1
    return NetworkShape(spatial_dims, max(in_channels, 1), max(out_channels, 1))


def checkpoint_network_state(checkpoint: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The module state dicts (``modules``) of a voxelflow checkpoint.

    Raises:
        CheckpointError: the checkpoint holds no module states.
    """
    modules = checkpoint.get("modules")
    if not isinstance(modules, Mapping) or not modules:
        raise CheckpointError(f"{source}: expected module state dicts under 'modules', got none")
    return {name: dict(state) for name, state in modules.items()}


def inference_module_names(application: Application) -> tuple[str, ...]:
    """The module roles inference needs: ``application.inference_modules``, else every module.

    Raises:
        ConfigError: the class names a role the application does not have.
    """
    wanted = getattr(application, "inference_modules", None) or tuple(application.modules)
    unknown = [name for name in wanted if name not in application.modules]
    if unknown:
        raise ConfigError(
            f"{type(application).__name__}.inference_modules: expected roles among "
            f"{sorted(application.modules)}, got {unknown}"
        )
    return tuple(wanted)


def main_module_name(application: Application) -> str:
    """The module exported and described on the card: ``network``, else the first needed one."""
    names = inference_module_names(application)
    return "network" if "network" in names else names[0]


def build_application_for(
    experiment: ExperimentConfig, fitted_state: Mapping[str, Any] | None
) -> Application:
    """The application of ``experiment`` built as inference builds it (fitted and task state)."""
    from voxelflow.engine.run import build_application

    state = dict(fitted_state or {})
    return build_application(
        experiment,
        in_channels=max(len(experiment.dataset.inputs.get("image", [])), 1),
        label_values=state.get("label_values"),
        task_state=state.get("task") or {},
    )


def application_from_run(
    run_dir: PathLike, *, which: str = "best"
) -> tuple[Application, ExperimentConfig, dict[str, Any], dict[str, Any] | None]:
    """The application of a run folder with every module of its ``which`` checkpoint loaded.

    Returns:
        The application (eval mode), the resolved experiment, the checkpoint dict and the
        fitted state (``preprocessing.json``, with the task state under ``"task"``).

    Raises:
        CheckpointError: no checkpoint, or weights that do not fit the configured modules.
    """
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
    from voxelflow.engine.inference import load_application_state

    run_dir = Path(run_dir)
    experiment = load_experiment(run_dir / "config.yaml")
    checkpoint_path = find_checkpoint(run_dir, which=which)
    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint_network_state(checkpoint, source=str(checkpoint_path))
    fitted = read_fitted_state(run_dir, checkpoint)
    application = build_application_for(experiment, fitted)
    try:
        load_application_state(application, checkpoint, source=str(checkpoint_path))
    except ConfigError as exc:  # a module absent from the checkpoint
        raise CheckpointError(f"{checkpoint_path}: {exc}") from exc
    application.eval()
    return application, experiment, checkpoint, fitted


def network_from_run(
    run_dir: PathLike, *, which: str = "best"
) -> tuple[nn.Module, ExperimentConfig, dict[str, Any]]:
    """The main network (see :func:`main_module_name`) of a run folder, its checkpoint loaded.

    Returns:
        The network (eval mode), the resolved experiment and the checkpoint dict.
    """
    application, experiment, checkpoint, _ = application_from_run(run_dir, which=which)
    return application.modules[main_module_name(application)], experiment, checkpoint


def load_entry_modules(application: Application, entry: InstalledModel) -> list[str]:
    """Load an entry's weights into ``application`` (strictly); returns the loaded roles.

    The entry must hold every role of :func:`inference_module_names`; roles it leaves out keep
    their fresh initialisation (a GAN entry without its discriminator). Entries written before
    multi-module packing hold one ``network`` state dict and load as before.

    Raises:
        CheckpointError: a needed role is missing, the entry holds a role the application does
            not have, or tensors do not fit (keys and shapes named).
    """
    from voxelflow.engine.checkpoint import load_module_state
    from voxelflow.zoo.store import load_weights

    source = f"zoo entry {entry.name!r}"
    files = entry.weights_paths or {"network": entry.weights_path}
    missing = [name for name in inference_module_names(application) if name not in files]
    unknown = [name for name in files if name not in application.modules]
    if missing or unknown:
        raise CheckpointError(
            f"{source}: expected weights for the {type(application).__name__} modules "
            f"{list(inference_module_names(application))}, got {sorted(files)}"
        )
    for name, path in files.items():
        state = load_weights(path, entry=entry.name)
        load_module_state(application.modules[name], state, name=name, source=source)
    application.eval()
    return list(files)


def application_from_entry(
    name_or_path: PathLike | InstalledModel, *, trust_code: bool = False
) -> tuple[Application, ExperimentConfig, InstalledModel]:
    """The application of an installed zoo entry (or entry folder, or a resolved
    :class:`~voxelflow.zoo.store.InstalledModel`), weights loaded (an ensemble entry: its first
    member's).

    Returns:
        The application (eval mode), the entry's experiment and the entry
        (:class:`~voxelflow.zoo.store.InstalledModel`).
    """
    import json

    from voxelflow.config.load import load_experiment
    from voxelflow.zoo.store import InstalledModel, resolve_model, trusted_plugins

    entry = (
        name_or_path if isinstance(name_or_path, InstalledModel) else resolve_model(name_or_path)
    )
    trusted_plugins(entry, trust_code)
    experiment = load_experiment(entry.config_path)
    fitted = {}
    if entry.fitted_state_path is not None:
        fitted = json.loads(entry.fitted_state_path.read_text(encoding="utf-8"))
    application = build_application_for(experiment, fitted)
    load_entry_modules(application, entry)
    return application, experiment, entry


def network_from_entry(
    name_or_path: PathLike, *, trust_code: bool = False
) -> tuple[nn.Module, Any, Any]:
    """The main network of an installed zoo entry (or entry folder), its experiment and the entry."""
    application, experiment, entry = application_from_entry(name_or_path, trust_code=trust_code)
    return application.modules[main_module_name(application)], experiment, entry


FITTED_STATE_FILES = ("preprocessing.json", "fitted_state.json", "preprocessing_state.json")


def read_fitted_state(
    run_dir: PathLike, checkpoint: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The fitted preprocessing state of a run: a JSON file in the folder, else the checkpoint's."""
    import json

    for name in FITTED_STATE_FILES:
        path = Path(run_dir) / name
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    for section in ("application_state", "data_state"):
        state = (checkpoint or {}).get(section)
        if isinstance(state, Mapping) and isinstance(state.get("fitted_state"), Mapping):
            return dict(state["fitted_state"])
    return None
