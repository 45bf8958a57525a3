"""Shared input handling of the losses: shape checks, activations, one-hot targets, voxel masks.

Every segmentation loss goes through :func:`prepare_segmentation`, so they all accept the same
inputs and fail with the same messages:

- ``prediction``: logits (or probabilities with ``activation="none"``), shape ``(B, C, *spatial)``.
- ``target``: class indices ``(B, 1, *spatial)`` (any integer dtype, or floats holding integers)
  or one-hot / probabilities ``(B, C, *spatial)``. With a single channel (``C == 1``, binary with
  a sigmoid) the target is the foreground probability ``(B, 1, *spatial)``.
- ``weight``: optional voxel weights ``(B, 1, *spatial)`` (or ``(1, 1, *spatial)``), non-negative.
- ``ignore_index``: voxels whose target index equals it contribute nothing (index targets and
  single-channel targets only; a one-hot target has no index to compare).

Computation happens in at least float32, so float16/bfloat16 predictions give finite losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from voxelflow.errors import ConfigError, DataError, ShapeError

ACTIVATIONS = ("softmax", "sigmoid", "none")

#: smallest denominator used when normalising by a sum of weights
EPSILON = 1e-6


@dataclass(frozen=True)
class SegmentationInputs:
    """Prediction and target of a segmentation loss, ready for the formulas.

    Attributes:
        logits: the prediction as given, cast to at least float32. Shape ``(B, C, *spatial)``.
        probabilities: after the activation. Shape ``(B, C, *spatial)``.
        target: one-hot or probabilities, zero at ignored voxels. Shape ``(B, C, *spatial)``.
        mask: voxel weights, zero at ignored voxels, or None when every voxel counts once.
            Shape ``(B, 1, *spatial)``.
        labels: class indices when the target was given as indices (ignored voxels set to 0),
            else None. Shape ``(B, *spatial)``.
    """

    logits: Tensor
    probabilities: Tensor
    target: Tensor
    mask: Tensor | None
    labels: Tensor | None


def check_activation(activation: str, *, loss_name: str) -> str:
    """Return ``activation`` when it is one of :data:`ACTIVATIONS`.

    Raises:
        ConfigError: for an unknown activation.
    """
    return _check_choice(activation, ACTIVATIONS, what="activation", loss_name=loss_name)


def _check_choice(value: str, choices: tuple[str, ...], *, what: str, loss_name: str) -> str:
    if value not in choices:
        raise ConfigError(f"{loss_name}: expected {what} in {choices}, got {value!r}")
    return value


def apply_activation(prediction: Tensor, activation: str) -> Tensor:
    """Softmax over channels, sigmoid per channel, or nothing.

    Shape:
        prediction: ``(B, C, *spatial)``; returns the same shape.
    """
    if activation == "softmax":
        return torch.softmax(prediction, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(prediction)
    return prediction


def compute_dtype(tensor: Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.promote_types(tensor.dtype, torch.float32)


def check_prediction(prediction: Tensor, *, loss_name: str, min_ndim: int = 3) -> None:
    """Check ``prediction`` is a floating-point tensor of at least ``min_ndim`` dimensions.

    Raises:
        ShapeError: when it is not.
    """
    if not isinstance(prediction, Tensor):
        raise ShapeError(
            f"{loss_name}: expected prediction as a torch.Tensor, got {type(prediction).__name__}"
        )
    if prediction.ndim < min_ndim:
        layout = "(B, C, *spatial)" if min_ndim >= 3 else "(B, C)"
        raise ShapeError(
            f"{loss_name}: expected prediction of shape {layout}, got {tuple(prediction.shape)}"
        )
    if not prediction.is_floating_point():
        raise ShapeError(
            f"{loss_name}: expected a floating-point prediction, got {prediction.dtype}"
        )


def check_target_shape(prediction: Tensor, target: Tensor, *, loss_name: str) -> None:
    """Check ``target`` is ``(B, 1, *spatial)`` or ``(B, C, *spatial)`` matching ``prediction``.

    Raises:
        ShapeError: when batch size, spatial shape or channels disagree.
    """
    if not isinstance(target, Tensor):
        raise ShapeError(
            f"{loss_name}: expected target as a torch.Tensor, got {type(target).__name__}"
        )
    batch, channels, *spatial = prediction.shape
    expected = f"(B, 1, *spatial) or (B, C, *spatial) = {(batch, 1, *spatial)} or {tuple(prediction.shape)}"
    if target.ndim != prediction.ndim:
        raise ShapeError(
            f"{loss_name}: expected target of shape {expected}, got {tuple(target.shape)}"
        )
    same_grid = target.shape[0] == batch and list(target.shape[2:]) == spatial
    if not same_grid or target.shape[1] not in (1, channels):
        raise ShapeError(
            f"{loss_name}: expected target of shape {expected}, got {tuple(target.shape)}"
        )


def check_weight(weight: Tensor, prediction: Tensor, *, loss_name: str) -> Tensor:
    """Return the voxel weight map broadcast to ``(B, 1, *spatial)``.

    Raises:
        ShapeError: when its shape does not fit the prediction.
    """
    batch, _, *spatial = prediction.shape
    expected = (batch, 1, *spatial)
    if not isinstance(weight, Tensor) or weight.ndim != prediction.ndim:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ShapeError(f"{loss_name}: expected weight of shape {expected}, got {got}")
    if (
        weight.shape[0] not in (1, batch)
        or weight.shape[1] != 1
        or list(weight.shape[2:]) != spatial
    ):
        raise ShapeError(
            f"{loss_name}: expected weight of shape {expected}, got {tuple(weight.shape)}"
        )
    return weight.to(compute_dtype(prediction)).expand(expected)


def indices_to_one_hot(
    target: Tensor,
    num_classes: int,
    *,
    ignore_index: int | None,
    loss_name: str,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Turn ``(B, 1, *spatial)`` class indices into a one-hot target.

    Returns:
        ``(one_hot (B, C, *spatial), labels (B, *spatial) int64, valid (B, 1, *spatial) or None)``;
        ``valid`` is None when nothing is ignored.

    Raises:
        DataError: when an index is not an integer in ``[0, num_classes - 1]``.
    """
    valid = None
    if ignore_index is not None:
        valid = target != ignore_index
        target = torch.where(valid, target, torch.zeros_like(target))
    if target.is_floating_point() and bool((target != torch.round(target)).any()):
        raise DataError(
            f"{loss_name}: expected integer class indices in the target, got fractional values"
        )
    labels = target.long()
    if labels.numel():
        low, high = (int(value) for value in torch.aminmax(labels))
        if low < 0 or high >= num_classes:
            raise DataError(
                f"{loss_name}: expected class indices in [0, {num_classes - 1}] (prediction has "
                f"{num_classes} channels), got values in [{low}, {high}]"
            )
    shape = (labels.shape[0], num_classes, *labels.shape[2:])
    # scatter keeps the (B, C, *spatial) layout contiguous (F.one_hot + movedim does not)
    one_hot = torch.zeros(shape, dtype=dtype, device=labels.device).scatter_(1, labels, 1.0)
    if valid is not None:
        valid = valid.to(dtype)
        one_hot = one_hot * valid
    return one_hot, labels[:, 0], valid


