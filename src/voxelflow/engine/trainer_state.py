"""The trainer's checkpoint state: what a resume needs, saved and restored exactly.

A mixin of :class:`~voxelflow.engine.trainer.Trainer`: modules, optimisers (a changed schedule on
resume is rebuilt and replayed up to the resumed step), schedulers, scalers, RNG and data-loader
positions per rank, the application's own state, best-metric tracking and the resolved config.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voxelflow.engine import distributed
from voxelflow.engine.checkpoint import (
    capture_rng_state,
    check_application,
    load_checkpoint,
    load_module_state,
    restore_rng_state,
)
from voxelflow.engine.run_dir import config_changes, schedule_changed
from voxelflow.errors import CheckpointError

logger = logging.getLogger("voxelflow.engine.trainer")


class TrainerStateMixin:
    """``state_dict``/``save``/``load`` of the :class:`~voxelflow.engine.trainer.Trainer`."""

    # Attributes provided by the Trainer.
    application: Any
    optimizers: dict[str, Any]
    scalers: dict[str, Any]
    options: Any
    context: Any
    config: Any
    checkpoints: Any
    hooks: Any
    train_data: Any
    step: int
    epoch: int
    batches_consumed: int
    best_value: float | None
    bad_validations: int
    last_metrics: dict[str, float]

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (gathers RNG and data states from every rank)."""
        per_rank = distributed.gather_objects(
            {"rng": capture_rng_state(), "data": self._data_state()}
        )
        return {
            "application": self.application.name,
            "step": self.step,
            "modules": {
                name: module.state_dict() for name, module in self.application.modules.items()
            },
            "optimizers": {name: opt.state_dict() for name, (opt, _) in self.optimizers.items()},
            "schedulers": {
                name: sch.state_dict()
                for name, (_, sch) in self.optimizers.items()
                if sch is not None
            },
            "scalers": {name: scaler.state_dict() for name, scaler in self.scalers.items()},
            "rng": [item["rng"] for item in per_rank],
            "data_state": [item["data"] for item in per_rank],
            "trainer_state": {
                "seed": self.options.seed,
                "deterministic": self.options.deterministic,
                "world_size": self.context.world_size,
                "epoch": self.epoch,
                "batches_consumed": self.batches_consumed,
                "best_value": self.best_value,
                "bad_validations": self.bad_validations,
                "sums": {k: float(v) for k, v in self._sums.items()},
            },
            "application_state": self.application.state_dict(),
            "config": self.config,
            "metrics": dict(self.last_metrics),
        }

    def save(self, *, metric: float | None = None) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank must call)."""
        state = self.state_dict()
        if not self.context.is_main:
            self._last_saved_step = self.step
            return None
        self._last_saved_step = self.step
        path = self.checkpoints.save(state, step=self.step, metric=metric)
        self.hooks.on_checkpoint(self, path)
        return path

    def load(self, path: Path) -> None:
        """Restore the full training state from a checkpoint."""
        state = load_checkpoint(path)
        check_application(state, self.application, source=str(path))
        changed = (
            config_changes(state["config"], self.config, source=str(path))
            if self.config and state.get("config")
            else []
        )
        for name, module in self.application.modules.items():
            if name not in state["modules"]:
                raise CheckpointError(
                    f"{path}: expected module {name!r}, got modules {sorted(state['modules'])}"
                )
            load_module_state(module, state["modules"][name], name=name, source=str(path))
        self.step = int(state["step"])
        self._load_optimizers(state, rebuild_schedules=schedule_changed(changed))
        for name, scaler in self.scalers.items():
            scaler.load_state_dict(state["scalers"][name])
        self.application.load_state_dict(state["application_state"])
        trainer_state = state["trainer_state"]
        self.epoch, self.batches_consumed = (
            trainer_state["epoch"],
            trainer_state["batches_consumed"],
        )
        self.best_value, self.bad_validations = (
            trainer_state["best_value"],
            trainer_state["bad_validations"],
        )
        self._sums = dict(trainer_state["sums"])
        self.last_metrics = dict(state["metrics"])
        rank = self.context.rank if len(state["rng"]) == self.context.world_size else 0
        restore_rng_state(state["rng"][rank])
        self._restore_data_state(state["data_state"][rank])
        logger.info("resumed from %s at iteration %d", path, self.step)

    def _load_optimizers(self, state: Mapping[str, Any], *, rebuild_schedules: bool) -> None:
        for name, (opt, scheduler) in self.optimizers.items():
            fresh_lrs = [group["lr"] for group in opt.param_groups]
            opt.load_state_dict(state["optimizers"][name])
            if scheduler is None:
                continue
            if not rebuild_schedules:
                scheduler.load_state_dict(state["schedulers"][name])
                continue
            for group, lr in zip(opt.param_groups, fresh_lrs):
                group["lr"] = lr
            with warnings.catch_warnings():  # "scheduler stepped before optimizer": intended here
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(self.step):  # the new schedule, replayed up to the resumed step
                    scheduler.step()

    def _data_state(self) -> dict[str, Any]:
        data = self.train_data
        if hasattr(data, "state_dict"):
            return {"kind": "own", "state": data.state_dict()}
        dataset = getattr(data, "dataset", None)
        if hasattr(dataset, "state_dict") and getattr(data, "batch_size", None):
            state = dict(dataset.state_dict())
            if getattr(data, "num_workers", 0) > 0 and "windows_consumed" in state:
                state["windows_consumed"] = (
                    self._data_base
                    + (self.batches_consumed - self._batches_at_restore) * data.batch_size
                )
            return {"kind": "dataset", "state": state}
        return {"kind": "skip", "batches": self.batches_consumed}

    def _restore_data_state(self, saved: Mapping[str, Any]) -> None:
        if saved["kind"] == "own":
            self.train_data.load_state_dict(saved["state"])  # type: ignore[attr-defined]
        elif saved["kind"] == "dataset":
            self.train_data.dataset.load_state_dict(saved["state"])  # type: ignore[attr-defined]
            self._data_base = int(saved["state"].get("windows_consumed", 0))
            self._batches_at_restore = self.batches_consumed
        else:  # replayed from the first epoch, skipping what was consumed
            self._skip_batches, self.epoch = int(saved["batches"]), 0
