"""Hooks: extend the training loop without subclassing the trainer.

A hook overrides any of the methods below; each receives the trainer, whose public attributes
(``step``, ``application``, ``run_logger``, ``last_metrics`` ...) it may read. Hooks run on
every rank; use ``trainer.context.is_main`` to act on rank 0 only. Setting
``trainer.should_stop = True`` ends training after the current iteration.

Example:
    >>> class PrintLoss(Hook):
    ...     def on_step_end(self, trainer, batch, losses):
    ...         logging.getLogger("demo").info("%d %.4f", trainer.step, float(losses["loss"]))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from voxelflow.registry import Registry

if TYPE_CHECKING:  # the trainer imports the hooks
    from voxelflow.engine.trainer import Trainer

logger = logging.getLogger(__name__)

HOOKS: Registry[type[Hook]] = Registry("hook")


class Hook:
    """Base class: every method is a no-op."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first iteration (after a resume has restored the state)."""

    def on_step_end(
        self, trainer: Trainer, batch: Mapping[str, Any], losses: Mapping[str, torch.Tensor]
    ) -> None:
        """After each optimiser iteration; ``batch`` is its last micro-batch."""

    def on_validation_end(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        """After a validation; ``metrics`` are already averaged over every subject of every rank."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """After a checkpoint was written (rank 0 only)."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last iteration, or when stopped early."""


class HookList(Hook):
    """Calls a sequence of hooks in order."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = list(hooks)

    def on_train_start(self, trainer: Trainer) -> None:
        for hook in self.hooks:
            hook.on_train_start(trainer)

    def on_step_end(
        self, trainer: Trainer, batch: Mapping[str, Any], losses: Mapping[str, torch.Tensor]
    ) -> None:
        for hook in self.hooks:
            hook.on_step_end(trainer, batch, losses)

    def on_validation_end(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        for hook in self.hooks:
            hook.on_validation_end(trainer, metrics)

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        for hook in self.hooks:
            hook.on_checkpoint(trainer, path)

    def on_train_end(self, trainer: Trainer) -> None:
        for hook in self.hooks:
            hook.on_train_end(trainer)


@HOOKS.register("stop_after", description="stop training after a given number of iterations")
class StopAfter(Hook):
    """Stop after ``iterations`` optimiser steps (e.g. to time a few iterations)."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations

    def on_step_end(
        self, trainer: Trainer, batch: Mapping[str, Any], losses: Mapping[str, torch.Tensor]
    ) -> None:
        if trainer.step >= self.iterations:
            trainer.should_stop = True
