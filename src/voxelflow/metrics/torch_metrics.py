"""Batched Dice and IoU on one-hot torch tensors, for validation during training.

Runs on any device, never leaves it, and needs no gradient. Empty convention as in
:mod:`voxelflow.metrics.overlap`: a (sample, class) pair with neither prediction nor reference
foreground gives ``nan`` (exclude it with ``torch.nanmean``).
"""

from __future__ import annotations

import torch

from voxelflow.errors import ShapeError


def _check(pred: torch.Tensor, ref: torch.Tensor) -> None:
    if pred.shape != ref.shape:
        raise ShapeError(
            f"expected prediction and reference of one shape (B, C, *spatial), got "
            f"{tuple(pred.shape)} and {tuple(ref.shape)}"
        )
    if pred.ndim not in (4, 5):
        raise ShapeError(
            f"expected a one-hot batch (B, C, X, Y[, Z]), got shape {tuple(pred.shape)}"
        )


@torch.no_grad()
def _counts(
    pred: torch.Tensor, ref: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, prediction size and reference size per (B, C), as float64."""
    _check(pred, ref)
    p = pred.bool().flatten(2)
    r = ref.bool().flatten(2)
    intersection = (p & r).sum(-1, dtype=torch.float64)
    return intersection, p.sum(-1, dtype=torch.float64), r.sum(-1, dtype=torch.float64)


def dice_batch(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Dice per sample and class of binary one-hot tensors.

    Args:
        pred: one-hot (or thresholded) prediction, any dtype (non-zero = foreground).
        ref: one-hot reference of the same shape.

    Returns:
        ``(B, C)`` float64 tensor; ``nan`` where both are empty.

    Shape:
        pred, ref: ``(B, C, X, Y)`` or ``(B, C, X, Y, Z)``.

    Example:
        >>> x = torch.zeros(1, 2, 4, 4); x[:, 1, :2] = 1; x[:, 0, 2:] = 1
        >>> dice_batch(x, x)
        tensor([[1., 1.]], dtype=torch.float64)
    """
    intersection, pred_size, ref_size = _counts(pred, ref)
    denominator = pred_size + ref_size
    return torch.where(denominator > 0, 2 * intersection / denominator, torch.nan)


def iou_batch(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Jaccard index (IoU) per sample and class; ``nan`` where both are empty.

    Shape:
        pred, ref: ``(B, C, *spatial)``; returns ``(B, C)``.
    """
    intersection, pred_size, ref_size = _counts(pred, ref)
    union = pred_size + ref_size - intersection
    return torch.where(union > 0, intersection / union, torch.nan)


def one_hot(label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot encode a ``(B, 1, *spatial)`` or ``(B, *spatial)`` integer map → ``(B, K, *spatial)``."""
    labels = label_map[:, 0] if label_map.ndim >= 4 and label_map.shape[1] == 1 else label_map
    encoded = torch.nn.functional.one_hot(labels.long(), num_classes)
    return encoded.movedim(-1, 1)
