"""Overlap losses for segmentation: Dice, generalised Dice, Tversky, sensitivity-specificity.

The generalised Wasserstein Dice lives in :mod:`voxelflow.losses.wasserstein`.

All take logits ``(B, C, *spatial)`` and a target of class indices ``(B, 1, *spatial)`` or
one-hot/probabilities ``(B, C, *spatial)``, an optional voxel ``weight`` ``(B, 1, *spatial)``,
and return a scalar. The activation (``softmax`` by default) is applied inside. See
:mod:`voxelflow.losses._checks` for the shared input rules (``ignore_index``, dtypes).

Empty prediction and empty reference give a Dice of 1 (loss 0) thanks to the smoothing terms,
never NaN; voxels that are all ignored give loss 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from voxelflow.errors import ConfigError
from voxelflow.losses import LOSSES
from voxelflow.losses._checks import (
    SegmentationInputs,
    check_activation,
    check_reduction,
    masked_sum,
    prepare_segmentation,
    reduction_dims,
    select_classes,
)


class SegmentationLoss(nn.Module):
    """Base of the segmentation losses: holds the activation and ``ignore_index``.

    Args:
        activation: ``softmax`` (classes exclusive), ``sigmoid`` (per channel) or ``none``
            (the prediction already holds probabilities).
        ignore_index: target index whose voxels contribute nothing, or None.
    """

    loss_name = "segmentation loss"

    def __init__(self, *, activation: str = "softmax", ignore_index: int | None = None) -> None:
        super().__init__()
        self.activation = check_activation(activation, loss_name=self.loss_name)
        self.ignore_index = ignore_index

    def prepare(
        self, prediction: Tensor, target: Tensor, weight: Tensor | None
    ) -> SegmentationInputs:
        """Checked, converted inputs (see :func:`prepare_segmentation`)."""
        return prepare_segmentation(
            prediction,
            target,
            weight,
            activation=self.activation,
            ignore_index=self.ignore_index,
            loss_name=self.loss_name,
        )


@LOSSES.register(
    "dice", description="soft Dice (plain or squared denominator), 1 - mean class Dice"
)
class DiceLoss(SegmentationLoss):
    """Soft Dice loss: ``1 - mean_c (2 Σ w p g + s) / (Σ w p + Σ w g + s)``.

    With ``squared=True`` the denominator is ``Σ w p² + Σ w g²`` (Milletari's V-Net, NiftyNet's
    ``Dice``; MONAI ``squared_pred=True``). Sums run over the voxels of each sample and the loss
    averages the per-(sample, class) values; ``batch=True`` pools the sums over the batch first
    (MONAI ``batch=True``), which is stabler when a class is absent from some samples.

    Args:
        squared: square prediction and target in the denominator.
        include_background: keep channel 0 (ignored for a single sigmoid channel).
        batch: pool over the batch before dividing.
        smooth: added to numerator and denominator (MONAI ``smooth_nr = smooth_dr``).
        activation: ``softmax``, ``sigmoid`` or ``none``.
        ignore_index: target index to ignore.

    Shape:
        prediction ``(B, C, *spatial)``, target ``(B, 1 or C, *spatial)``, weight
        ``(B, 1, *spatial)``; returns a scalar.

    Example:
        >>> loss = DiceLoss(include_background=False)
        >>> value = loss(torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8)))
    """

    loss_name = "dice"

    def __init__(
        self,
        *,
        squared: bool = False,
        include_background: bool = True,
        batch: bool = False,
        smooth: float = 1e-5,
        activation: str = "softmax",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(activation=activation, ignore_index=ignore_index)
        self.squared = squared
        self.include_background = include_background
        self.batch = batch
        self.smooth = smooth

    def dice_per_class(self, inputs: SegmentationInputs) -> Tensor:
        """Soft Dice per (sample, class), or per class when ``batch``. Shape ``(B, C')``/``(C',)``."""
        p, g = select_classes(
            inputs.probabilities, inputs.target, include_background=self.include_background
        )
        dims = reduction_dims(p, batch=self.batch)
        intersection = masked_sum(p * g, inputs.mask, dims)
        if self.squared:
            p, g = p * p, g * g
        denominator = masked_sum(p, inputs.mask, dims) + masked_sum(g, inputs.mask, dims)
        return (2.0 * intersection + self.smooth) / (denominator + self.smooth)

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar Dice loss (see the class docstring for shapes)."""
        return 1.0 - self.dice_per_class(self.prepare(prediction, target, weight)).mean()


