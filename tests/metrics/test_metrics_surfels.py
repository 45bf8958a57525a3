"""DeepMind surfels (the default surface): hand-computed values and agreement with surface-distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from voxelflow.errors import ConfigError
from voxelflow.metrics import normalized_surface_dice, segmentation_metrics, surface_distances
from voxelflow.metrics.surfels import neighbourhood_codes, surfel_area_table, surfels

SPACINGS_3D = [(1.0, 1.0, 1.5), (0.7, 0.7, 3.0)]
SPACINGS_2D = [(1.0, 1.5), (0.7, 3.0)]


def blob(shape, seed, fraction=0.7, sigma=2.0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return field > np.quantile(field, fraction)


def test_single_voxel_has_eight_corner_surfels_with_hand_computed_areas():
    spacing = (0.7, 0.7, 3.0)
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    points, areas = surfels(mask, spacing)
    assert len(points) == 8  # the 8 corners of the voxel, at voxel index ± 0.5
    np.testing.assert_allclose(np.unique(points[:, 2]), [0.5 * 3.0, 1.5 * 3.0])
    # Each corner's cell holds one marching-cubes triangle with area vector (1/8, 1/8, 1/8)
    # voxel units, scaled by the cofactor (s1 s2, s0 s2, s0 s1).
    triangle = 0.125 * math.sqrt((0.7 * 3.0) ** 2 * 2 + (0.7 * 0.7) ** 2)
    np.testing.assert_allclose(areas, triangle)


def test_single_pixel_in_2d_is_a_diamond():
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    points, lengths = surfels(mask, (0.5, 2.0))
    assert len(points) == 4
    np.testing.assert_allclose(lengths.sum(), 2 * math.hypot(0.5, 2.0))


def test_flat_face_area_is_exact():
    # A 4×5×6 box: its 6 faces have area 2·(4·5·s0s1 + 4·6·s0s2 + 5·6·s1s2); marching cubes
    # bevels the 12 edges and 8 corners, so the total is a little below the box area.
    spacing = (0.7, 1.1, 3.0)
    mask = np.zeros((8, 9, 10), bool)
    mask[2:6, 2:7, 2:8] = True
    _, areas = surfels(mask, spacing)
    box = 2 * (4 * 5 * 0.7 * 1.1 + 4 * 6 * 0.7 * 3.0 + 5 * 6 * 1.1 * 3.0)
    inner = 2 * (3 * 4 * 0.7 * 1.1 + 3 * 5 * 0.7 * 3.0 + 4 * 5 * 1.1 * 3.0)
    assert inner < areas.sum() < box


def test_codes_follow_the_corner_grid():
    mask = np.zeros((2, 2, 2), bool)
    mask[1, 1, 1] = True  # the last voxel: bit 1 of the centre corner (its lowest neighbour bit)
    codes = neighbourhood_codes(mask)
    assert codes.shape == (3, 3, 3)
    assert codes[1, 1, 1] == 1 and codes[2, 2, 2] == 128


@pytest.mark.parametrize("spacing", [*SPACINGS_3D, (0.3, 2.2, 1.1), *SPACINGS_2D])
def test_area_table_equals_deepmind(spacing):
    lookup = pytest.importorskip("surface_distance.lookup_tables")
    ours = surfel_area_table(tuple(float(s) for s in spacing))
    if len(spacing) == 3:
        theirs = lookup.create_table_neighbour_code_to_surface_area(spacing)
    else:
        theirs = lookup.create_table_neighbour_code_to_contour_length(spacing)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def _deepmind(pred, ref, spacing):
    surface_distance = pytest.importorskip("surface_distance")
    found = surface_distance.compute_surface_distances(ref, pred, spacing)  # (gt, pred)
    values = {
        f"nsd@{tau}": surface_distance.compute_surface_dice_at_tolerance(found, tau)
        for tau in (0.5, 1.0, 1.5, 3.0)
    }
    values["hd95"] = surface_distance.compute_robust_hausdorff(found, 95)
    values["hd"] = surface_distance.compute_robust_hausdorff(found, 100)
    ref_to_pred, pred_to_ref = surface_distance.compute_average_surface_distance(found)
    values["msd"] = (pred_to_ref, ref_to_pred)
    return values


def _ours(pred, ref, spacing):
    found = surface_distances(pred, ref, spacing)  # default surface: surfels
    values = {f"nsd@{tau}": found.surface_dice(tau) for tau in (0.5, 1.0, 1.5, 3.0)}
    values.update(hd95=found.hausdorff(95), hd=found.hausdorff(), msd=found.mean_directed())
    return values


def _random_pair(shape, seed):
    if seed % 3 == 2:  # rough masks: many isolated voxels, every neighbourhood code occurs
        rng = np.random.default_rng(seed)
        return rng.random(shape) > 0.6, rng.random(shape) > 0.55
    pred, ref = blob(shape, seed), blob(shape, seed + 100)
    ref[0] = True  # a reference touching the image border (outside counts as background)
    return pred, ref


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("spacing", [*SPACINGS_3D, *SPACINGS_2D])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_deepmind_on_random_masks(spacing, seed):
    shape = (18, 20, 14)[: len(spacing)] if len(spacing) == 3 else (40, 36)
    pred, ref = _random_pair(shape, seed)
    ours, theirs = _ours(pred, ref, spacing), _deepmind(pred, ref, spacing)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-6, atol=1e-12, err_msg=name)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_segmentation_metrics_default_nsd_is_deepmind_and_differs_from_border_voxels():
    surface_distance = pytest.importorskip("surface_distance")
    spacing = (0.7, 0.7, 3.0)
    pred = blob((24, 24, 12), 7).astype(np.uint8) + blob((24, 24, 12), 8)
    ref = blob((24, 24, 12), 9).astype(np.uint8) + blob((24, 24, 12), 10)
    values = segmentation_metrics(pred, ref, labels=[1, 2], spacing=spacing, metrics=["nsd"])
    voxels = segmentation_metrics(
        pred, ref, labels=[1, 2], spacing=spacing, metrics=["nsd"], surface="voxels"
    )
    for label in (1, 2):
        found = surface_distance.compute_surface_distances(ref == label, pred == label, spacing)
        expected = surface_distance.compute_surface_dice_at_tolerance(found, 1.0)
        assert values[label]["nsd"] == pytest.approx(expected, rel=1e-6)
        assert voxels[label]["nsd"] != pytest.approx(expected, rel=1e-3)  # a different definition


def test_bounding_box_restriction_gives_the_same_values_as_the_full_image():
    small = np.zeros((12, 12, 10), bool)
    small[4:8, 3:7, 3:6] = True
    shifted = np.roll(small, 1, axis=0)
    large, large_shifted = (np.pad(m, ((100, 80), (90, 70), (60, 50))) for m in (small, shifted))
    a = surface_distances(small, shifted, (1.0, 1.0, 1.5))
    b = surface_distances(large, large_shifted, (1.0, 1.0, 1.5))
    assert a.hausdorff(95) == b.hausdorff(95) and a.surface_dice(0.5) == b.surface_dice(0.5)


def test_empty_conventions_and_unknown_surface():
    empty, full = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    full[2:4, 2:4, 2:4] = True
    assert math.isnan(normalized_surface_dice(empty, empty, 1.0, 1.0))
    assert normalized_surface_dice(full, empty, 1.0, 1.0) == 0.0
    assert surface_distances(full, empty).hausdorff(95) == math.inf
    with pytest.raises(ConfigError, match="surfels"):
        surface_distances(full, full, surface="marching")  # type: ignore[arg-type]
