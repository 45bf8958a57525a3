"""Region-wise (lesion-wise) detection metrics from connected components.

Matching rule: a reference component is *detected* when the predicted foreground covers at
least ``min_overlap`` of its voxels (default ``0``: any overlap, i.e. at least one voxel). A
predicted component is a *true positive* when it covers at least ``min_overlap`` of its own
voxels with reference foreground (default: any overlap); otherwise it is a false-positive
component. One predicted component may detect several reference components (merged lesions)
and several predicted components may detect one reference component (a split lesion); neither
is penalised, as in the usual lesion-wise sensitivity/precision.

Empty conventions: detection rate is ``nan`` when the reference has no component; lesion-wise
precision is ``nan`` when the prediction has none; F1 is ``nan`` when both are empty and ``0``
when exactly one is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from voxelflow.errors import ConfigError
from voxelflow.metrics._arrays import as_mask, check_pair, safe_ratio
from voxelflow.types import ArrayLike

#: connectivity (neighbours) → ``rank`` of scipy's structuring element, per dimension.
_CONNECTIVITY = {3: {6: 1, 18: 2, 26: 3}, 2: {4: 1, 8: 2}}


@dataclass(frozen=True)
class RegionCounts:
    """Component counts of a mask pair.

    Attributes:
        num_ref: connected components of the reference.
        num_pred: connected components of the prediction.
        detected_ref: reference components detected by the prediction.
        true_positive_pred: predicted components that overlap the reference enough.
    """

    num_ref: int
    num_pred: int
    detected_ref: int
    true_positive_pred: int

    @property
    def detection_rate(self) -> float:
        """Lesion-wise sensitivity: detected / reference components."""
        return safe_ratio(self.detected_ref, self.num_ref)

    @property
    def lesion_precision(self) -> float:
        """True-positive predicted components / predicted components."""
        return safe_ratio(self.true_positive_pred, self.num_pred)

    @property
    def lesion_f1(self) -> float:
        """Harmonic mean of detection rate and lesion precision."""
        if self.num_ref == 0 and self.num_pred == 0:
            return float("nan")
        if self.num_ref == 0 or self.num_pred == 0:
            return 0.0
        recall, prec = self.detection_rate, self.lesion_precision
        return 2 * recall * prec / (recall + prec) if recall + prec else 0.0

    @property
    def false_positive_components(self) -> int:
        """Predicted components without enough reference overlap."""
        return self.num_pred - self.true_positive_pred

    def as_dict(self) -> dict[str, float]:
        """The region metrics by column name."""
        return {
            "num_ref_components": float(self.num_ref),
            "num_pred_components": float(self.num_pred),
            "detection_rate": self.detection_rate,
            "lesion_precision": self.lesion_precision,
            "lesion_f1": self.lesion_f1,
            "fp_components": float(self.false_positive_components),
        }


def structure_for(connectivity: int, ndim: int) -> np.ndarray:
    """Structuring element for 6/18/26 (3D) or 4/8 (2D) connectivity.

    Raises:
        ConfigError: for a connectivity that does not exist in this dimension.
    """
    choices = _CONNECTIVITY.get(ndim, {})
    if connectivity not in choices:
        raise ConfigError(
            f"expected connectivity in {sorted(choices)} for {ndim}D masks, got {connectivity}"
        )
    structure: np.ndarray = ndimage.generate_binary_structure(ndim, choices[connectivity])
    return structure  # (scipy has no type information here)


def connected_components(
    mask: ArrayLike, *, connectivity: int | None = None
) -> tuple[np.ndarray, int]:
    """Label the connected components of a binary mask.

    Args:
        mask: binary mask ``(X, Y)`` or ``(X, Y, Z)``.
        connectivity: 6/18/26 (3D) or 4/8 (2D); ``None`` = full (26 in 3D, 8 in 2D).

    Returns:
        ``(labels, count)``: int32 array with 0 for background and 1..count per component.
    """
    binary = as_mask(mask)
    conn = connectivity if connectivity is not None else (26 if binary.ndim == 3 else 8)
    labels, count = ndimage.label(binary, structure=structure_for(conn, binary.ndim))
    return labels, int(count)


def _covered(labels: np.ndarray, count: int, other: np.ndarray, min_overlap: float) -> int:
    """How many of ``count`` components have ≥ ``min_overlap`` (fraction) voxels in ``other``."""
    if count == 0:
        return 0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    hits = np.bincount(labels[other], minlength=count + 1)[1:]
    fraction = hits / sizes
    detected = hits > 0 if min_overlap <= 0 else fraction >= min_overlap
    return int(np.count_nonzero(detected))


def region_counts(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    connectivity: int | None = None,
    min_overlap: float = 0.0,
) -> RegionCounts:
    """Count and match connected components of a prediction and a reference.

    Args:
        pred: predicted binary mask (2D or 3D).
        ref: reference binary mask.
        connectivity: 6, 18 or 26 in 3D, 4 or 8 in 2D; ``None`` = full connectivity.
        min_overlap: fraction of a component's voxels that must overlap the other mask for a
            match (0 = any overlap).

    Returns:
        :class:`RegionCounts` (detection rate, lesion precision, F1, false-positive components).

    Shape:
        pred, ref: ``(X, Y)`` or ``(X, Y, Z)``.
    """
    pred_mask, ref_mask = as_mask(pred, name="prediction"), as_mask(ref, name="reference")
    check_pair(pred_mask, ref_mask)
    if not 0.0 <= min_overlap <= 1.0:
        raise ConfigError(f"expected min_overlap in [0, 1], got {min_overlap}")
    ref_labels, num_ref = connected_components(ref_mask, connectivity=connectivity)
    pred_labels, num_pred = connected_components(pred_mask, connectivity=connectivity)
    return RegionCounts(
        num_ref=num_ref,
        num_pred=num_pred,
        detected_ref=_covered(ref_labels, num_ref, pred_mask, min_overlap),
        true_positive_pred=_covered(pred_labels, num_pred, ref_mask, min_overlap),
    )


def detection_rate(pred: ArrayLike, ref: ArrayLike, *, connectivity: int | None = None) -> float:
    """Lesion-wise sensitivity: fraction of reference components touched by the prediction."""
    return region_counts(pred, ref, connectivity=connectivity).detection_rate
