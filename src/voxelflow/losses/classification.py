"""Image-level classification losses: cross-entropy with label smoothing, and focal loss.

``prediction`` is logits ``(B, C)``; ``target`` is class indices ``(B,)`` or ``(B, 1)``, or
probabilities ``(B, C)``; ``weight`` is an optional per-sample weight ``(B,)``. A single logit
(``C == 1``) means binary classification with a sigmoid and a 0/1 target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxelflow.errors import ConfigError, DataError, ShapeError
from voxelflow.losses import LOSSES
from voxelflow.losses._checks import (
    EPSILON,
    check_class_weights,
    check_prediction,
    compute_dtype,
)


def classification_target(prediction: Tensor, target: Tensor, *, loss_name: str) -> Tensor:
    """Return the target as probabilities ``(B, C)`` (for ``C == 1``: the positive probability).

    Raises:
        ShapeError: wrong shapes.
        DataError: class indices out of range.
    """
    check_prediction(prediction, loss_name=loss_name, min_ndim=2)
    batch, channels = prediction.shape[0], prediction.shape[1]
    if prediction.ndim != 2:
        raise ShapeError(
            f"{loss_name}: expected prediction of shape (B, C), got {tuple(prediction.shape)}"
        )
    dtype = compute_dtype(prediction)
    if not isinstance(target, Tensor):
        raise ShapeError(
            f"{loss_name}: expected target as a torch.Tensor, got {type(target).__name__}"
        )
    if target.shape == prediction.shape:
        return target.to(dtype)
    if tuple(target.shape) not in ((batch,), (batch, 1)):
        raise ShapeError(
            f"{loss_name}: expected target of shape ({batch},), ({batch}, 1) or {tuple(prediction.shape)}, "
            f"got {tuple(target.shape)}"
        )
    labels = target.reshape(batch)
    if labels.is_floating_point() and bool((labels != torch.round(labels)).any()):
        raise DataError(f"{loss_name}: expected integer class indices, got fractional values")
    labels = labels.long()
    upper = max(channels, 2) - 1
    if int(labels.min()) < 0 or int(labels.max()) > upper:
        raise DataError(
            f"{loss_name}: expected class indices in [0, {upper}], got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    if channels == 1:
        return labels.to(dtype).unsqueeze(1)
    return F.one_hot(labels, channels).to(dtype)


def sample_weighted_mean(per_sample: Tensor, weight: Tensor | None, *, loss_name: str) -> Tensor:
    """Mean over samples, or ``Σ ℓ w / max(Σ w, ε)`` with per-sample weights ``(B,)``.

    Raises:
        ShapeError: when the weight is not ``(B,)`` or ``(B, 1)``.
    """
    if weight is None:
        return per_sample.mean()
    batch = per_sample.shape[0]
    if not isinstance(weight, Tensor) or weight.numel() != batch:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ShapeError(
            f"{loss_name}: expected a per-sample weight of shape ({batch},), got {got}"
        )
    weight = weight.reshape(batch).to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp_min(EPSILON)


def smooth_labels(target: Tensor, smoothing: float) -> Tensor:
    """``(1 - ε) t + ε / K`` with K classes (K = 2 for a single binary logit)."""
    classes = max(target.shape[1], 2)
    return target * (1.0 - smoothing) + smoothing / classes


def _check_fraction(value: float, *, key: str) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}: expected a value in [0, 1), got {value}")
    return float(value)


@LOSSES.register("classification_ce", description="image-level cross-entropy with label smoothing")
class ClassificationCrossEntropyLoss(nn.Module):
    """Cross-entropy for image-level classes, with label smoothing and class weights.

    ``ℓ_b = -Σ_c k_c t_c log softmax(z)_c`` with ``t`` the (smoothed) target; the loss is the
    mean over samples (weighted by ``weight``). For one logit, the binary cross-entropy. Class
    weights scale each term but are not divided out (torch's ``weight=`` divides the batch sum by
    ``Σ k_{y_b}``; the two agree without class weights).

    Args:
        label_smoothing: ε in ``(1 - ε) t + ε / C``.
        class_weights: one factor per class ``k_c``, or None.

    Shape:
        prediction ``(B, C)``, target ``(B,)``, ``(B, 1)`` or ``(B, C)``, weight ``(B,)``;
        returns a scalar.
    """

    loss_name = "classification_ce"

    def __init__(
        self, *, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.label_smoothing = _check_fraction(
            label_smoothing, key="classification_ce.label_smoothing"
        )
        check_class_weights(class_weights, name="classification_ce.class_weights")
        self.class_weights = None if class_weights is None else [float(k) for k in class_weights]

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar cross-entropy."""
        probabilities = smooth_labels(
            classification_target(prediction, target, loss_name=self.loss_name),
            self.label_smoothing,
        )
        logits = prediction.to(probabilities.dtype)
        if logits.shape[1] == 1:
            per_class = F.binary_cross_entropy_with_logits(logits, probabilities, reduction="none")
        else:
            per_class = -probabilities * F.log_softmax(logits, dim=1)
        if self.class_weights is not None:
            per_class = per_class * _class_weight_vector(
                self.class_weights, logits, loss_name=self.loss_name
            )
        return sample_weighted_mean(per_class.sum(dim=1), weight, loss_name=self.loss_name)


@LOSSES.register("classification_focal", description="image-level focal loss (gamma, alpha)")
class ClassificationFocalLoss(nn.Module):
    """Focal loss for image-level classes: ``-Σ_c α_c t_c (1 - p_c)^γ log p_c`` per sample.

    Args:
        gamma: focusing exponent γ ≥ 0 (0 gives the cross-entropy).
        alpha: per-class factors, or None.

    Shape:
        prediction ``(B, C)`` (``C ≥ 2``; for one logit use ``focal`` on ``(B, 1, 1)``), target
        ``(B,)``, ``(B, 1)`` or ``(B, C)``, weight ``(B,)``; returns a scalar.
    """

    loss_name = "classification_focal"

    def __init__(self, *, gamma: float = 2.0, alpha: Sequence[float] | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"classification_focal.gamma: expected a value >= 0, got {gamma}")
        self.gamma = float(gamma)
        check_class_weights(alpha, name="classification_focal.alpha")
        self.alpha = None if alpha is None else [float(a) for a in alpha]

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar focal loss."""
        probabilities = classification_target(prediction, target, loss_name=self.loss_name)
        if prediction.shape[1] < 2:
            raise ShapeError(
                f"{self.loss_name}: expected at least 2 class logits, got {prediction.shape[1]}"
            )
        log_p = F.log_softmax(prediction.to(probabilities.dtype), dim=1)
        per_class = -probabilities * (1.0 - log_p.exp()).pow(self.gamma) * log_p
        if self.alpha is not None:
            per_class = per_class * _class_weight_vector(
                self.alpha, log_p, loss_name=self.loss_name
            )
        return sample_weighted_mean(per_class.sum(dim=1), weight, loss_name=self.loss_name)


def _class_weight_vector(values: Sequence[float], logits: Tensor, *, loss_name: str) -> Tensor:
    vector = torch.as_tensor(values, dtype=logits.dtype, device=logits.device)
    if vector.numel() != logits.shape[1]:
        raise ShapeError(
            f"{loss_name}: expected {logits.shape[1]} class weights, got {vector.numel()}"
        )
    return vector.view(1, -1)