GDSC_WEIGHTS = ("square", "simple", "uniform")


@LOSSES.register(
    "generalized_dice", description="generalised Dice (Sudre 2017), class weights 1/V², 1/V or 1"
)
class GeneralizedDiceLoss(SegmentationLoss):
    """Generalised Dice loss (Sudre et al., DLMIA 2017).

    ``1 - (2 Σ_c w_c Σ p g + s) / (Σ_c w_c Σ (p + g) + s)`` with class weights ``w_c = 1/V_c²``
    (``square``), ``1/V_c`` (``simple``) or 1 (``uniform``), ``V_c = Σ weight·g_c``. A class absent
    from a sample has an infinite weight, replaced by the largest finite weight of that sample
    (of the batch with ``batch=True``), as in NiftyNet and MONAI. Sums are per sample, the loss
    averages over samples.

    Args:
        weight_type: ``square``, ``simple`` or ``uniform``.
        include_background: keep channel 0.
        batch: pool over the batch (one generalised Dice for the whole batch).
        smooth: added to numerator and denominator.
        activation: ``softmax``, ``sigmoid`` or ``none``.
        ignore_index: target index to ignore.

    Shape:
        prediction ``(B, C, *spatial)``, target ``(B, 1 or C, *spatial)``; returns a scalar.
    """

    loss_name = "generalized_dice"

    def __init__(
        self,
        *,
        weight_type: str = "square",
        include_background: bool = True,
        batch: bool = False,
        smooth: float = 1e-5,
        activation: str = "softmax",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(activation=activation, ignore_index=ignore_index)
        if weight_type not in GDSC_WEIGHTS:
            raise ConfigError(
                f"generalized_dice: expected weight_type in {GDSC_WEIGHTS}, got {weight_type!r}"
            )
        self.weight_type = weight_type
        self.include_background = include_background
        self.batch = batch
        self.smooth = smooth

    def class_weights(self, volumes: Tensor) -> Tensor:
        """Class weights from class volumes ``(B, C)`` or ``(C,)``; infinities → the row maximum."""
        if self.weight_type == "uniform":
            return torch.ones_like(volumes)
        weights = 1.0 / (volumes * volumes if self.weight_type == "square" else volumes)
        infinite = torch.isinf(weights)
        weights = torch.where(infinite, torch.zeros_like(weights), weights)
        row_max = weights.amax(dim=-1, keepdim=True)
        return torch.where(infinite, row_max.expand_as(weights), weights)

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar generalised Dice loss."""
        inputs = self.prepare(prediction, target, weight)
        p, g = select_classes(
            inputs.probabilities, inputs.target, include_background=self.include_background
        )
        dims = reduction_dims(p, batch=self.batch)
        intersection = masked_sum(p * g, inputs.mask, dims)
        volumes = masked_sum(g, inputs.mask, dims)
        denominator = masked_sum(p, inputs.mask, dims) + volumes
        weights = self.class_weights(volumes.detach())
        numerator = 2.0 * (weights * intersection).sum(dim=-1) + self.smooth
        return (1.0 - numerator / ((weights * denominator).sum(dim=-1) + self.smooth)).mean()


@LOSSES.register(
    "tversky", description="Tversky loss (alpha weighs FP, beta FN), per class then averaged"
)
class TverskyLoss(SegmentationLoss):
    """Tversky loss (Salehi et al., 2017), computed per class and then averaged.

    Per class: ``TP = Σ w p g``, ``FP = Σ w p (1-g)``, ``FN = Σ w (1-p) g`` and
    ``T_c = (TP + s) / (TP + α FP + β FN + s)``; loss ``= 1 - mean T_c``. α = β = 0.5 is the
    soft Dice. Unlike NiftyNet's ``Tversky`` (pooled over classes) and like MONAI's
    ``TverskyLoss``, each class counts equally.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives.
        include_background: keep channel 0.
        batch: pool over the batch before dividing.
        smooth: added to numerator and denominator.
        activation: ``softmax``, ``sigmoid`` or ``none``.
        ignore_index: target index to ignore.
        reduction: ``mean`` (the loss above), ``sum`` (of the per-class losses) or ``none``: the
            per-class losses ``1 - T_c``, shape ``(B, C')`` (``(C',)`` with ``batch=True``), as
            MONAI ``TverskyLoss(reduction="none")``.

    Shape:
        prediction ``(B, C, *spatial)``, target ``(B, 1 or C, *spatial)``; returns a scalar, or
        the per-class losses with ``reduction="none"``.
    """

    loss_name = "tversky"

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        beta: float = 0.5,
        include_background: bool = True,
        batch: bool = False,
        smooth: float = 1e-5,
        activation: str = "softmax",
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(activation=activation, ignore_index=ignore_index)
        self.reduction = check_reduction(reduction, loss_name="tversky.reduction")
        if alpha < 0 or beta < 0:
            raise ConfigError(f"tversky: expected alpha >= 0 and beta >= 0, got {alpha} and {beta}")
        self.alpha, self.beta = alpha, beta
        self.include_background = include_background
        self.batch = batch
        self.smooth = smooth

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar Tversky loss."""
        inputs = self.prepare(prediction, target, weight)
        p, g = select_classes(
            inputs.probabilities, inputs.target, include_background=self.include_background
        )
        dims = reduction_dims(p, batch=self.batch)
        true_positives = masked_sum(p * g, inputs.mask, dims)
        false_positives = masked_sum(p * (1.0 - g), inputs.mask, dims)
        false_negatives = masked_sum((1.0 - p) * g, inputs.mask, dims)
        denominator = true_positives + self.alpha * false_positives + self.beta * false_negatives
        per_class = 1.0 - (true_positives + self.smooth) / (denominator + self.smooth)
        if self.reduction == "none":
            return per_class
        return per_class.sum() if self.reduction == "sum" else per_class.mean()


