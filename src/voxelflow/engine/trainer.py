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
    >>> options = TrainerOptions(max_iterations=100)
    >>> trainer = Trainer(app, loader, run_dir="runs/x", options=options)  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxelflow.applications.base import Application, OptimizationSettings
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
from voxelflow.engine.trainer_state import TrainerStateMixin
from voxelflow.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

#: signals that stop training after the current step with a checkpoint, and their exit codes.
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Trainer(TrainerStateMixin):
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
        batch_transform: applied to every training batch on the device before the step (the
            batched augmentation of ``training.augmentation_device``); ``None``: nothing.

    Shape:
        train_data batches: role → ``(B, C, *window)`` tensors (plus per-window fields).

    Example:
        >>> options = TrainerOptions(max_iterations=50)
        >>> trainer = Trainer(application, loader, run_dir="runs/demo", options=options)  # doctest: +SKIP
        >>> metrics = trainer.fit()  # doctest: +SKIP
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
        batch_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.options = options or TrainerOptions()
        self.batch_transform = batch_transform  # batched device augmentation, after the move
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
        self.stop_signal: int | None = None

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
            world_size=self.context.world_size, step=self.step,
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
            total_iterations=self.options.max_iterations,
            start_iteration=self.step,
            enabled=self.context.is_main,
            progress=self.options.progress,
            tensorboard=self.options.tensorboard,
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
        if self.stop_signal is not None:
            self._stop_on_signal()
        summary = {**self.last_metrics, "step": float(self.step)}
        if self.best_value is not None:
            summary["best"] = self.best_value
        return summary

    def _install_stop_handlers(self) -> dict[int, Any]:
        """Make SIGINT/SIGTERM set a flag read after each step; returns the previous handlers."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(number: int, _frame: Any) -> None:
            self.stop_signal = number  # saved by the loop after this step, never from here

        previous = {}
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
            return self.stop_signal
        import torch.distributed as dist

        # nccl reduces CUDA tensors only; gloo CPU ones
        where = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        flag = torch.tensor([self.stop_signal or 0], dtype=torch.int64, device=where)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _stop_on_signal(self) -> None:
        number = self.stop_signal
        assert number is not None
        if self.step > 0 and self._last_saved_step != self.step:
            self.save()  # every rank agreed to stop at this step; rank 0 writes
        if self.context.is_main:
            where = self.checkpoints.last_path()
            print(
                f"voxelflow: {signal.Signals(number).name} received: checkpoint of iteration "
                f"{self.step} written to {where}; run the same command again to resume",
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
            # only the agreed value stops (every rank together); a signal arriving during the
            # agreement stays set locally and is agreed on after the next step
            agreed = self._agreed_stop_signal()
            if agreed is not None:
                self.stop_signal = agreed
                return
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
            if self.batch_transform is not None:
                batch = self.batch_transform(batch)
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
