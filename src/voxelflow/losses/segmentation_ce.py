"""Voxel-wise segmentation losses: cross-entropy, focal, and Dice + cross-entropy.

Inputs follow :mod:`voxelflow.losses._checks`: logits ``(B, C, *spatial)``, a target of class
indices ``(B, 1, *spatial)`` or one-hot/probabilities ``(B, C, *spatial)``, an optional voxel
``weight`` ``(B, 1, *spatial)``. The voxel losses are weighted means
``Σ ℓ·w / max(Σ w, ε)`` (NiftyNet's weighted cross-entropy), so all-ignored batches give 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.losses import LOSSES
from voxelflow.losses._checks import (
    EPSILON,
    SegmentationInputs,
    check_class_weights,
    check_reduction,
)
from voxelflow.losses.segmentation import DiceLoss, SegmentationLoss

#: probabilities are clamped to this before the log when ``activation="none"``
LOG_CLAMP = 1e-7


def _class_vector(
    values: float | Sequence[float] | None, inputs: SegmentationInputs, *, name: str
) -> Tensor | None:
    """Per-class factors as a ``(1, C, 1, ...)`` tensor, or None.

    Raises:
        ShapeError: when the number of values differs from the channel count.
    """
    if values is None:
        return None
    channels = inputs.logits.shape[1]
    vector = torch.as_tensor(
        values, dtype=inputs.logits.dtype, device=inputs.logits.device
    ).flatten()
    if vector.numel() != channels:
        raise ShapeError(
            f"{name}: expected {channels} values (one per channel), got {vector.numel()}"
        )
    return vector.view(1, channels, *([1] * (inputs.logits.ndim - 2)))


def _log_probabilities(inputs: SegmentationInputs, activation: str) -> Tensor:
    """log p for exclusive classes (softmax logits, or given probabilities)."""
    if activation == "softmax":
        return F.log_softmax(inputs.logits, dim=1)
    return torch.log(inputs.probabilities.clamp_min(LOG_CLAMP))


def _weighted_voxel_mean(loss: Tensor, normaliser: Tensor | None, mask: Tensor | None) -> Tensor:
    """``Σ loss·mask / max(Σ normaliser·mask, ε)``; both ``(B, 1, *spatial)`` (None: ones)."""
    if normaliser is None:  # every voxel counts once
        return loss.mean() if mask is None else (loss * mask).sum() / mask.sum().clamp_min(EPSILON)
    if mask is not None:
        loss, normaliser = loss * mask, normaliser * mask
    return loss.sum() / normaliser.sum().clamp_min(EPSILON)


def _binary_terms(
    inputs: SegmentationInputs, class_weights: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Per-voxel binary cross-entropy averaged over channels (sigmoid activation)."""
    logits, target = inputs.logits, inputs.target
    per_channel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if class_weights is not None:
        per_channel = per_channel * class_weights
    loss = per_channel.mean(dim=1, keepdim=True)
    return loss, None


def _index_terms(
    inputs: SegmentationInputs, class_weights: Tensor | None, activation: str
) -> tuple[Tensor, Tensor | None]:
    """Per-voxel ``-k_y log p_y`` for index targets: a gather instead of a sum over classes."""
    assert inputs.labels is not None, "called only for index targets"
    labels = inputs.labels.unsqueeze(1)
    loss = -_log_probabilities(inputs, activation).gather(1, labels)
    if class_weights is None:
        return loss, None
    picked_weights = class_weights.flatten()[labels]
    return loss * picked_weights, picked_weights


