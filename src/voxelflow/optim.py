"""Optimisers and per-iteration learning-rate schedules by name.

Optimisers (:data:`OPTIMIZERS`): ``sgd`` (momentum, Nesterov), ``adam``, ``adamw``, ``rmsprop``,
``adagrad``, each with ``weight_decay``. Schedules (:data:`SCHEDULERS`): ``constant``, ``step``,
``poly`` (nnU-Net), ``cosine``, ``linear`` and ``linear_warmup``.

Schedules are multiplicative factors of the base learning rate, a pure function of the
iteration, wrapped in :class:`torch.optim.lr_scheduler.LambdaLR` and stepped once per optimiser
step: the rate used at iteration ``i`` (0-based) is ``base_lr · factor(i)``. Resuming is exact:
build the same scheduler and ``load_state_dict`` (it restores the iteration count).

Warm-up is an option of **every** schedule: ``warmup_iterations = W`` ramps the factor linearly
``s + (1 - s)(i + 1)/(W + 1)`` for ``i < W`` (``s = warmup_start_factor``, default 0, so the
first step is never at lr 0), then runs the schedule over the remaining ``max_iterations - W``
iterations as if it started at 0. ``linear_warmup`` is ``constant`` with a warm-up.

Example:
    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = build_optimizer("sgd", model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    >>> scheduler = build_scheduler("poly", optimizer, max_iterations=1000, warmup_iterations=50)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from voxelflow.errors import ConfigError
from voxelflow.registry import Registry

OPTIMIZERS: Registry[Callable[..., Optimizer]] = Registry("optimizer")
SCHEDULERS: Registry[Callable[..., Callable[[int], float]]] = Registry("scheduler")
"""name → schedule class ``(*, max_iterations, warmup_iterations=0, warmup_start_factor=0, **options)``."""

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _check_positive(value: float, *, key: str, allow_zero: bool = False) -> float:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}: expected a value {bound}, got {value}")
    return float(value)


def _betas(betas: Sequence[float], *, key: str) -> tuple[float, float]:
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"{key}: expected two values in [0, 1), got {list(betas)}")
    return float(betas[0]), float(betas[1])


@OPTIMIZERS.register("sgd", description="SGD with optional (Nesterov) momentum and weight decay")
def sgd(
    params: Params,
    *,
    lr: float = 0.01,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Optimizer:
    """``torch.optim.SGD``; nnU-Net uses ``lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5``."""
    _check_positive(lr, key="optimizer.lr")
    _check_positive(momentum, key="optimizer.momentum", allow_zero=True)
    if nesterov and momentum == 0:
        raise ConfigError(
            "optimizer.nesterov: expected momentum > 0 with nesterov=true, got momentum 0"
        )
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov,
        weight_decay=_check_positive(weight_decay, key="optimizer.weight_decay", allow_zero=True),
    )  # fmt: skip


@OPTIMIZERS.register("adam", description="Adam (L2 weight decay added to the gradient)")
def adam(
    params: Params,
    *,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> Optimizer:
    """``torch.optim.Adam`` (NiftyNet's defaults: β 0.9/0.999, ε 1e-8).

    Args:
        amsgrad: use the AMSGrad variant (the maximum of past squared-gradient averages).
    """
    return _adam_family(torch.optim.Adam, params, lr, betas, eps, weight_decay, amsgrad)


def _adam_family(
    optimizer: type[torch.optim.Adam] | type[torch.optim.AdamW],
    params: Params,
    lr: float,
    betas: Sequence[float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
) -> Optimizer:
    """Adam or AdamW with their options checked (each keeps its own signature and defaults,
    which the registry reads)."""
    return optimizer(
        params,
        lr=_check_positive(lr, key="optimizer.lr"),
        betas=_betas(betas, key="optimizer.betas"),
        eps=_check_positive(eps, key="optimizer.eps"),
        weight_decay=_check_positive(weight_decay, key="optimizer.weight_decay", allow_zero=True),
        amsgrad=amsgrad,
    )


@OPTIMIZERS.register("adamw", description="AdamW (decoupled weight decay)")
def adamw(
    params: Params,
    *,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
) -> Optimizer:
    """``torch.optim.AdamW``: weight decay applied to the weights, not the gradient.

    Args:
        amsgrad: use the AMSGrad variant (the maximum of past squared-gradient averages).
    """
    return _adam_family(torch.optim.AdamW, params, lr, betas, eps, weight_decay, amsgrad)


@OPTIMIZERS.register("rmsprop", description="RMSprop (smoothing alpha, optional momentum)")
def rmsprop(
    params: Params,
    *,
    lr: float = 1e-3,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    centered: bool = False,
) -> Optimizer:
    """``torch.optim.RMSprop`` (NiftyNet's TF default was ``alpha=0.9, eps=1e-10``).

    Args:
        alpha: smoothing constant of the running average of squared gradients.
        centered: divide by the variance of the gradient (its centred second moment).
    """
    return torch.optim.RMSprop(
        params,
        lr=_check_positive(lr, key="optimizer.lr"),
        alpha=_check_positive(alpha, key="optimizer.alpha"),
        eps=_check_positive(eps, key="optimizer.eps"),
        momentum=_check_positive(momentum, key="optimizer.momentum", allow_zero=True),
        weight_decay=_check_positive(weight_decay, key="optimizer.weight_decay", allow_zero=True),
        centered=centered,
    )


@OPTIMIZERS.register("adagrad", description="Adagrad (per-parameter accumulated squared gradients)")
def adagrad(
    params: Params,
    *,
    lr: float = 1e-2,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
) -> Optimizer:
    """``torch.optim.Adagrad`` (NiftyNet's TF default accumulator was 0.1).

    Args:
        initial_accumulator_value: starting value of the accumulated squared gradients.
    """
    return torch.optim.Adagrad(
        params,
        lr=_check_positive(lr, key="optimizer.lr"),
        initial_accumulator_value=_check_positive(
            initial_accumulator_value, key="optimizer.initial_accumulator_value", allow_zero=True
        ),
        eps=_check_positive(eps, key="optimizer.eps"),
        weight_decay=_check_positive(weight_decay, key="optimizer.weight_decay", allow_zero=True),
    )


def build_optimizer(name: str, params: Params, **kwargs: Any) -> Optimizer:
    """Build the optimiser registered as ``name`` (or a plugin ``pkg.mod:factory``).

    Args:
        name: ``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad`` or a plugin path.
        params: parameters or parameter groups.
        **kwargs: the optimiser's options (``lr``, ``weight_decay``, ...).

    Raises:
        RegistryError: unknown name. ConfigError: unknown or invalid option.
    """
    return OPTIMIZERS.build(name, kwargs, key="optimizer", params=params)


# ---------------------------------------------------------------------------- schedules
@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Base of the schedules: a learning-rate factor as a pure function of the iteration.

    Args:
        max_iterations: optimiser steps in the whole run (T).
        warmup_iterations: W, iterations of linear warm-up before the schedule starts.
        warmup_start_factor: s, the factor the warm-up starts from.

    The factor is ``s + (1 - s)(i + 1)/(W + 1)`` for ``i < W``, then ``decay(i - W, T - W)``.
    Instances hold only numbers, so a ``LambdaLR`` state dict containing them loads with
    ``weights_only=True``.
    """

    max_iterations: int
    warmup_iterations: int = 0
    warmup_start_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.max_iterations < 0:
            raise ConfigError(
                f"training.max_iterations: expected a value >= 0, got {self.max_iterations}"
            )
        warmup = self.warmup_iterations
        if warmup < 0 or (warmup and warmup >= max(self.max_iterations, 1)):
            raise ConfigError(
                "scheduler.warmup_iterations: expected 0 <= value < max_iterations "
                f"({self.max_iterations}), got {warmup}"
            )
        if not 0.0 <= self.warmup_start_factor <= 1.0:
            raise ConfigError(
                "scheduler.warmup_start_factor: expected a value in [0, 1], "
                f"got {self.warmup_start_factor}"
            )

    def decay(self, iteration: int, span: int) -> float:
        """The factor ``iteration`` steps after the warm-up, of ``span`` steps in all."""
        raise NotImplementedError

    def __call__(self, iteration: int) -> float:
        """The factor at ``iteration`` (0-based)."""
        warmup = self.warmup_iterations
        if iteration < warmup:
            ramp = (iteration + 1) / (warmup + 1)
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * ramp
        return self.decay(iteration - warmup, self.max_iterations - warmup)


def _progress(iteration: int, span: int) -> float:
    """``min(i, T) / T`` in [0, 1] (0 when T is 0)."""
    if span <= 0:
        return 0.0
    return min(max(iteration, 0), span) / span


@SCHEDULERS.register("constant", description="constant learning rate")
@dataclass(frozen=True, kw_only=True)
class ConstantSchedule(Schedule):
    """Factor 1 at every iteration (after the optional warm-up)."""

    def decay(self, iteration: int, span: int) -> float:
        """Always 1."""
        return 1.0


@SCHEDULERS.register("linear_warmup", description="linear warm-up, then constant")
@dataclass(frozen=True, kw_only=True)
class LinearWarmupSchedule(ConstantSchedule):
    """``constant`` with a required warm-up (``warmup_iterations`` > 0)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup_iterations == 0:
            raise ConfigError(
                "scheduler.warmup_iterations: expected a value > 0 for 'linear_warmup', got 0"
            )


@SCHEDULERS.register(
    "step", description="multiply by gamma every step_size iterations (or at milestones)"
)
@dataclass(frozen=True, kw_only=True)
class StepSchedule(Schedule):
    """``gamma ** k``: k = ``i // step_size``, or the number of ``milestones`` ≤ i.

    Args:
        step_size: iterations between decays (or give ``milestones``).
        milestones: iterations (counted after the warm-up) where the rate is multiplied by gamma.
        gamma: the decay factor.
    """

    step_size: int | None = None
    milestones: Sequence[int] | None = None
    gamma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.step_size is None) == (self.milestones is None):
            raise ConfigError(
                f"scheduler: expected exactly one of step_size or milestones for 'step', got "
                f"step_size={self.step_size}, milestones={self.milestones}"
            )
        if self.step_size is not None and self.step_size < 1:
            raise ConfigError(
                f"scheduler.step_size: expected an integer >= 1, got {self.step_size}"
            )
        _check_positive(self.gamma, key="scheduler.gamma")

    def decay(self, iteration: int, span: int) -> float:
        """``gamma ** k``."""
        if self.step_size is not None:
            decays = iteration // self.step_size
        else:
            decays = sum(1 for milestone in self.milestones or () if iteration >= milestone)
        return self.gamma**decays


@SCHEDULERS.register("poly", description="nnU-Net polynomial decay (1 - i/max)^0.9")
@dataclass(frozen=True, kw_only=True)
class PolySchedule(Schedule):
    """``(1 - i / T) ** exponent`` (nnU-Net: exponent 0.9), 0 from ``i = T`` on.

    Args:
        exponent: power of the decay (larger decays faster early).
    """

    exponent: float = 0.9

    def decay(self, iteration: int, span: int) -> float:
        """Polynomial decay."""
        return (1.0 - _progress(iteration, span)) ** self.exponent


@SCHEDULERS.register("cosine", description="cosine annealing to min_factor at max_iterations")
@dataclass(frozen=True, kw_only=True)
class CosineSchedule(Schedule):
    """``m + (1 - m) · ½ (1 + cos(π i / T))``, m = ``min_factor``.

    Args:
        min_factor: m, the factor of the initial learning rate reached at the end.
    """

    min_factor: float = 0.0

    def decay(self, iteration: int, span: int) -> float:
        """Cosine annealing."""
        cosine = 0.5 * (1.0 + math.cos(math.pi * _progress(iteration, span)))
        return self.min_factor + (1.0 - self.min_factor) * cosine


@SCHEDULERS.register("linear", description="linear decay to end_factor at max_iterations")
@dataclass(frozen=True, kw_only=True)
class LinearSchedule(Schedule):
    """``1 + (e - 1) · i / T``, e = ``end_factor``.

    Args:
        end_factor: e, the factor of the initial learning rate reached at the end.
    """

    end_factor: float = 0.0

    def decay(self, iteration: int, span: int) -> float:
        """Linear decay."""
        return 1.0 + (self.end_factor - 1.0) * _progress(iteration, span)


def schedule_factor(name: str, *, max_iterations: int, **kwargs: Any) -> Callable[[int], float]:
    """The learning-rate factor ``iteration -> float`` of a named schedule (warm-up included).

    Raises:
        RegistryError: unknown name. ConfigError: invalid or unknown option.
    """
    return SCHEDULERS.build(name, kwargs, key="scheduler", max_iterations=max_iterations)


def build_scheduler(
    name: str, optimizer: Optimizer, *, max_iterations: int, **kwargs: Any
) -> LambdaLR:
    """A per-iteration :class:`LambdaLR` following the named schedule.

    Call ``scheduler.step()`` after every ``optimizer.step()``. The state dict holds only plain
    numbers, so it loads with ``torch.load(weights_only=True)`` and resumes exactly.

    Args:
        name: ``constant``, ``step``, ``poly``, ``cosine``, ``linear``, ``linear_warmup`` or a
            plugin path to a factory ``(*, max_iterations, **options) -> (iteration -> factor)``.
        optimizer: the optimiser whose learning rates are scaled.
        max_iterations: optimiser steps in the whole run.
        **kwargs: the schedule's options, including ``warmup_iterations`` and
            ``warmup_start_factor``.

    Raises:
        RegistryError: unknown name. ConfigError: invalid or unknown option.
    """
    return LambdaLR(
        optimizer, lr_lambda=schedule_factor(name, max_iterations=max_iterations, **kwargs)
    )
