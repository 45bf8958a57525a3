"""Contract tests generated from the METRICS registry: every registered metric, 2D and 3D."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxelflow.errors import DataError, ShapeError
from voxelflow.metrics import METRICS

PERFECT = {
    "dice": 1.0,
    "jaccard": 1.0,
    "sensitivity": 1.0,
    "precision": 1.0,
    "hd": 0.0,
    "hd95": 0.0,
}
PERFECT |= {"hd95_pooled": 0.0, "assd": 0.0, "nsd": 1.0, "detection_rate": 1.0, "lesion_f1": 1.0}
PERFECT |= {
    "fp": 0.0,
    "fn": 0.0,
    "abs_volume_diff_mm3": 0.0,
    "rel_volume_diff": 0.0,
    "fp_components": 0.0,
}


def masks(shape, seed):
    rng = np.random.default_rng(seed)
    pred, ref = np.zeros(shape, bool), np.zeros(shape, bool)
    pred[tuple(slice(1, s - 2) for s in shape)] = True
    ref[tuple(slice(2, s - 1) for s in shape)] = True
    pred ^= rng.random(shape) > 0.95
    return pred, ref


@pytest.mark.parametrize("name", METRICS.names())
@pytest.mark.parametrize("shape, spacing", [((9, 8, 7), (0.7, 0.7, 3.0)), ((12, 10), (1.0, 1.5))])
def test_every_metric_contract(name, shape, spacing):
    metric = METRICS.get(name)
    pred, ref = masks(shape, 0)
    value = metric(pred, ref, spacing, 1.0)
    assert isinstance(value, float | int) and not math.isnan(value)
    if name in PERFECT:
        assert metric(ref, ref, spacing, 1.0) == pytest.approx(PERFECT[name])
    with pytest.raises(ShapeError):
        metric(pred, ref[..., :-1], spacing, 1.0)
    with pytest.raises(DataError):
        metric(pred.astype(int) * 2, ref, spacing, 1.0)
