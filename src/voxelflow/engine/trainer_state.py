"""The trainer's state: its counters as one object, and the checkpoint that saves them exactly.

:class:`TrainerState` is what :class:`~voxelflow.engine.trainer.Trainer` holds as ``self.state``
(iteration, epoch, best metric, early-stopping counter, data position). :func:`checkpoint_state`
and :func:`restore_checkpoint` write and read a whole resume: modules, optimisers (a changed
schedule on resume is rebuilt and replayed up to the resumed step), schedulers, scalers, RNG and
data-loader positions per rank, the application's own state, this state and the resolved config.
The checkpoint layout is unchanged (``step`` and ``trainer_state`` at the top level), so older
checkpoints resume.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from voxelflow.engine.trainer import Trainer

logger = logging.getLogger("voxelflow.engine.trainer")


@dataclasses.dataclass
class TrainerState:
    """The counters of a training run (saved as the checkpoint's ``step``/``trainer_state``).

    Example:
        >>> state = TrainerState(step=4, best_value=0.5)
        >>> restored = TrainerState()
        >>> restored.restore(4, state.to_checkpoint())
        >>> restored.step, restored.best_value
        (4, 0.5)
    """

    step: int = 0  # optimiser updates done (the iteration)
    epoch: int = 0
    batches_consumed: int = 0
    best_value: float | None = None
    bad_validations: int = 0  # validations since the best one (early stopping)
    last_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    sums: dict[str, float] = dataclasses.field(default_factory=dict)  # of the logging interval
    should_stop: bool = False
    stop_signal: int | None = None
    last_saved_step: int = 0
    skip_batches: int = 0  # batches replayed and skipped after a resume without data state
    data_base: int = 0  # windows consumed when the dataset state was restored
    batches_at_restore: int = 0

    def to_checkpoint(self) -> dict[str, Any]:
        """The ``trainer_state`` entry of a checkpoint (without the run-wide fields)."""
        return {
            "epoch": self.epoch,
            "batches_consumed": self.batches_consumed,
            "best_value": self.best_value,
            "bad_validations": self.bad_validations,
            "sums": {k: float(v) for k, v in self.sums.items()},
        }

    def restore(self, step: int, saved: Mapping[str, Any]) -> None:
        """Take the counters of a checkpoint's ``step`` and ``trainer_state``."""
        self.step = int(step)
        self.epoch, self.batches_consumed = saved["epoch"], saved["batches_consumed"]
        self.best_value, self.bad_validations = saved["best_value"], saved["bad_validations"]
        self.sums = dict(saved["sums"])


def checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    """Everything a resume needs (gathers RNG and data states from every rank)."""
    state, application = trainer.state, trainer.application
    per_rank = distributed.gather_objects(
        {"rng": capture_rng_state(), "data": _data_state(trainer)}
    )
    run_wide = {
        "seed": trainer.training.seed,
        "deterministic": trainer.training.deterministic,
        "world_size": trainer.context.world_size,
    }
    return {
        "application": application.name,
        "step": state.step,
        "modules": {name: module.state_dict() for name, module in application.modules.items()},
        "optimizers": {name: opt.state_dict() for name, (opt, _) in trainer.optimizers.items()},
        "schedulers": {
            name: sch.state_dict()
            for name, (_, sch) in trainer.optimizers.items()
            if sch is not None
        },
        "scalers": {name: scaler.state_dict() for name, scaler in trainer.scalers.items()},
        "rng": [item["rng"] for item in per_rank],
        "data_state": [item["data"] for item in per_rank],
        "trainer_state": {**run_wide, **state.to_checkpoint()},
        "application_state": application.state_dict(),
        "config": trainer.config,
        "metrics": dict(state.last_metrics),
    }


def restore_checkpoint(trainer: Trainer, path: Path) -> None:
    """Restore the full training state of ``trainer`` from the checkpoint at ``path``."""
    saved = load_checkpoint(path)
    check_application(saved, trainer.application, source=str(path))
    changed = (
        config_changes(saved["config"], trainer.config, source=str(path))
        if trainer.config and saved.get("config")
        else []
    )
    for name, module in trainer.application.modules.items():
        if name not in saved["modules"]:
            raise CheckpointError(
                f"{path}: expected module {name!r}, got modules {sorted(saved['modules'])}"
            )
        load_module_state(module, saved["modules"][name], name=name, source=str(path))
    trainer.state.step = int(saved["step"])
    _load_optimizers(trainer, saved, rebuild_schedules=schedule_changed(changed))
    for name, scaler in trainer.scalers.items():
        scaler.load_state_dict(saved["scalers"][name])
    trainer.application.load_state_dict(saved["application_state"])
    trainer.state.restore(saved["step"], saved["trainer_state"])
    trainer.state.last_metrics = dict(saved["metrics"])
    context = trainer.context
    rank = context.rank if len(saved["rng"]) == context.world_size else 0
    restore_rng_state(saved["rng"][rank])
    _restore_data_state(trainer, saved["data_state"][rank])
    logger.info("resumed from %s at iteration %d", path, trainer.state.step)


def _load_optimizers(
    trainer: Trainer, saved: Mapping[str, Any], *, rebuild_schedules: bool
) -> None:
    for name, (opt, scheduler) in trainer.optimizers.items():
        fresh_lrs = [group["lr"] for group in opt.param_groups]
        opt.load_state_dict(saved["optimizers"][name])
        if scheduler is None:
            continue
        if not rebuild_schedules:
            scheduler.load_state_dict(saved["schedulers"][name])
            continue
        for group, lr in zip(opt.param_groups, fresh_lrs):
            group["lr"] = lr
        with warnings.catch_warnings():  # "scheduler stepped before optimizer": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(trainer.state.step):  # the new schedule, replayed up to the resumed step
                scheduler.step()


def _data_state(trainer: Trainer) -> dict[str, Any]:
    data, state = trainer.train_data, trainer.state
    if hasattr(data, "state_dict"):
        return {"kind": "own", "state": data.state_dict()}
    dataset = getattr(data, "dataset", None)
    if hasattr(dataset, "state_dict") and getattr(data, "batch_size", None):
        saved = dict(dataset.state_dict())  # type: ignore[union-attr]
        if getattr(data, "num_workers", 0) > 0 and "windows_consumed" in saved:
            # workers run ahead of the loop: count what the loop consumed, not what they read
            consumed = state.batches_consumed - state.batches_at_restore
            saved["windows_consumed"] = state.data_base + consumed * data.batch_size  # type: ignore[attr-defined]
        return {"kind": "dataset", "state": saved}
    return {"kind": "skip", "batches": state.batches_consumed}


def _restore_data_state(trainer: Trainer, saved: Mapping[str, Any]) -> None:
    state = trainer.state
    if saved["kind"] == "own":
        trainer.train_data.load_state_dict(saved["state"])  # type: ignore[attr-defined]
    elif saved["kind"] == "dataset":
        trainer.train_data.dataset.load_state_dict(saved["state"])  # type: ignore[attr-defined]
        state.data_base = int(saved["state"].get("windows_consumed", 0))
        state.batches_at_restore = state.batches_consumed
    else:  # replayed from the first epoch, skipping what was consumed
        state.skip_batches, state.epoch = int(saved["batches"]), 0
