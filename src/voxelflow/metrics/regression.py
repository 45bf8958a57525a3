"""Image regression metrics: MAE, ME (bias), MSE, RMSE, PSNR, SSIM (2D/3D), NCC.

Every function takes a prediction and a reference of the same shape (numpy or torch) and an
optional boolean ``mask`` restricting the voxels compared (SSIM always uses the whole image:
its Gaussian windows need the neighbourhood). PSNR and SSIM need a *data range*: given explicitly, or the reference's range
``max − min`` (inside the mask), and :func:`regression_metrics` reports the range it used.

Conventions: an empty mask gives ``nan`` everywhere; PSNR is ``inf`` for identical images;
NCC is ``nan`` when either image is constant (zero variance, correlation undefined).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from voxelflow.errors import DataError, ShapeError
from voxelflow.metrics._arrays import as_mask, to_numpy
from voxelflow.types import ArrayLike


def _pair(pred: ArrayLike, ref: ArrayLike, mask: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float64 values of both images inside the mask."""
    pred_values = to_numpy(pred).astype(np.float64)
    ref_values = to_numpy(ref).astype(np.float64)
    if pred_values.shape != ref_values.shape:
        raise ShapeError(
            f"expected prediction and reference of the same shape, got {pred_values.shape} and "
            f"{ref_values.shape}"
        )
    if mask is None:
        return pred_values.ravel(), ref_values.ravel()
    inside = as_mask(mask, name="mask")
    if inside.shape != ref_values.shape:
        raise ShapeError(f"expected a mask of shape {ref_values.shape}, got {inside.shape}")
    return pred_values[inside], ref_values[inside]


def mean_absolute_error(pred: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """MAE: mean |pred − ref|."""
    p, r = _pair(pred, ref, mask)
    return float(np.abs(p - r).mean()) if p.size else float("nan")


def mean_error(pred: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """ME (bias): mean (pred − ref); positive when the prediction is too high."""
    p, r = _pair(pred, ref, mask)
    return float((p - r).mean()) if p.size else float("nan")


def mean_squared_error(pred: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """MSE: mean (pred − ref)²."""
    p, r = _pair(pred, ref, mask)
    return float(np.square(p - r).mean()) if p.size else float("nan")


def root_mean_squared_error(
    pred: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None
) -> float:
    """RMSE: √MSE."""
    return float(np.sqrt(mean_squared_error(pred, ref, mask=mask)))


def reference_range(ref: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """The data range ``max − min`` of the reference (inside the mask)."""
    _, r = _pair(ref, ref, mask)
    return float(r.max() - r.min()) if r.size else float("nan")


def psnr(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float | None = None,
    mask: ArrayLike | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(range² / MSE)``.

    Args:
        pred: predicted image. ref: reference image of the same shape.
        data_range: the signal range; ``None`` uses the reference's ``max − min``.
        mask: optional boolean mask of the voxels compared.

    Returns:
        dB; ``inf`` when the images are identical.
    """
    value_range = reference_range(ref, mask=mask) if data_range is None else float(data_range)
    mse = mean_squared_error(pred, ref, mask=mask)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(value_range**2 / mse))


def normalized_cross_correlation(
    pred: ArrayLike, ref: ArrayLike, *, mask: ArrayLike | None = None
) -> float:
    """Zero-normalised cross-correlation (Pearson r) in [−1, 1]; ``nan`` for constant images."""
    p, r = _pair(pred, ref, mask)
    p, r = p - p.mean(), r - r.mean()
    denominator = np.sqrt(np.sum(p * p) * np.sum(r * r))
    return float(np.sum(p * r) / denominator) if denominator > 0 else float("nan")


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _local_mean(volume: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering without padding ('valid' region) of a (1, 1, *spatial)."""
    spatial_dims = volume.ndim - 2
    conv = F.conv3d if spatial_dims == 3 else F.conv2d
    for axis in range(spatial_dims):
        shape = [1, 1] + [1] * spatial_dims
        shape[2 + axis] = window.numel()
        volume = conv(volume, window.reshape(shape))
    return volume


def ssim(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity (Wang et al. 2004) in 2D or 3D, mean over the valid region.

    Gaussian window of ``window_size`` voxels and ``sigma`` voxels per axis, no padding (the
    local map covers only windows fully inside the image), as MONAI's ``SSIMMetric``.

    Args:
        pred: predicted image. ref: reference image of the same shape.
        data_range: signal range for the constants; ``None`` uses the reference's range.

    Raises:
        ShapeError: different shapes, not 2D/3D, or an axis shorter than the window.

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.
    """
    p = torch.as_tensor(to_numpy(pred), dtype=torch.float64)
    r = torch.as_tensor(to_numpy(ref), dtype=torch.float64)
    if p.shape != r.shape or p.ndim not in (2, 3):
        raise ShapeError(
            f"expected two 2D/3D images of one shape, got {tuple(p.shape)} and {tuple(r.shape)}"
        )
    if min(p.shape) < window_size:
        raise ShapeError(
            f"expected every axis ≥ window_size {window_size}, got shape {tuple(p.shape)}"
        )
    value_range = float(r.max() - r.min()) if data_range is None else float(data_range)
    if value_range <= 0:
        raise DataError(f"expected a positive data range, got {value_range}")
    c1, c2 = (k1 * value_range) ** 2, (k2 * value_range) ** 2
    window = _gaussian_window(window_size, sigma)
    p, r = p[None, None], r[None, None]
    mu_p, mu_r = _local_mean(p, window), _local_mean(r, window)
    var_p = _local_mean(p * p, window) - mu_p**2
    var_r = _local_mean(r * r, window) - mu_r**2
    cov = _local_mean(p * r, window) - mu_p * mu_r
    luminance = (2 * mu_p * mu_r + c1) / (mu_p**2 + mu_r**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_p + var_r + c2)
    return float((luminance * contrast_structure).mean())


def regression_metrics(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    data_range: float | None = None,
) -> dict[str, float]:
    """All regression metrics at once, with the data range used by PSNR/SSIM under ``data_range``.

    SSIM is computed on the whole image (the mask restricts the other metrics).

    Shape:
        pred, ref, mask: ``(X, Y)`` or ``(X, Y, Z)``, one shape (SSIM needs every axis ≥ 11).

    Example:
        >>> ref = np.linspace(0.0, 1.0, 12**3).reshape(12, 12, 12)
        >>> metrics = regression_metrics(ref + 0.1, ref)
        >>> round(metrics["mae"], 3), round(metrics["me"], 3), round(metrics["psnr"], 2)
        (0.1, 0.1, 20.0)
    """
    value_range = reference_range(ref, mask=mask) if data_range is None else float(data_range)
    return {
        "mae": mean_absolute_error(pred, ref, mask=mask),
        "me": mean_error(pred, ref, mask=mask),
        "mse": mean_squared_error(pred, ref, mask=mask),
        "rmse": root_mean_squared_error(pred, ref, mask=mask),
        "psnr": psnr(pred, ref, data_range=value_range, mask=mask),
        "ssim": ssim(pred, ref, data_range=value_range),
        "ncc": normalized_cross_correlation(pred, ref, mask=mask),
        "data_range": value_range,
    }
