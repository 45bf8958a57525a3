"""What the trainer hands applications: loop options and the per-step training context.

:class:`TrainerOptions` mirrors the ``training`` config section; :class:`StepContext` implements
:class:`~voxelflow.applications.base.TrainingContext` (autocast, scaled backward divided by the
accumulation steps, unscale + clip + step per named optimiser).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.engine.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """Loop settings (the fields of ``training`` in the experiment config, plus a few extras).

    Example:
        >>> options = TrainerOptions(max_iterations=20, validate_every=10)
        >>> options.max_iterations, options.validate_every, options.accumulate
        (20, 10, 1)
        >>> from voxelflow.config.schema import TrainingConfig
        >>> TrainerOptions.from_config(TrainingConfig(max_iterations=5), progress=False).max_iterations
        5
    """

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
