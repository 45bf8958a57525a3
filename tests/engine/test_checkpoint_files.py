"""Checkpoint files: atomic writes, weights_only loading, RNG round trips, run-folder policy."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from engine_toys import tiny_net

from voxelflow.config.schema import Experiment
from voxelflow.engine import checkpoint as checkpoint_module
from voxelflow.engine.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    load_module_state,
    restore_rng_state,
    save_checkpoint,
)
from voxelflow.engine.run_dir import prepare_run_dir
from voxelflow.errors import CheckpointError


def test_failed_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=0)
    first = manager.save({"step": 1, "weights": torch.ones(3)}, step=1)
    real_save = torch.save

    def disk_full(obj, stream) -> None:
        stream.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    with pytest.raises(OSError, match=r"(?i)no space left.*step_00000001\.pt intact"):
        manager.save({"step": 2, "weights": torch.zeros(3)}, step=2)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.json",
        "step_00000001.pt",
    ]  # no temp left
    torch.testing.assert_close(load_checkpoint(first)["weights"], torch.ones(3))
    assert CheckpointManager(tmp_path).last_path() == first


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    path = save_checkpoint({"step": 1}, tmp_path / "c.pt")
    save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 2


class _Arbitrary:
    pass


def test_loading_is_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint_module.CHECKPOINT_FORMAT, "payload": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError,
        match="expected a 'voxelflow-checkpoint-1' checkpoint, got format 'something else'",
    ):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="got nothing at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_module_mismatch_names_keys() -> None:
    net = tiny_net()
    state = dict(net.state_dict())
    state["extra.weight"] = state.pop("3.bias")
    with pytest.raises(
        CheckpointError,
        match=r"x\.pt: 'network' does not fit the checkpoint; missing keys: 3\.bias; unexpected keys: extra\.weight",
    ):
        load_module_state(net, state, name="network", source="x.pt")


def test_optimizer_and_schedule_state_load_weights_only(tmp_path: Path) -> None:
    from voxelflow.optim import build_optimizer, build_scheduler

    net = tiny_net()
    optimizer = build_optimizer("adamw", net.parameters(), lr=1e-3)
    scheduler = build_scheduler("cosine", optimizer, max_iterations=10)
    net(torch.ones(1, 1, 4, 4, 4)).sum().backward()
    optimizer.step(), scheduler.step()
    path = save_checkpoint(
        {"o": optimizer.state_dict(), "s": scheduler.state_dict()}, tmp_path / "o.pt"
    )
    loaded = load_checkpoint(path)
    assert loaded["s"]["last_epoch"] == 1 and len(loaded["o"]["state"]) == len(
        list(net.parameters())
    )


def _experiment(**changes) -> dict:
    data = Experiment().model_dump(mode="json")
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        data[section][key] = value
    return data


def test_run_dir_refuses_model_changes_and_allows_schedule_changes(tmp_path: Path) -> None:
    run, resume = prepare_run_dir(tmp_path, _experiment())
    assert (
        not resume and yaml.safe_load(run.config.read_text())["training"]["max_iterations"] == 1000
    )
    # nothing trained yet (a failed start): a different config is no trap, the old one is kept
    _, resume = prepare_run_dir(tmp_path, _experiment(**{"training.max_iterations": 5}))
    assert not resume and (tmp_path / "superseded" / "0" / "config.yaml").is_file()
    CheckpointManager(run.checkpoints).save({"step": 1}, step=1)
    _, resume = prepare_run_dir(
        tmp_path, _experiment(**{"training.max_iterations": 5, "scheduler.name": "cosine"})
    )
    assert resume
    with pytest.raises(CheckpointError, match=r"changes in network\.name, preprocessing\.spacing"):
        prepare_run_dir(
            tmp_path, _experiment(**{"network.name": "vnet", "preprocessing.spacing": [1, 1, 1]})
        )
    run, resume = prepare_run_dir(tmp_path, _experiment(**{"network.name": "vnet"}), force=True)
    assert not resume and not run.has_checkpoints()
    assert (tmp_path / "superseded" / "1" / "checkpoints" / "step_00000001.pt").is_file()
    assert yaml.safe_load(run.config.read_text())["network"]["name"] == "vnet"
