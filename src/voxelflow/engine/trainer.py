"""The generic training loop: it knows optimisers, precision, DDP and checkpoints, not medicine.

An iteration is one optimiser update made of ``accumulate`` micro-batches. The
:class:`~voxelflow.applications.base.Application` turns each batch into losses; the trainer
moves batches to the device, runs them under autocast, steps optimisers and per-iteration
schedulers, validates every ``validate_every`` iterations on whole subjects (sharded over
ranks, metrics gathered per subject, averaged over subjects), keeps the last-k and best-k
checkpoints, stops early on a plateau, logs on rank 0 and resumes exactly from the last
checkpoint of its run folder (layout: see :class:`~voxelflow.engine.run_dir.RunDir`).

Training data is any iterable of dict batches, already sharded for this rank. Its position is
saved through its own ``state_dict``/``load_state_dict`` (a stateful loader, or a DataLoader
over a :class:`~voxelflow.sampling.queue.PatchQueue`); anything else is fast-forwarded by
skipping the batches already consumed.

Example:
    >>> training = TrainingConfig(max_iterations=100)
    >>> trainer = Trainer(app, loader, run_dir="runs/x", training=training)  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from voxelflow.applications.base import Application, OptimizationSettings
from voxelflow.config.schema import TrainingConfig
from voxelflow.engine import distributed
from voxelflow.engine.checkpoint import (
    CheckpointDamagedError,
    CheckpointManager,
)
from voxelflow.engine.dead_workers import dead_worker_error, stop_workers
from voxelflow.engine.device import (
    move_to_device,
    resolve_precision,
    seed_everything,
    select_device,
)
from voxelflow.engine.hooks import Hook, HookList
from voxelflow.engine.logging import RunLogger
from voxelflow.engine.run_dir import RunLock, config_as_dict
from voxelflow.engine.step import StepContext, TrainerOptions
from voxelflow.engine.trainer_state import TrainerState, checkpoint_state, restore_checkpoint
from voxelflow.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from types import FrameType

    from voxelflow.config.schema import ExperimentConfig
    from voxelflow.data.cached import CachedSubject

logger = logging.getLogger(__name__)

#: signals that stop training after the current step with a checkpoint, and their exit codes.
STOP_SIGNALS: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _training_settings(
    training: TrainingConfig | None, options: TrainingConfig | None
) -> TrainingConfig:
    """The loop settings given as ``training`` (or as the deprecated ``options``)."""
    if options is None:
        return training or TrainingConfig()
    if training is not None:
        raise ConfigError("Trainer: expected training= or the deprecated options=, got both")
    warnings.warn(
        "Trainer(options=...) is deprecated: pass the TrainingConfig as Trainer(training=...)",
        DeprecationWarning,
        stacklevel=3,
    )
    return options


class Trainer:
    """Train an application on an iterable of batches.

    Args:
        application: the application (its modules may be on any device; they are moved).
        train_data: iterable of dict batches for this rank (re-iterated for every epoch).
        run_dir: the run folder (checkpoints, logs).
        training: the loop settings, the experiment's ``training`` section (its ``hooks`` are
            built by the caller and passed as ``hooks``).
        optimization: optimiser and schedule for :meth:`Application.configure_optimizers`.
        validation_data: whole validation subjects, the same full list on every rank.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        hooks: callbacks.
        config: the resolved experiment, saved in checkpoints and compared on resume.
        resume: continue from the run folder's last checkpoint when there is one.
        progress: show progress bars (rank 0).
        tensorboard: write TensorBoard logs (rank 0).
        max_epochs: also stop after this many passes over ``train_data`` (None: no limit).
        options: deprecated name of ``training``.
        batch_transform: applied to every training batch on the device before the step (the
            batched augmentation of ``training.augmentation_device``); ``None``: nothing.

    Attributes:
        state: the run's counters (:class:`~voxelflow.engine.trainer_state.TrainerState`).

    Shape:
        train_data batches: role → ``(B, C, *window)`` tensors (plus per-window fields).

    Example:
        >>> training = TrainingConfig(max_iterations=50)
        >>> trainer = Trainer(application, loader, run_dir="runs/demo", training=training)  # doctest: +SKIP
        >>> metrics = trainer.fit()  # doctest: +SKIP
    """

    def __init__(
        self,
        application: Application,
        train_data: Iterable[Mapping[str, Any]],
        *,
        run_dir: str | Path,
        training: TrainingConfig | None = None,
        optimization: OptimizationSettings | None = None,
        validation_data: Sequence[CachedSubject] = (),
        device: str | torch.device = "auto",
        hooks: Sequence[Hook] = (),
        config: ExperimentConfig | Mapping[str, Any] | None = None,
        resume: bool = True,
        progress: bool = True,
        tensorboard: bool = True,
        max_epochs: int | None = None,
        options: TrainingConfig | None = None,
        batch_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.batch_transform = batch_transform  # batched device augmentation, after the move
        self.training = _training_settings(training, options)
        if isinstance(self.training, TrainerOptions):  # the deprecated options carry both
            progress, tensorboard = self.training.progress, self.training.tensorboard
            max_epochs = self.training.max_epochs
        self.progress, self.tensorboard, self.max_epochs = progress, tensorboard, max_epochs
        self.state = TrainerState()
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
        self.precision = resolve_precision(self.training.amp, self.device)
        self.hooks = HookList(hooks)
        self.config = config_as_dict(config) if config is not None else None
        self._build_optimisation(optimization)
        self.checkpoints = CheckpointManager(
            self.run_dir / "checkpoints",
            keep_last=self.training.keep_last,
            keep_best=self.training.keep_best,
            best_mode=self.training.best_mode,
        )
        self.run_logger: RunLogger | None = None

    def _build_optimisation(self, optimization: OptimizationSettings | None) -> None:
        """Seed, move modules to the device, build optimisers and scalers, wrap for DDP/compile."""
        application, training = self.application, self.training
        if application.manual_optimization and training.accumulate > 1:
            raise ConfigError(
                f"training.accumulate: expected 1 for {application.name} (it steps its own "
                f"optimisers), got {training.accumulate}"
            )
        seed_everything(training.seed + self.context.rank, deterministic=training.deterministic)
        for module in application.modules.values():
            module.to(self.device)
        settings = optimization or OptimizationSettings(max_iterations=training.max_iterations)
        self.optimizers = application.configure_optimizers(settings)
        self.scalers = {
            name: torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
            for name in self.optimizers
        }
        self.train_modules = {name: self._wrap(m) for name, m in application.modules.items()}

    def _wrap(self, module: nn.Module) -> nn.Module:
        wrapped = distributed.wrap_data_parallel(module, self.device)
        if not self.training.compile:
            return wrapped
        # compiling a module returns an OptimizedModule (an nn.Module); torch's stub says Callable
        return cast(nn.Module, torch.compile(wrapped))

    # --- what hooks read (documented in engine/hooks.py) ----------------------------------------
    @property
    def step(self) -> int:
        """Optimiser updates done so far (``state.step``)."""
        return self.state.step

    @property
    def should_stop(self) -> bool:
        """Set it to True (from a hook) to end training after the current iteration."""
        return self.state.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self.state.should_stop = value

    @property
    def last_metrics(self) -> dict[str, float]:
        """The last validation's metrics (averaged over subjects)."""
        return self.state.last_metrics

    # --- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (gathers RNG and data states from every rank)."""
        return checkpoint_state(self)

    def save(self, *, metric: float | None = None) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank must call)."""
        state = self.state_dict()
        self.state.last_saved_step = self.state.step
        if not self.context.is_main:
            return None
        path = self.checkpoints.save(state, step=self.state.step, metric=metric)
        self.hooks.on_checkpoint(self, path)
        return path

    def load(self, path: Path) -> None:
        """Restore the full training state from a checkpoint."""
        restore_checkpoint(self, path)

    # --- the loop -----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``max_iterations`` (or ``max_epochs``, or early stopping).

        Returns:
            The last validation metrics plus ``step`` and ``best`` (the best metric value).
        """
        lock = RunLock(self.run_dir).acquire() if self.context.is_main else None
        try:
            return self._fit()
        except RuntimeError as exc:  # PyTorch's SIGCHLD handler may raise again while closing
            failure = self._dead_worker_failure(exc)
            if failure is None:
                raise
            raise failure from exc
        finally:
            if lock is not None:
                lock.release()

    def _dead_worker_failure(self, error: RuntimeError) -> DataError | None:
        """A dead DataLoader worker as a DataError naming it (None for other errors); the
        remaining workers are shut down so that PyTorch does not report it again."""
        failure = dead_worker_error(
            error, self.train_data, rank=self.context.rank,
            world_size=self.context.world_size, step=self.state.step,
        )  # fmt: skip
        if failure is not None:
            stop_workers(self.train_data)
        return failure

    def _resume_from_latest_intact(self) -> None:
        """Load the newest checkpoint that reads; damaged newer ones are renamed ``*.damaged``."""
        damaged: list[Path] = []
        for path in self.checkpoints.paths_newest_first():
            try:
                self.load(path)
            except CheckpointDamagedError as exc:
                damaged.append(path)
                logger.warning("%s", exc)
                continue
            break
        else:
            if damaged:
                self._set_aside(damaged)
                raise CheckpointError(
                    f"{self.checkpoints.directory}: every checkpoint is damaged "
                    f"({', '.join(p.name for p in damaged)}); renamed to *.damaged"
                )
            return
        if damaged:
            logger.warning(
                "checkpoint %s is damaged; resuming from the newest intact one, %s",
                ", ".join(str(p) for p in damaged), path,
            )  # fmt: skip
            self._set_aside(damaged)

    def _set_aside(self, damaged: list[Path]) -> None:
        if not self.context.is_main:
            return
        for path in damaged:
            target = self.checkpoints.set_aside_damaged(path)
            logger.warning("damaged checkpoint %s renamed to %s", path, target.name)

    def _fit(self) -> dict[str, float]:
        if self.resume:
            self._resume_from_latest_intact()
        self.run_logger = RunLogger(
            self.run_dir,
            total_iterations=self.training.max_iterations,
            start_iteration=self.state.step,
            enabled=self.context.is_main,
            progress=self.progress,
            tensorboard=self.tensorboard,
        )
        previous = self._install_stop_handlers()
        try:
            self._loop()
        except RuntimeError as exc:  # a dead DataLoader worker: name it, no traceback
            failure = self._dead_worker_failure(exc)
            if failure is None:
                raise
            raise failure from exc
        finally:
            self._restore_handlers(previous)
            self.run_logger.close()
        if self.state.stop_signal is not None:
            self._stop_on_signal()
        summary = {**self.state.last_metrics, "step": float(self.state.step)}
        if self.state.best_value is not None:
            summary["best"] = self.state.best_value
        return summary

    def _install_stop_handlers(self) -> dict[int, Any]:
        """Make SIGINT/SIGTERM set a flag read after each step; returns the previous handlers."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(number: int, _frame: FrameType | None) -> None:
            self.state.stop_signal = number  # saved by the loop after this step, never from here

        previous: dict[int, Any] = {}
        for number in STOP_SIGNALS:
            previous[number] = signal.getsignal(number)
            signal.signal(number, handler)
        return previous

    @staticmethod
    def _restore_handlers(previous: Mapping[int, Any]) -> None:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def _agreed_stop_signal(self) -> int | None:
        """The stop signal any rank has received, the same on every rank (after each step).

        Under ``torchrun`` a signal may reach one rank only (a ``kill`` of one pid, a scheduler
        signalling one process): a rank stopping alone would leave the others waiting forever in
        the next gradient all-reduce. The largest signal number wins (SIGTERM over SIGINT).
        """
        if not self.context.is_distributed:
            return self.state.stop_signal
        import torch.distributed as dist

        # nccl reduces CUDA tensors only; gloo CPU ones
        where = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        flag = torch.tensor([self.state.stop_signal or 0], dtype=torch.int64, device=where)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _stop_on_signal(self) -> None:
        number = self.state.stop_signal
        assert number is not None
        if self.state.step > 0 and self.state.last_saved_step != self.state.step:
            self.save()  # every rank agreed to stop at this step; rank 0 writes
        if self.context.is_main:
            where = self.checkpoints.last_path()
            print(
                f"voxelflow: {signal.Signals(number).name} received: checkpoint of iteration "
                f"{self.state.step} written to {where}; run the same command again to resume",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(STOP_SIGNALS[number])

    def _loop(self) -> None:
        ctx = StepContext(self)
        batches = self._batches()
        self.application.train()
        self.hooks.on_train_start(self)
        logger.info(
            "training %s from iteration %d to %d (seed %d%s, %d rank(s), %s)",
            self.application.name, self.state.step, self.training.max_iterations, self.training.seed,
            ", deterministic" if self.training.deterministic else "", self.context.world_size, self.device,
        )  # fmt: skip
        first = True
        while self.state.step < self.training.max_iterations and not self.state.should_stop:
            ctx.iteration = self.state.step
            try:
                batch, losses, data_time, compute_time = self._iteration(batches, ctx)
            except StopIteration:  # max_epochs reached
                self._finish_last_epoch(ctx)
                break
            self.state.step += 1
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
            # only the agreed value stops (every rank together); a signal arriving during the
            # agreement stays set locally and is agreed on after the next step
            agreed = self._agreed_stop_signal()
            if agreed is not None:
                self.state.stop_signal = agreed
                return
        self.hooks.on_train_end(self)

    def _finish_last_epoch(self, ctx: StepContext) -> None:
        if self.state.step == 0 or self.state.last_saved_step == self.state.step:
            return
        self._log_interval(ctx)
        metric = self.validate() if self.training.validate_every else None
        self.save(metric=metric)

    def _iteration(
        self, batches: Iterator[Mapping[str, Any]], ctx: StepContext
    ) -> tuple[Any, dict[str, torch.Tensor], float, float]:
        data_time = compute_time = 0.0
        totals: dict[str, torch.Tensor] = {}
        for micro in range(self.training.accumulate):
            start = time.perf_counter()
            # collated batches are dicts of tensors, and moving keeps the structure
            batch = cast(dict[str, Any], move_to_device(next(batches), self.device))
            computed = time.perf_counter()
            if self.batch_transform is not None:
                batch = self.batch_transform(batch)
            with (
                self._no_sync(last=micro == self.training.accumulate - 1),
                self.application.using_modules(self.train_modules),
            ):
                losses = self.application.train_step(batch, ctx)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value.detach() / self.training.accumulate
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

    def _no_sync(self, *, last: bool) -> contextlib.ExitStack[bool | None]:
        stack = contextlib.ExitStack()
        if not last:
            for module in self.train_modules.values():
                inner = getattr(module, "_orig_mod", module)
                if isinstance(inner, nn.parallel.DistributedDataParallel):
                    stack.enter_context(inner.no_sync())
        return stack

    def _batches(self) -> Iterator[Mapping[str, Any]]:
        skip = self.state.skip_batches
        while True:
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(self.state.epoch)
            produced = False
            for batch in self.train_data:
                produced = True
                if skip > 0:
                    skip -= 1
                    continue
                self.state.batches_consumed += 1
                yield batch
            if not produced:
                raise DataError("training data: expected at least one batch per epoch, got none")
            self.state.epoch += 1
            if (
                self.max_epochs is not None
                and self.state.epoch >= self.max_epochs
            ):
                return

    def _accumulate(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            self.state.sums[name] = self.state.sums.get(name, 0.0) + value
        self.state.sums["count"] = self.state.sums.get("count", 0) + 1

    def _after_iteration(
        self, batch: Mapping[str, Any], losses: Mapping[str, torch.Tensor], ctx: StepContext
    ) -> None:
        training, step = self.training, self.state.step
        assert self.run_logger is not None  # set by fit()
        final = step >= training.max_iterations
        logged = self._log_interval(ctx) if step % training.log_every == 0 or final else {}
        postfix = {"loss": logged["train/loss"]} if "train/loss" in logged else {}
        self.run_logger.update_progress(1, **postfix)
        if training.image_every and step % training.image_every == 0 and self.context.is_main:
            self.run_logger.log_images(step, self.application.example_images(batch, losses))
        metric = None
        if training.validate_every and (step % training.validate_every == 0 or final):
            metric = self.validate()
        # rank 0 alone knows the kept checkpoints: its decision holds for every rank
        among_best = metric is not None and distributed.broadcast_object(
            self.checkpoints.is_among_best(metric)
        )
        if step % training.checkpoint_every == 0 or final or self.state.should_stop or among_best:
            self.save(metric=metric)

    def _log_interval(self, ctx: StepContext) -> dict[str, float]:
        count = self.state.sums.pop("count", 1)
        scalars = {name: float(value) / count for name, value in self.state.sums.items()}
        self.state.sums = {}
        for name, (opt, _) in self.optimizers.items():
            scalars[f"lr/{name}"] = opt.param_groups[0]["lr"]
        scalars.update({f"grad_norm/{name}": float(v) for name, v in ctx.grad_norms.items()})
        self.run_logger.log_scalars(self.state.step, scalars)  # type: ignore[union-attr]
        return scalars

    def _log_graph(self, batch: Mapping[str, Any]) -> None:
        example = self.application.graph_input(batch)
        if example is not None and self.run_logger is not None:
            role, tensor = example
            self.run_logger.log_graph(self.application.modules[role], tensor)

    # --- validation ---------------------------------------------------------------------------
    def validate(self) -> float | None:
        """Validate on every subject (sharded over ranks); returns the ``best_metric`` value or None.

        Without validation subjects it says so once and returns None ('best' is then the last
        checkpoint, as :func:`~voxelflow.engine.checkpoint.find_checkpoint` reports).
        """
        if len(self.validation_data) == 0:
            if not getattr(self, "_said_no_validation", False):
                logger.info(
                    "no validation subjects (split.validation is 0): training without validation; "
                    "'best' will be the last checkpoint"
                )
                self._said_no_validation = True
            return None
        ctx = StepContext(self)
        ctx.iteration = self.state.step
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
        self.state.last_metrics = distributed.mean_over_subjects(
            metrics for _, metrics in per_subject
        )
        if self.run_logger is not None:
            self.run_logger.log_scalars(
                self.state.step, {f"val/{k}": v for k, v in self.state.last_metrics.items()}
            )
        shown = ", ".join(
            f"{k}={v:.4g}" for k, v in self.state.last_metrics.items() if "/" not in k
        )
        logger.info(
            "iteration %d: validation on %d subjects: %s", self.state.step, len(per_subject), shown
        )
        self.hooks.on_validation_end(self, self.state.last_metrics)
        metric = self.state.last_metrics.get(self.training.best_metric)
        if metric is None:
            logger.warning(
                "validation has no metric %r (training.best_metric); got %s",
                self.training.best_metric,
                sorted(self.state.last_metrics),
            )
            return None
        self._track_best(metric)
        return metric

    def _track_best(self, metric: float) -> None:
        sign = 1.0 if self.training.best_mode == "max" else -1.0
        if not math.isnan(metric) and (
            self.state.best_value is None or sign * metric > sign * self.state.best_value
        ):
            self.state.best_value, self.state.bad_validations = metric, 0
            return
        self.state.bad_validations += 1
        patience = self.training.early_stopping_patience
        if patience is not None and self.state.bad_validations >= patience:
            logger.info(
                "early stopping at iteration %d: %s did not improve for %d validations",
                self.state.step,
                self.training.best_metric,
                patience,
            )
            self.state.should_stop = True
