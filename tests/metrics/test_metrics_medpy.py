"""Agreement with medpy 0.5 (test-only reference): its borders, distances, pooled HD95 and pooled
ASSD coincide with voxelflow's border-voxel definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from voxelflow.metrics import confusion_counts, surface_distances

binary = pytest.importorskip("medpy.metric.binary")


def blob(shape, seed, fraction=0.7) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2)
    return field > np.quantile(field, fraction)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.5), (0.7, 0.7, 3.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_medpy(spacing, seed):
    pred, ref = blob((20, 22, 16), seed), blob((20, 22, 16), seed + 30)
    d = surface_distances(pred, ref, spacing, surface="voxels")  # medpy: border voxels
    counts = confusion_counts(pred, ref, spacing)
    rel = 1e-12
    assert d.hausdorff() == pytest.approx(binary.hd(pred, ref, spacing), rel=rel)
    # medpy's hd95 pools both directed sets: voxelflow's `hd95_pooled`
    assert d.hausdorff(95, mode="pooled") == pytest.approx(binary.hd95(pred, ref, spacing), rel=rel)
    assert d.average_symmetric() == pytest.approx(binary.assd(pred, ref, spacing), rel=rel)
    msd_pred, msd_ref = d.mean_directed()
    assert msd_pred == pytest.approx(binary.asd(pred, ref, spacing), rel=rel)
    assert msd_ref == pytest.approx(binary.asd(ref, pred, spacing), rel=rel)
    assert counts.dice == pytest.approx(binary.dc(pred, ref), rel=rel)
    assert counts.jaccard == pytest.approx(binary.jc(pred, ref), rel=rel)
    assert counts.sensitivity == pytest.approx(binary.sensitivity(pred, ref), rel=rel)
    assert counts.specificity == pytest.approx(binary.specificity(pred, ref), rel=rel)
    assert counts.precision == pytest.approx(binary.precision(pred, ref), rel=rel)
    assert counts.relative_volume_difference == pytest.approx(binary.ravd(pred, ref), rel=rel)
