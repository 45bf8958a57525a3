"""Fixtures of the zoo tests: a fabricated run folder (resolved config + checkpoint) and a zoo home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from voxelflow.config.load import dump_experiment, load_experiment
from voxelflow.engine.checkpoint import CheckpointManager
from voxelflow.networks import build_network

WINDOW = [12, 10, 8]


def make_run(
    root: Path, *, network: dict | None = None, num_classes: int = 3, seed: int = 0
) -> Path:
    """A run folder as the engine leaves it: config.yaml, checkpoints/, preprocessing.json."""
    network = network or {"name": "toynet", "features": 4}
    experiment = load_experiment(
        {
            "dataset": {"inputs": {"image": ["t1"], "label": ["seg"]}},
            "sampling": {"window": WINDOW},
            "network": network,
            "num_classes": num_classes,
            "preprocessing": {"spacing": [1.0, 1.0, 2.5]},
            "system": {"run_dir": str(root)},
        }
    )
    dump_experiment(experiment, root / "config.yaml")
    torch.manual_seed(seed)
    net = build_network(experiment.network, spatial_dims=3, in_channels=1, out_channels=num_classes)
    manager = CheckpointManager(root / "checkpoints", keep_last=2, keep_best=1)
    state = {
        "step": 5,
        "modules": {"network": net.state_dict()},
        "trainer_state": {"best_metric": 0.5},
    }
    manager.save(state, step=5, metric=0.5)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(1.0)  # the best checkpoint differs from the first one
    state = {
        "step": 10,
        "modules": {"network": net.state_dict()},
        "trainer_state": {"best_metric": 0.8},
    }
    manager.save(state, step=10, metric=0.8)
    fitted = {"normalization": [{}], "label_values": [0, 1, 4][:num_classes]}
    (root / "preprocessing.json").write_text(json.dumps(fitted))
    return root


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A toynet run folder with two checkpoints (the best at step 10)."""
    return make_run(tmp_path / "runs" / "brain")


@pytest.fixture()
def zoo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty zoo home set through VOXELFLOW_ZOO_HOME."""
    home = tmp_path / "zoo_home"
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(home))
    return home
