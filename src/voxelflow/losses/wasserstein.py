"""Generalised Wasserstein Dice loss (Fidon et al., BrainLes 2017) with any class distance matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.losses import LOSSES
from voxelflow.losses._checks import masked_sum, reduction_dims
from voxelflow.losses.segmentation import SegmentationLoss
from voxelflow.registry import suggest

#: named class distance matrices; ``brats_tree`` is NiftyNet's hard-coded ``M_tree`` for the
#: BraTS labels (background, necrotic core, oedema, non-enhancing core, enhancing tumour)
DISTANCE_PRESETS: dict[str, list[list[float]]] = {
    "brats_tree": [
        [0.0, 1.0, 1.0, 1.0, 1.0],
        [1.0, 0.0, 0.6, 0.2, 0.5],
        [1.0, 0.6, 0.0, 0.6, 0.7],
        [1.0, 0.2, 0.6, 0.0, 0.5],
        [1.0, 0.5, 0.7, 0.5, 0.0],
    ],
}


def default_distance_matrix(num_classes: int) -> Tensor:
    """0 on the diagonal, 1 elsewhere: every confusion costs the same."""
    return 1.0 - torch.eye(num_classes, dtype=torch.float64)


@LOSSES.register(
    "wasserstein_dice",
    description="generalised Wasserstein Dice (Fidon 2017), class distance matrix",
)
class WassersteinDiceLoss(SegmentationLoss):
    """Generalised Wasserstein Dice loss (Fidon et al., BrainLes 2017).

    Per voxel, the Wasserstein distance between predicted and reference class distributions is
    ``δ = Σ_ij M_ij p_i g_j``. With ``α_l = M_{0,l}`` (a class's distance to the background)
    ``TP = Σ_voxels (Σ_l α_l g_l)(1 - δ)`` and the loss is ``1 - (2 TP + s) / (2 TP + Σ δ + s)``,
    per sample, averaged over the batch. The voxel weight map multiplies each voxel's terms.

    ``M`` is any ``C × C`` matrix with a zero diagonal and non-negative entries, scaled so that its
    maximum is 1 (as MONAI does); default 0 on the diagonal, 1 elsewhere (then α is 0 for the
    background and 1 for every other class, MONAI's ``weighting_mode="default"``). NiftyNet
    hard-coded a 5-class BraTS tree (available as ``distance_matrix: brats_tree``); any number of
    classes works here. MONAI always uses
    ``α = (0, 1, ..., 1)``; this equals ``M_{0,l}`` whenever the background is at distance 1 of
    every class (true for the default matrix and the BraTS tree).

    Args:
        distance_matrix: ``C × C`` class distances (nested lists from a config), a preset name
            (``brats_tree``), or None for the default matrix of the prediction's class count.
        smooth: added to numerator and denominator.
        ignore_index: target index to ignore.

    Shape:
        prediction ``(B, C, *spatial)`` logits (softmax inside), target ``(B, 1 or C, *spatial)``;
        returns a scalar.
    """

    loss_name = "wasserstein_dice"

    def __init__(
        self,
        *,
        distance_matrix: str | Sequence[Sequence[float]] | Tensor | None = None,
        smooth: float = 1e-5,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(activation="softmax", ignore_index=ignore_index)
        self.smooth = smooth
        self.distance_matrix = (
            None if distance_matrix is None else _check_distance_matrix(distance_matrix)
        )

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the scalar generalised Wasserstein Dice loss."""
        inputs = self.prepare(prediction, target, weight)
        p, g = inputs.probabilities, inputs.target
        channels = p.shape[1]
        matrix = (
            self.distance_matrix
            if self.distance_matrix is not None
            else default_distance_matrix(channels)
        )
        if matrix.shape[0] != channels:
            raise ShapeError(
                f"wasserstein_dice: expected a prediction with {matrix.shape[0]} channels "
                f"(the distance matrix is {matrix.shape[0]}×{matrix.shape[0]}), got {channels}"
            )
        matrix = matrix.to(device=p.device, dtype=p.dtype)
        distance, alpha = _distance_and_alpha(matrix, p, g, inputs.labels)
        dims = reduction_dims(p, batch=False)
        true_positives = masked_sum(alpha * (1.0 - distance), inputs.mask, dims)
        all_error = masked_sum(distance, inputs.mask, dims)
        score = (2.0 * true_positives + self.smooth) / (
            2.0 * true_positives + all_error + self.smooth
        )
        return (1.0 - score).mean()


def _distance_and_alpha(
    matrix: Tensor, p: Tensor, g: Tensor, labels: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Per-voxel ``δ = Σ_ij M_ij p_i g_j`` and ``α = Σ_j M_0j g_j``, both ``(B, 1, *spatial)``.

    Index targets pick one column of ``M`` per voxel (a gather); dense targets contract over both
    class axes.
    """
    if labels is not None:
        channels = p.shape[1]
        index = labels.unsqueeze(1)
        distance = torch.zeros_like(index, dtype=p.dtype)
        for predicted in range(channels):  # C small multiply-adds, no (B, C, C, N) tensor
            distance = distance + matrix[predicted][index] * p[:, predicted : predicted + 1]
        return distance, matrix[0][index]
    cost_per_reference = torch.einsum("ij,bi...->bj...", matrix, p)
    distance = (cost_per_reference * g).sum(dim=1, keepdim=True)
    alpha = torch.einsum("j,bj...->b...", matrix[0], g).unsqueeze(1)
    return distance, alpha


def _check_distance_matrix(distance_matrix: str | Sequence[Sequence[float]] | Tensor) -> Tensor:
    """Validate a class distance matrix (or a preset name) and scale it to a maximum of 1.

    Raises:
        ConfigError: unknown preset, not square, negative entries, non-zero diagonal, all zeros.
    """
    if isinstance(distance_matrix, str):
        if distance_matrix not in DISTANCE_PRESETS:
            presets = list(DISTANCE_PRESETS)
            raise ConfigError(
                f"wasserstein_dice.distance_matrix: expected a C×C matrix or one of {presets}, "
                f"got {distance_matrix!r}.{suggest(distance_matrix, presets)}"
            )
        distance_matrix = DISTANCE_PRESETS[distance_matrix]
    matrix = torch.as_tensor(distance_matrix, dtype=torch.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ConfigError(
            f"wasserstein_dice.distance_matrix: expected a square C×C matrix (C >= 2), got shape {tuple(matrix.shape)}"
        )
    if bool((matrix < 0).any()) or bool((torch.diagonal(matrix) != 0).any()):
        raise ConfigError(
            "wasserstein_dice.distance_matrix: expected non-negative distances with a zero diagonal, "
            f"got {matrix.tolist()}"
        )
    if float(matrix.max()) == 0.0:
        raise ConfigError(
            "wasserstein_dice.distance_matrix: expected a non-zero distance, got all zeros"
        )
    return matrix / matrix.max()
