"""The generic training loop: it knows optimisers, precision, DDP and checkpoints, not medicine.

An iteration is one optimiser update made of ``accumulate`` micro-batches. The
:class:`~voxelflow.applications.base.Application` turns each batch into losses; the trainer
moves batches to the device, runs them under autocast, steps optimisers and per-iteration
schedulers, validates every ``validate_every`` iterations on whole subjects (sharded over
ranks, metrics gathered per subject, averaged over subjects), keeps the last-k and best-k
checkpoints, stops early on a plateau, logs on rank 0 and resumes exactly from the last
checkpoint of its run folder (layout: see :class:`~voxelflow.engine.checkpoint.RunDir`).

Training data is any iterable of dict batches, already sharded for this rank. Its position is
saved through its own ``state_dict``/``load_state_dict`` (a stateful loader, or a DataLoader
over a :class:`~voxelflow.sampling.queue.PatchQueue`); anything else is fast-forwarded by
skipping the batches already consumed.

Example:
    >>> options = TrainerOptions(max_iterations=100)
    >>> trainer = Trainer(app, loader, run_dir="runs/x", options=options)  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxelflow.applications.base import Application, OptimizationSettings
from voxelflow.engine import distributed
from voxelflow.engine.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    check_application,
    config_as_dict,
    config_changes,
    load_checkpoint,
    load_module_state,
    restore_rng_state,
    schedule_changed,
)
from voxelflow.engine.device import (
    move_to_device,
    resolve_precision,
    seed_everything,
    select_device,
)
from voxelflow.engine.hooks import Hook, HookList
from voxelflow.engine.logging import RunLogger
from voxelflow.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """Loop settings (the fields of ``training`` in the experiment config, plus a few extras)."""

    max_iterations: int = 1000
    max_epochs: int | None = None
    accumulate: int = 1
    grad_clip: float | None = None
    amp: str = "auto"
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    validate_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 100
    keep_last: int = 2
    keep_best: int = 1
    best_metric: str = "dice"
    best_mode: str = "max"
    early_stopping_patience: int | None = None
    image_every: int = 0
    progress: bool = True
    tensorboard: bool = True

    @classmethod
    def from_config(cls, training: Any, **extra: Any) -> TrainerOptions:
        """Options from a ``TrainingConfig`` section (unknown fields of it are ignored)."""
        names = {field.name for field in dataclasses.fields(cls)}
        values = {name: getattr(training, name) for name in names if hasattr(training, name)}
        return cls(**{**values, **extra})


class StepContext:
    """The :class:`~voxelflow.applications.base.TrainingContext` the trainer gives applications."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.device = trainer.device
        self.accumulate = trainer.options.accumulate
        self.iteration = 0
        self.grad_norms: dict[str, torch.Tensor] = {}  # last clipped norm per optimiser

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        return self._trainer.precision.autocast()

    def _lookup(self, name: str) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler]:
        if name not in self._trainer.optimizers:
            known = ", ".join(sorted(self._trainer.optimizers))
            raise ConfigError(f"expected an optimiser name among {known}, got {name!r}")
        return self._trainer.optimizers[name][0], self._trainer.scalers[name]

    def backward(self, loss: torch.Tensor, optimizer: str = "default") -> None:
        _, scaler = self._lookup(optimizer)
        scaler.scale(loss / self.accumulate).backward()

    def step(self, optimizer: str = "default") -> None:
        opt, scaler = self._lookup(optimizer)
        clip = self._trainer.options.grad_clip
        if clip:
            scaler.unscale_(opt)
            parameters = [p for group in opt.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
            self.grad_norms[optimizer] = norm.detach()  # read at logging time: no sync per step
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def zero_grad(self, optimizer: str = "default") -> None:
        self._lookup(optimizer)[0].zero_grad(set_to_none=True)


class Trainer:
    """Train an application on an iterable of batches.

    Args:
        application: the application (its modules may be on any device; they are moved).
        train_data: iterable of dict batches for this rank (re-iterated for every epoch).
        run_dir: the run folder (checkpoints, logs).
        options: loop settings.
        optimization: optimiser and schedule for :meth:`Application.configure_optimizers`.
        validation_data: whole validation subjects, the same full list on every rank.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        hooks: callbacks.
        config: the resolved experiment, saved in checkpoints and compared on resume.
        resume: continue from the run folder's last checkpoint when there is one.
    """

    def __init__(
        self,
        application: Application,
        train_data: Iterable[Mapping[str, Any]],
        *,
        run_dir: str | Path,
        options: TrainerOptions | None = None,
        optimization: OptimizationSettings | None = None,
        validation_data: Sequence[Any] = (),
        device: str | torch.device = "auto",
        hooks: Sequence[Hook] = (),
        config: Any = None,
        resume: bool = True,
    ) -> None:
        self.options = options or TrainerOptions()
        self.application, self.train_data = application, train_data
        self.validation_data = validation_data
        self.run_dir, self.resume = Path(run_dir), resume
        self.context = distributed.current_context()
        self.device = (
            device
            if isinstance(device, torch.device)
            else select_device(
                device, local_rank=self.context.local_rank if self.context.is_distributed else None
            )
        )
        self.precision = resolve_precision(self.options.amp, self.device)
        self.hooks = HookList(hooks)
        self.config = config_as_dict(config) if config is not None else None
        self._build_optimisation(optimization)
        self.checkpoints = CheckpointManager(
            self.run_dir / "checkpoints",
            keep_last=self.options.keep_last,
            keep_best=self.options.keep_best,
            best_mode=self.options.best_mode,
        )
        self.step = self.epoch = self.batches_consumed = self.bad_validations = 0
        self.best_value: float | None = None
        self.should_stop = False
        self.last_metrics: dict[str, float] = {}
        self._sums: dict[str, float] = {}
        self._skip_batches = 0
        self._data_base = self._batches_at_restore = self._last_saved_step = 0
        self.run_logger: RunLogger | None = None

    def _build_optimisation(self, optimization: OptimizationSettings | None) -> None:
        """Seed, move modules to the device, build optimisers and scalers, wrap for DDP/compile."""
        application, options = self.application, self.options
        if application.manual_optimization and options.accumulate > 1:
            raise ConfigError(
                f"training.accumulate: expected 1 for {application.name} (it steps its own "
                f"optimisers), got {options.accumulate}"
            )
        seed_everything(options.seed + self.context.rank, deterministic=options.deterministic)
        for module in application.modules.values():
            module.to(self.device)
        settings = optimization or OptimizationSettings(max_iterations=options.max_iterations)
        self.optimizers = application.configure_optimizers(settings)
        self.scalers = {
            name: torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
            for name in self.optimizers
        }
        self.train_modules = {name: self._wrap(m) for name, m in application.modules.items()}

    def _wrap(self, module: nn.Module) -> nn.Module:
        wrapped = distributed.wrap_data_parallel(module, self.device)
        return torch.compile(wrapped) if self.options.compile else wrapped

    # --- the loop -----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``max_iterations`` (or ``max_epochs``, or early stopping).

        Returns:
            The last validation metrics plus ``step`` and ``best`` (the best metric value).
        """
        last = self.checkpoints.last_path() if self.resume else None
        if last is not None:
            self.load(last)
        self.run_logger = RunLogger(
            self.run_dir,
            total_iterations=self.options.max_iterations,
            start_iteration=self.step,
            enabled=self.context.is_main,
            progress=self.options.progress,
            tensorboard=self.options.tensorboard,
        )
        try:
            self._loop()
        finally:
            self.run_logger.close()
        summary = {**self.last_metrics, "step": float(self.step)}
        if self.best_value is not None:
            summary["best"] = self.best_value
        return summary

    def _loop(self) -> None:
        ctx = StepContext(self)
        batches = self._batches()
        self.application.train()
        self.hooks.on_train_start(self)
        logger.info(
            "training %s from iteration %d to %d (seed %d%s, %d rank(s), %s)",
            self.application.name, self.step, self.options.max_iterations, self.options.seed,
            ", deterministic" if self.options.deterministic else "", self.context.world_size, self.device,
        )  # fmt: skip
        first = True
        while self.step < self.options.max_iterations and not self.should_stop:
            ctx.iteration = self.step
            try:
                batch, losses, data_time, compute_time = self._iteration(batches, ctx)
            except StopIteration:  # max_epochs reached
                self._finish_last_epoch(ctx)
                break
            self.step += 1
            self._accumulate(
                {
                    **{f"train/{k}": v.detach() for k, v in losses.items()},
                    "time/data_ms": data_time * 1e3,
                    "time/compute_ms": compute_time * 1e3,
                }
            )
            if first and self.context.is_main:
                self._log_graph(batch)
                first = False
            self.hooks.on_step_end(self, batch, losses)
            self._after_iteration(batch, losses, ctx)
        self.hooks.on_train_end(self)

    def _finish_last_epoch(self, ctx: StepContext) -> None:
        if self.step == 0 or self._last_saved_step == self.step:
            return
        self._log_interval(ctx)
        metric = self.validate() if self.options.validate_every else None
        self.save(metric=metric)

    def _iteration(
        self, batches: Iterator[Mapping[str, Any]], ctx: StepContext
    ) -> tuple[Any, dict[str, torch.Tensor], float, float]:
        data_time = compute_time = 0.0
        totals: dict[str, torch.Tensor] = {}
        for micro in range(self.options.accumulate):
            start = time.perf_counter()
            batch = move_to_device(next(batches), self.device)
            computed = time.perf_counter()
            with (
                self._no_sync(last=micro == self.options.accumulate - 1),
                self.application.using_modules(self.train_modules),
            ):
                losses = self.application.train_step(batch, ctx)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value.detach() / self.options.accumulate
            data_time, compute_time = (
                data_time + computed - start,
                compute_time + time.perf_counter() - computed,
            )
        start = time.perf_counter()
        if not self.application.manual_optimization:
            for name in self.optimizers:
                ctx.step(name)
        for _, scheduler in self.optimizers.values():
            if scheduler is not None:
                scheduler.step()
        return batch, totals, data_time, compute_time + time.perf_counter() - start

    def _no_sync(self, *, last: bool) -> contextlib.AbstractContextManager[None]:
        stack = contextlib.ExitStack()
        if not last:
            for module in self.train_modules.values():
                inner = getattr(module, "_orig_mod", module)
                if isinstance(inner, nn.parallel.DistributedDataParallel):
                    stack.enter_context(inner.no_sync())
        return stack

    def _batches(self) -> Iterator[Mapping[str, Any]]:
        skip = self._skip_batches
        while True:
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(self.epoch)
            produced = False
            for batch in self.train_data:
                produced = True
                if skip > 0:
                    skip -= 1
                    continue
                self.batches_consumed += 1
                yield batch
            if not produced:
                raise DataError("training data: expected at least one batch per epoch, got none")
            self.epoch += 1
            if self.options.max_epochs is not None and self.epoch >= self.options.max_epochs:
                return

    def _accumulate(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._sums["count"] = self._sums.get("count", 0) + 1

    def _after_iteration(
        self, batch: Mapping[str, Any], losses: Mapping[str, torch.Tensor], ctx: StepContext
    ) -> None:
        options, step = self.options, self.step
        assert self.run_logger is not None  # set by fit()
        final = step >= options.max_iterations
        logged = self._log_interval(ctx) if step % options.log_every == 0 or final else {}
        postfix = {"loss": logged["train/loss"]} if "train/loss" in logged else {}
        self.run_logger.update_progress(1, **postfix)
        if options.image_every and step % options.image_every == 0 and self.context.is_main:
            self.run_logger.log_images(step, self.application.example_images(batch, losses))
        metric = None
        if options.validate_every and (step % options.validate_every == 0 or final):
            metric = self.validate()
        # rank 0 alone knows the kept checkpoints: its decision holds for every rank
        among_best = metric is not None and distributed.broadcast_object(
            self.checkpoints.is_among_best(metric)
        )
        if step % options.checkpoint_every == 0 or final or self.should_stop or among_best:
            self.save(metric=metric)

    def _log_interval(self, ctx: StepContext) -> dict[str, float]:
        count = self._sums.pop("count", 1)
        scalars = {name: float(value) / count for name, value in self._sums.items()}
        self._sums = {}
        for name, (opt, _) in self.optimizers.items():
            scalars[f"lr/{name}"] = opt.param_groups[0]["lr"]
        scalars.update({f"grad_norm/{name}": float(v) for name, v in ctx.grad_norms.items()})
        self.run_logger.log_scalars(self.step, scalars)  # type: ignore[union-attr]
        return scalars

    def _log_graph(self, batch: Mapping[str, Any]) -> None:
        example = self.application.graph_input(batch)
        if example is not None and self.run_logger is not None:
            role, tensor = example
            self.run_logger.log_graph(self.application.modules[role], tensor)

    # --- validation ---------------------------------------------------------------------------
    def validate(self) -> float | None:
        """Validate on every subject (sharded over ranks); returns the ``best_metric`` value or None."""
        ctx = StepContext(self)
        ctx.iteration = self.step
        mine = distributed.shard(
            list(range(len(self.validation_data))),
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        self.application.eval()
        with torch.no_grad():
            local = [
                (index, self.application.validation_step(self.validation_data[index], ctx))
                for index in mine
            ]
        self.application.train()
        per_subject = [item for part in distributed.gather_objects(local) for item in part]
        self.last_metrics = distributed.mean_over_subjects(metrics for _, metrics in per_subject)
        if self.run_logger is not None:
            self.run_logger.log_scalars(
                self.step, {f"val/{k}": v for k, v in self.last_metrics.items()}
            )
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.last_metrics.items() if "/" not in k)
        logger.info(
            "iteration %d: validation on %d subjects: %s", self.step, len(per_subject), shown
        )
        self.hooks.on_validation_end(self, self.last_metrics)
        metric = self.last_metrics.get(self.options.best_metric)
        if metric is None:
            logger.warning(
                "validation has no metric %r (training.best_metric); got %s",
                self.options.best_metric,
                sorted(self.last_metrics),
            )
            return None
        self._track_best(metric)
        return metric

    def _track_best(self, metric: float) -> None:
        sign = 1.0 if self.options.best_mode == "max" else -1.0
        if not math.isnan(metric) and (
            self.best_value is None or sign * metric > sign * self.best_value
        ):
            self.best_value, self.bad_validations = metric, 0
            return
        self.bad_validations += 1
        patience = self.options.early_stopping_patience
        if patience is not None and self.bad_validations >= patience:
            logger.info(
                "early stopping at iteration %d: %s did not improve for %d validations",
                self.step,
                self.options.best_metric,
                patience,
            )
            self.should_stop = True

    # --- checkpoints --------------------------------------------------------------------------
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