@LOSSES.register(
    "cross_entropy", description="voxel-wise cross-entropy with optional class weights"
)
class CrossEntropyLoss(SegmentationLoss):
    """Voxel-wise cross-entropy, optionally class-weighted.

    With softmax: ``ℓ = -Σ_c k_c g_c log p_c`` per voxel and the loss is
    ``Σ w ℓ / Σ w Σ_c k_c g_c`` over all voxels of the batch (``k``: class weights, ``w``: voxel
    weights). For one-hot targets this equals ``torch.nn.functional.cross_entropy`` with
    ``weight=k`` and ``ignore_index`` (the class-weighted mean). With ``sigmoid`` it is the
    binary cross-entropy of each channel, averaged over channels and voxels.

    Args:
        class_weights: one factor per class, or None.
        activation: ``softmax``, ``sigmoid`` or ``none`` (probabilities given; clamped at 1e-7).
        ignore_index: target index to ignore.

    Shape:
        prediction ``(B, C, *spatial)``, target ``(B, 1 or C, *spatial)``; returns a scalar.
    """

    loss_name = "cross_entropy"

    def __init__(
        self,
        *,
        class_weights: Sequence[float] | None = None,
        activation: str = "softmax",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(activation=activation, ignore_index=ignore_index)
        check_class_weights(class_weights, name="cross_entropy.class_weights")
        self.class_weights = None if class_weights is None else [float(k) for k in class_weights]

    def from_inputs(self, inputs: SegmentationInputs) -> Tensor:
        """The loss from already prepared inputs (shared with ``dice_ce``)."""
        class_weights = _class_vector(
            self.class_weights, inputs, name="cross_entropy.class_weights"
        )
        if self.activation == "sigmoid":
            loss, normaliser = _binary_terms(inputs, class_weights)
        elif inputs.labels is not None:
            loss, normaliser = _index_terms(inputs, class_weights, self.activation)
        else:
            weighted_target = (
                inputs.target if class_weights is None else inputs.target * class_weights
            )
            loss = -(weighted_target * _log_probabilities(inputs, self.activation)).sum(
                dim=1, keepdim=True
            )
            normaliser = weighted_target.sum(dim=1, keepdim=True)
        return _weighted_voxel_mean(loss, normaliser, inputs.mask)

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar cross-entropy."""
        return self.from_inputs(self.prepare(prediction, target, weight))


@LOSSES.register("focal", description="focal loss (Lin 2017), gamma focusing, optional alpha")
class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by ``(1 - p_t)^γ``.

    Softmax: ``ℓ = -Σ_c α_c g_c (1 - p_c)^γ log p_c`` per voxel, averaged over voxels (weighted
    by ``w``); γ = 0 without α is the cross-entropy. Sigmoid: the binary focal loss of each
    channel, averaged over channels and voxels (equal to MONAI ``FocalLoss``). MONAI's softmax
    variant averages over the class axis as well, so its value is this one divided by C.

    Args:
        gamma: focusing exponent γ ≥ 0.
        alpha: a list of per-class factors, or one number a: ``(1-a, a, ..., a)`` with softmax
            (background vs the rest), ``a`` for positives and ``1-a`` for negatives with sigmoid.
        activation: ``softmax`` or ``sigmoid``.
        ignore_index: target index to ignore.
        reduction: ``mean`` (the loss above), ``sum`` (MONAI's definition: the per-class terms,
            weighted by ``w``, averaged over voxels and summed over batch and classes) or
            ``none``: the per-class, per-voxel terms
            ``(B, C, *spatial)`` times ``w`` (zero at ignored voxels), the shape of MONAI
            ``FocalLoss(reduction="none")`` (equal to it without weights/ignored voxels).

    Shape:
        prediction ``(B, C, *spatial)``, target ``(B, 1 or C, *spatial)``; returns a scalar, or
        ``(B, C, *spatial)`` with ``reduction="none"``.

    Raises:
        ConfigError: ``gamma < 0``, a negative ``alpha`` value, an unknown reduction.
    """

    loss_name = "focal"

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        activation: str = "softmax",
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(activation=activation, ignore_index=ignore_index)
        self.reduction = check_reduction(reduction, loss_name="focal.reduction")
        check_class_weights(alpha, name="focal.alpha")
        if isinstance(alpha, (int, float)) and alpha > 1:
            raise ConfigError(f"focal.alpha: expected a single value in [0, 1], got {alpha}")
        if activation == "none":
            raise ConfigError("focal.activation: expected 'softmax' or 'sigmoid', got 'none'")
        if gamma < 0:
            raise ConfigError(f"focal.gamma: expected a value >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = alpha

    def _alpha_factor(self, inputs: SegmentationInputs) -> Tensor | None:
        if self.alpha is None:
            return None
        target = inputs.target
        if isinstance(self.alpha, (int, float)):
            a = float(self.alpha)
            if self.activation == "sigmoid":
                return a * target + (1.0 - a) * (1.0 - target)
            channels = target.shape[1]
            return _class_vector([1.0 - a] + [a] * (channels - 1), inputs, name="focal.alpha")
        return _class_vector(self.alpha, inputs, name="focal.alpha")

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar focal loss."""
        inputs = self.prepare(prediction, target, weight)
        alpha = self._alpha_factor(inputs)
        if self.activation == "sigmoid":
            per_channel = F.binary_cross_entropy_with_logits(
                inputs.logits, inputs.target, reduction="none"
            )
            p_true = torch.exp(-per_channel)
            per_channel = (1.0 - p_true).pow(self.gamma) * per_channel
            if alpha is not None:
                per_channel = per_channel * alpha
            terms, loss = per_channel, per_channel.mean(dim=1, keepdim=True)
        else:
            log_p = F.log_softmax(inputs.logits, dim=1)
            per_class = -inputs.target * (1.0 - log_p.exp()).pow(self.gamma) * log_p
            if alpha is not None:
                per_class = per_class * alpha
            terms, loss = per_class, per_class.sum(dim=1, keepdim=True)
        if self.reduction != "mean":
            if inputs.mask is not None:
                terms = terms * inputs.mask
            if self.reduction == "none":
                return terms
            # MONAI's "sum": average over voxels first, then sum over batch and classes
            return terms.flatten(2).mean(dim=2).sum()
        if inputs.mask is None:
            return loss.mean()
        return (loss * inputs.mask).sum() / inputs.mask.sum().clamp_min(EPSILON)


@LOSSES.register("dice_ce", description="soft Dice + cross-entropy (nnU-Net default), weighted sum")
class DiceCELoss(SegmentationLoss):
    """``lambda_dice · dice + lambda_ce · cross_entropy`` on one prepared input.

    Without class weights this matches MONAI ``DiceCELoss(softmax=True, to_onehot_y=True)``
    with the same options. With ``class_weights``, the default ``weighted_dice=False`` weights the
    cross-entropy only; ``weighted_dice=True`` also multiplies each class's ``1 - Dice`` by its
    weight before averaging (channel 0's weight dropped with ``include_background=False``), which
    equals MONAI ``DiceCELoss(weight=...)`` (MONAI weights both terms). Unlike
    NiftyNet's ``DicePlusXEnt`` (which adds *negative* Dice, range shifted by -1) the Dice term is
    ``1 - Dice``, so a perfect prediction scores 0.

    Args:
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        squared: squared Dice denominator.
        include_background: keep channel 0 in the Dice term (cross-entropy always uses all).
        batch: pool the Dice sums over the batch.
        smooth: Dice smoothing.
        class_weights: cross-entropy class weights (non-negative, one per channel).
        weighted_dice: apply ``class_weights`` to the Dice term too (MONAI's behaviour).
        activation: ``softmax`` or ``sigmoid``.
        ignore_index: target index to ignore.

    Shape:
        prediction ``(B, C, *spatial)``, target ``(B, 1 or C, *spatial)``; returns a scalar.
    """

    loss_name = "dice_ce"

    def __init__(
        self,
        *,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        squared: bool = False,
        include_background: bool = True,
        batch: bool = False,
        smooth: float = 1e-5,
        class_weights: Sequence[float] | None = None,
        weighted_dice: bool = False,
        activation: str = "softmax",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(activation=activation, ignore_index=ignore_index)
        check_class_weights(class_weights, name="dice_ce.class_weights")
        self.weighted_dice = weighted_dice
        if lambda_dice < 0 or lambda_ce < 0:
            raise ConfigError(
                f"dice_ce: expected lambda_dice, lambda_ce >= 0, got {lambda_dice}, {lambda_ce}"
            )
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.dice = DiceLoss(
            squared=squared,
            include_background=include_background,
            batch=batch,
            smooth=smooth,
            activation=activation,
            ignore_index=ignore_index,
        )
        self.cross_entropy = CrossEntropyLoss(
            class_weights=class_weights, activation=activation, ignore_index=ignore_index
        )

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar Dice + cross-entropy."""
        inputs = self.prepare(prediction, target, weight)
        dice_loss = 1.0 - self.dice.dice_per_class(inputs)
        class_weights = self.cross_entropy.class_weights
        if self.weighted_dice and class_weights is not None:
            weights = class_weights
            if not self.dice.include_background and inputs.logits.shape[1] > 1:
                weights = weights[1:]
            if len(weights) != dice_loss.shape[-1]:
                raise ShapeError(
                    f"dice_ce.class_weights: expected {inputs.logits.shape[1]} values "
                    f"(one per channel), got {len(class_weights)}"
                )
            dice_loss = dice_loss * torch.as_tensor(
                weights, dtype=dice_loss.dtype, device=dice_loss.device
            )
        dice = dice_loss.mean()
        return self.lambda_dice * dice + self.lambda_ce * self.cross_entropy.from_inputs(inputs)
