"""Regression losses: L1, L2 (mean squared error), RMSE, Huber and smooth L1.

Each is a mean over all elements, or with a ``weight`` map (a mask) a weighted mean
``Σ ℓ·w / max(Σ w, ε)`` with ``w`` broadcast over the channels. Unlike NiftyNet's ``L2Loss``
(TensorFlow's ``l2_loss``, a *sum* of ``r²/2``) ``l2`` is the mean of ``r²``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.losses import LOSSES
from voxelflow.losses._checks import EPSILON, check_prediction, compute_dtype


def prepare_regression(
    prediction: Tensor, target: Tensor, weight: Tensor | None, *, loss_name: str
) -> tuple[Tensor, Tensor | None]:
    """Residual ``prediction - target`` (at least float32) and the broadcast weight map.

    Raises:
        ShapeError: when target or weight does not match the prediction.
    """
    check_prediction(prediction, loss_name=loss_name, min_ndim=1)
    if not isinstance(target, Tensor) or target.shape != prediction.shape:
        got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ShapeError(
            f"{loss_name}: expected target of shape {tuple(prediction.shape)}, got {got}"
        )
    dtype = compute_dtype(prediction)
    residual = prediction.to(dtype) - target.to(dtype)
    if weight is None:
        return residual, None
    try:
        expanded = weight.to(dtype).expand_as(residual)
    except (RuntimeError, AttributeError) as exc:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ShapeError(
            f"{loss_name}: expected weight broadcastable to {tuple(prediction.shape)} "
            f"(e.g. (B, 1, *spatial)), got {got}"
        ) from exc
    return residual, expanded


def weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """Plain mean, or ``Σ values·weight / max(Σ weight, ε)``."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp_min(EPSILON)


class RegressionLoss(nn.Module):
    """Base: ``forward`` = weighted mean of :meth:`elementwise` of the residual."""

    loss_name = "regression loss"

    def elementwise(self, residual: Tensor) -> Tensor:
        """Per-element loss of the residual ``r = prediction - target``."""
        raise NotImplementedError

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar loss.

        Shape:
            prediction and target ``(B, C, *spatial)`` (any equal shapes); weight broadcastable
            to them, e.g. ``(B, 1, *spatial)``.
        """
        residual, expanded = prepare_regression(
            prediction, target, weight, loss_name=self.loss_name
        )
        return weighted_mean(self.elementwise(residual), expanded)


@LOSSES.register("l1", description="mean absolute error, optional mask")
class L1Loss(RegressionLoss):
    """Mean absolute error ``mean |p - g|`` (weighted mean with a mask)."""

    loss_name = "l1"

    def elementwise(self, residual: Tensor) -> Tensor:
        """``|r|``."""
        return residual.abs()


@LOSSES.register("l2", description="mean squared error (a mean, not NiftyNet's sum), optional mask")
class L2Loss(RegressionLoss):
    """Mean squared error ``mean (p - g)²`` (weighted mean with a mask)."""

    loss_name = "l2"

    def elementwise(self, residual: Tensor) -> Tensor:
        """``r²``."""
        return residual * residual


@LOSSES.register("rmse", description="root mean squared error, optional mask")
class RMSELoss(RegressionLoss):
    """Root mean squared error ``sqrt(mean (p - g)²)``.

    The mean is clamped at the smallest positive float before the square root, so the gradient
    at a perfect prediction is 0 rather than NaN.
    """

    loss_name = "rmse"

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar RMSE."""
        residual, expanded = prepare_regression(
            prediction, target, weight, loss_name=self.loss_name
        )
        mean_square = weighted_mean(residual * residual, expanded)
        return torch.sqrt(mean_square.clamp_min(torch.finfo(mean_square.dtype).tiny))


@LOSSES.register("huber", description="Huber loss (quadratic below delta, linear above)")
class HuberLoss(RegressionLoss):
    """Huber loss: ``r²/2`` for ``|r| ≤ δ``, else ``δ (|r| - δ/2)`` (``torch.nn.HuberLoss``).

    Args:
        delta: the threshold δ > 0 (NiftyNet: 1).
    """

    loss_name = "huber"

    def __init__(self, *, delta: float = 1.0) -> None:
        super().__init__()
        if delta <= 0:
            raise ConfigError(f"huber.delta: expected a value > 0, got {delta}")
        self.delta = float(delta)

    def elementwise(self, residual: Tensor) -> Tensor:
        """Huber of ``r``."""
        absolute = residual.abs()
        quadratic = 0.5 * residual * residual
        linear = self.delta * (absolute - 0.5 * self.delta)
        return torch.where(absolute <= self.delta, quadratic, linear)


@LOSSES.register("smooth_l1", description="smooth L1 (Huber divided by beta)")
class SmoothL1Loss(RegressionLoss):
    """Smooth L1: ``r²/(2β)`` for ``|r| < β``, else ``|r| - β/2`` (``torch.nn.SmoothL1Loss``).

    This is Huber divided by β. NiftyNet's ``SmoothL1`` is a different three-branch curve; the
    torch/Fast R-CNN definition is used here.

    Args:
        beta: the threshold β > 0.
    """

    loss_name = "smooth_l1"

    def __init__(self, *, beta: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ConfigError(f"smooth_l1.beta: expected a value > 0, got {beta}")
        self.beta = float(beta)

    def elementwise(self, residual: Tensor) -> Tensor:
        """Smooth L1 of ``r``."""
        absolute = residual.abs()
        quadratic = 0.5 * residual * residual / self.beta
        return torch.where(absolute < self.beta, quadratic, absolute - 0.5 * self.beta)