@LOSSES.register(
    "sensitivity_specificity", description="sensitivity-specificity loss (Brosch 2015)"
)
class SensitivitySpecificityLoss(SegmentationLoss):
    """Sensitivity-specificity loss (Brosch et al., MICCAI 2015), NiftyNet's ``SensSpec``.

    With ``e = (g - p)²`` per class: ``A_c = Σ w e g / (Σ w g + ε)`` (error inside the class) and
    ``B_c = Σ w e (1-g) / (Σ w (1-g) + ε)`` (error outside); loss ``= Σ_c [r A_c + (1-r) B_c]``,
    per sample, averaged over the batch. Unlike NiftyNet the voxel weight map is honoured.

    Args:
        sensitivity_weight: r, the weight of the sensitivity term (0.05 in the paper).
        epsilon: added to the denominators.
        activation: ``softmax``, ``sigmoid`` or ``none``.
        ignore_index: target index to ignore.

    Shape:
        prediction ``(B, C, *spatial)``, target ``(B, 1 or C, *spatial)``; returns a scalar.
    """

    loss_name = "sensitivity_specificity"

    def __init__(
        self,
        *,
        sensitivity_weight: float = 0.05,
        epsilon: float = 1e-5,
        activation: str = "softmax",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(activation=activation, ignore_index=ignore_index)
        if not 0.0 <= sensitivity_weight <= 1.0:
            raise ConfigError(
                f"sensitivity_specificity: expected sensitivity_weight in [0, 1], got {sensitivity_weight}"
            )
        self.sensitivity_weight = sensitivity_weight
        self.epsilon = epsilon

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar sensitivity-specificity loss."""
        inputs = self.prepare(prediction, target, weight)
        p, g = inputs.probabilities, inputs.target
        dims = reduction_dims(p, batch=False)
        error = (g - p) ** 2
        inside = masked_sum(error * g, inputs.mask, dims) / (
            masked_sum(g, inputs.mask, dims) + self.epsilon
        )
        background = 1.0 - g
        outside_count = masked_sum(background, inputs.mask, dims)
        outside = masked_sum(error * background, inputs.mask, dims) / (outside_count + self.epsilon)
        r = self.sensitivity_weight
        return (r * inside + (1.0 - r) * outside).sum(dim=1).mean()
