"""What the trainer hands applications: the per-step training context.

:class:`StepContext` implements
:class:`~voxelflow.applications.base.TrainingContext` (autocast, scaled backward divided by the
accumulation steps, unscale + clip + step per named optimiser). :class:`TrainerOptions` is the
deprecated name of the trainer's settings, now the ``TrainingConfig`` itself.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING

import torch

from voxelflow.config.schema import TrainingConfig
from voxelflow.errors import ConfigError

if TYPE_CHECKING:
    from voxelflow.engine.trainer import Trainer


class TrainerOptions(TrainingConfig):
    """Deprecated: pass the ``TrainingConfig`` itself as ``Trainer(training=...)``.

    Kept for code written against voxelflow ≤ 0.x: it *is* a :class:`TrainingConfig` (same
    fields, defaults and checks) plus the three settings the trainer now takes as its own
    ``progress``/``tensorboard``/``max_epochs`` arguments.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     options = TrainerOptions(max_iterations=20, progress=False)
        >>> options.max_iterations, options.accumulate, options.progress
        (20, 1, False)
    """

    progress: bool = True
    tensorboard: bool = True
    max_epochs: int | None = None

    def model_post_init(self, context: object, /) -> None:
        warnings.warn(
            "TrainerOptions is deprecated: pass the TrainingConfig as Trainer(training=...) and "
            "progress=/tensorboard= to the Trainer",
            DeprecationWarning,
            stacklevel=4,
        )

    @classmethod
    def from_config(cls, training: TrainingConfig, **extra: object) -> TrainerOptions:
        """Options from a ``TrainingConfig`` section, with ``extra`` fields replaced."""
        return cls(**{**training.model_dump(), **extra})


class StepContext:
    """The :class:`~voxelflow.applications.base.TrainingContext` the trainer gives applications."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.device = trainer.device
        self.accumulate = trainer.training.accumulate
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
        clip = self._trainer.training.grad_clip
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
