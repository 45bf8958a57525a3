"""Rebuild the network of a run folder or a zoo entry, with its weights loaded strictly.

Example:
    >>> network, experiment = network_from_run("runs/brain")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxelflow.errors import CheckpointError
from voxelflow.types import PathLike

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


def infer_network_shape(
    experiment: Any, state: Mapping[str, torch.Tensor], *, fitted_state: Mapping[str, Any] | None
) -> NetworkShape:
    """Dimensions and channels from the config, falling back on the saved tensors.

    ``in_channels``: the number of image columns (else the first convolution's input channels);
    ``out_channels``: ``num_classes``, else the number of label values (config or fitted state),
    else the last convolution's output channels.
    """
    from voxelflow.applications.segmentation import network_window

    spatial_dims = len(network_window(experiment.sampling.window))  # 2D training on slices: 2
    convolutions = _conv_weights(state, spatial_dims)
    in_channels = len(experiment.dataset.inputs.get("image", []))
    if in_channels == 0 and convolutions:
        in_channels = int(convolutions[0].shape[1])
    label_values = experiment.preprocessing.label_values or (fitted_state or {}).get("label_values")
    out_channels = experiment.num_classes or (len(label_values) if label_values else 0)
    if not out_channels and convolutions:
        out_channels = int(convolutions[-1].shape[0])
    return NetworkShape(spatial_dims, max(in_channels, 1), max(out_channels, 1))


def build_loaded_network(
    experiment: Any, state: Mapping[str, torch.Tensor], shape: NetworkShape, *, source: str
) -> nn.Module:
    """Build ``experiment.network`` with ``shape`` and load ``state`` strictly (eval mode).

    Raises:
        CheckpointError: the tensors do not fit the network (keys and shapes listed).
    """
    from voxelflow.engine.checkpoint import load_module_state
    from voxelflow.networks import build_network

    network = build_network(
        experiment.network,
        spatial_dims=shape.spatial_dims,
        in_channels=shape.in_channels,
        out_channels=shape.out_channels,
    )
    load_module_state(network, state, name="network", source=source)
    return network.eval()


def checkpoint_network_state(checkpoint: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The module state dicts (``modules``) of a voxelflow checkpoint.

    Raises:
        CheckpointError: the checkpoint holds no module states.
    """
    modules = checkpoint.get("modules")
    if not isinstance(modules, Mapping) or not modules:
        raise CheckpointError(f"{source}: expected module state dicts under 'modules', got none")
    return {name: dict(state) for name, state in modules.items()}


def network_from_run(
    run_dir: PathLike, *, which: str = "best"
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The network of a run folder with its ``which`` checkpoint loaded.

    Returns:
        The network (eval mode), the resolved experiment and the checkpoint dict.
    """
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint

    run_dir = Path(run_dir)
    experiment = load_experiment(run_dir / "config.yaml")
    checkpoint_path = find_checkpoint(run_dir, which=which)
    checkpoint = load_checkpoint(checkpoint_path)
    modules = checkpoint_network_state(checkpoint, source=str(checkpoint_path))
    state = modules.get("network") or next(iter(modules.values()))
    shape = infer_network_shape(
        experiment, state, fitted_state=read_fitted_state(run_dir, checkpoint)
    )
    network = build_loaded_network(experiment, state, shape, source=str(checkpoint_path))
    return network, experiment, checkpoint


def network_from_entry(
    name_or_path: PathLike, *, trust_code: bool = False
) -> tuple[nn.Module, Any, Any]:
    """The network of an installed zoo entry (or entry folder), its experiment and the entry."""
    from voxelflow.config.load import load_experiment
    from voxelflow.zoo.store import load_weights, resolve_model, trusted_plugins

    entry = resolve_model(name_or_path)
    trusted_plugins(entry, trust_code)
    experiment = load_experiment(entry.config_path)
    state = load_weights(entry.weights_path, entry=entry.name)
    card_network = entry.card.network
    shape = NetworkShape(
        int(card_network.get("spatial_dims", entry.card.inputs.spatial_dims)),
        int(card_network.get("in_channels", max(len(entry.card.inputs.modalities), 1))),
        int(card_network.get("out_channels", entry.card.outputs.channels)),
    )
    network = build_loaded_network(experiment, state, shape, source=f"zoo entry {entry.name!r}")
    return network, experiment, entry


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