def prepare_segmentation(
    prediction: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    activation: str,
    ignore_index: int | None,
    loss_name: str,
) -> SegmentationInputs:
    """Check and convert the inputs of a segmentation loss (see the module docstring).

    Raises:
        ShapeError: wrong shapes, or softmax over a single channel.
        DataError: class indices out of range.
    """
    check_prediction(prediction, loss_name=loss_name)
    check_target_shape(prediction, target, loss_name=loss_name)
    channels = prediction.shape[1]
    if activation == "softmax" and channels == 1:
        raise ShapeError(
            f"{loss_name}: expected at least 2 channels for activation='softmax', got 1; "
            "use activation='sigmoid' for a single foreground channel"
        )
    dtype = compute_dtype(prediction)
    logits = prediction.to(dtype)
    labels = None
    valid = None
    if target.shape[1] == 1 and channels > 1:
        one_hot, labels, valid = indices_to_one_hot(
            target, channels, ignore_index=ignore_index, loss_name=loss_name, dtype=dtype
        )
    elif channels == 1 and ignore_index is not None:
        valid = (target != ignore_index).to(dtype)
        one_hot = torch.where(valid.bool(), target, torch.zeros_like(target)).to(dtype)
    else:
        one_hot = target.to(dtype)
    mask = valid
    if weight is not None:
        mask = check_weight(weight, prediction, loss_name=loss_name)
        if valid is not None:
            mask = mask * valid
    return SegmentationInputs(logits, apply_activation(logits, activation), one_hot, mask, labels)


def masked_sum(values: Tensor, mask: Tensor | None, dims: Sequence[int]) -> Tensor:
    """Sum ``values * mask`` over ``dims`` (``mask`` broadcasts over channels; None = ones)."""
    if mask is not None:
        values = values * mask
    return values.sum(dim=tuple(dims))


def reduction_dims(tensor: Tensor, *, batch: bool) -> list[int]:
    """Spatial axes of ``(B, C, *spatial)``, plus the batch axis when ``batch`` is true."""
    spatial = list(range(2, tensor.ndim))
    return [0, *spatial] if batch else spatial


def select_classes(
    probabilities: Tensor, target: Tensor, *, include_background: bool
) -> tuple[Tensor, Tensor]:
    """Drop channel 0 when ``include_background`` is false (single-channel inputs are kept)."""
    if include_background or probabilities.shape[1] == 1:
        return probabilities, target
    return probabilities[:, 1:], target[:, 1:]


def weighted_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """``Σ values·mask / max(Σ mask·C, ε)``, or the plain mean when ``mask`` is None.

    Shape:
        values: ``(B, C, *spatial)``; mask: ``(B, 1, *spatial)`` (broadcast over channels).
    """
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(EPSILON)


REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str, *, loss_name: str) -> str:
    """Return ``reduction`` when it is one of :data:`REDUCTIONS`.

    Raises:
        ConfigError: for an unknown reduction.
    """
    return _check_choice(reduction, REDUCTIONS, what="reduction", loss_name=loss_name)


def check_class_weights(values: float | Sequence[float] | None, *, name: str) -> None:
    """Refuse negative per-class factors (``name`` is e.g. ``focal.alpha``).

    Raises:
        ConfigError: naming the offending value.
    """
    if values is None:
        return
    listed = [values] if isinstance(values, (int, float)) else list(values)
    negative = [float(value) for value in listed if float(value) < 0]
    if negative:
        raise ConfigError(
            f"{name}: expected non-negative values, got {negative[0]} in {listed}"
        )
