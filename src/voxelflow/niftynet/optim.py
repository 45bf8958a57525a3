"""NiftyNet's ``reg_type = L1``: an optimiser whose gradients include ``decay · Σ|w|``.

NiftyNet (TensorFlow) added ``tf.contrib.layers.l1_regularizer(decay)`` = ``decay · Σ|w|`` to the
loss, so every step's gradient gained ``decay · sign(w)`` (TensorFlow's gradient of ``|w|`` at 0
is 0, as ``torch.sign``). torch's optimisers only have the L2 ``weight_decay``; this factory
wraps any registered voxelflow optimiser and adds that L1 gradient before each step. The
converter writes it as ``optimizer: {name: voxelflow.niftynet.optim:l1_regularised,
base: adam, l1: 1e-4, lr: ...}``.

Example:
    >>> import torch
    >>> weight = torch.nn.Parameter(torch.tensor([2.0, -3.0, 0.0]))
    >>> optimizer = l1_regularised([weight], base="sgd", l1=0.5, lr=1.0, momentum=0.0)
    >>> weight.grad = torch.zeros(3)
    >>> optimizer.step()  # only the penalty's gradient 0.5·sign(w)
    >>> weight.detach().tolist()
    [1.5, -2.5, 0.0]
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from voxelflow.errors import ConfigError

__all__ = ["l1_regularised"]


def l1_regularised(
    params: Any, *, base: str = "adam", l1: float = 0.0, **options: Any
) -> Optimizer:
    """The voxelflow optimiser ``base`` (with ``options``) minimising ``loss + l1 · Σ|w|``.

    Args:
        params: parameters or parameter groups.
        base: a registered optimiser name (``adam``, ``sgd`` ...).
        l1: the penalty's strength (NiftyNet's ``decay``), >= 0.
        **options: the base optimiser's options (``lr`` ...).

    Raises:
        ConfigError: a negative ``l1``, or an unknown base optimiser or option.
    """
    from voxelflow.optim import build_optimizer

    if l1 < 0:
        raise ConfigError(f"optimizer.l1: expected a value >= 0, got {l1}")
    if base == "voxelflow.niftynet.optim:l1_regularised":
        raise ConfigError("optimizer.base: expected a plain optimiser, got the L1 wrapper itself")
    optimizer = build_optimizer(base, params, **options)
    if l1 == 0:
        return optimizer
    plain_step = optimizer.step

    def step_with_l1(self: Optimizer, closure: Callable[[], float] | None = None) -> Any:
        with torch.no_grad():
            for group in self.param_groups:
                for parameter in group["params"]:
                    if parameter.grad is not None:
                        parameter.grad.add_(torch.sign(parameter), alpha=float(l1))
        return plain_step(closure) if closure is not None else plain_step()

    # a bound method, as torch's LR schedulers expect of optimizer.step (they wrap its __func__)
    optimizer.step = types.MethodType(step_with_l1, optimizer)  # type: ignore[method-assign]
    return optimizer
