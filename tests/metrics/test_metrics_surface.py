"""Surface distance metrics: hand-computed cubes, MONAI agreement, DeepMind comparison."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from voxelflow.errors import DataError, ShapeError
from voxelflow.metrics import (
    average_symmetric_surface_distance,
    hausdorff_distance,
    mean_surface_distance,
    normalized_surface_dice,
    surface_distances,
)
from voxelflow.metrics.surface import border_voxels

SPACINGS = [(1.0, 1.0, 1.5), (0.7, 0.7, 3.0)]


def cube(shape=(12, 12, 12), start=(2, 2, 2), size=4) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def blob(shape, seed, fraction=0.7) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2)
    return field > np.quantile(field, fraction)


def test_border_voxels_of_a_cube_are_its_56_outer_voxels():
    border = border_voxels(cube())
    assert border.sum() == 4**3 - 2**3
    assert not border[3:5, 3:5, 3:5].any()


def test_border_counts_image_edge_as_background():
    mask = np.ones((3, 3, 3), bool)
    assert border_voxels(mask).sum() == 26


def test_shifted_cube_hand_computed_under_anisotropic_spacing():
    # Cube shifted by 2 voxels along x (0.7 mm): each directed set has 24 zeros, 16 × 0.7, 16 × 1.4.
    a, b = cube(), cube(start=(4, 2, 2))
    spacing = (0.7, 0.7, 3.0)
    d = surface_distances(a, b, spacing, surface="voxels")
    expected = np.sort(np.r_[np.zeros(24), np.full(16, 0.7), np.full(16, 1.4)])
    np.testing.assert_allclose(np.sort(d.pred_to_ref), expected, atol=1e-12)
    np.testing.assert_allclose(np.sort(d.ref_to_pred), expected, atol=1e-12)
    assert hausdorff_distance(a, b, spacing) == pytest.approx(1.4)
    assert hausdorff_distance(a, b, spacing, percentile=95) == pytest.approx(1.4)
    assert hausdorff_distance(a, b, spacing, percentile=50, surface="voxels") == pytest.approx(0.7)
    assert average_symmetric_surface_distance(a, b, spacing, surface="voxels") == pytest.approx(
        (16 * 1.4 + 16 * 0.7) / 56
    )
    assert mean_surface_distance(a, b, spacing, surface="voxels") == pytest.approx((0.6, 0.6))
    assert normalized_surface_dice(a, b, spacing, 1.0, surface="voxels") == pytest.approx(40 / 56)
    assert normalized_surface_dice(a, b, spacing, 1.4 + 1e-9) == pytest.approx(1.0)


def test_shift_along_the_coarse_axis_uses_its_spacing():
    a, b = cube(), cube(start=(2, 2, 3))
    assert hausdorff_distance(a, b, (0.7, 0.7, 3.0)) == pytest.approx(3.0)
    assert hausdorff_distance(a, b, (1.0, 1.0, 1.5)) == pytest.approx(1.5)


def test_pooled_hd95_differs_from_directed_on_asymmetric_errors():
    ref = cube(shape=(16, 16, 16), size=6)
    pred = ref.copy()
    pred[12:14, 4:6, 4:6] = True  # a small spur far from the reference
    d = surface_distances(pred, ref, (1.0, 1.0, 1.5), surface="voxels")
    directed = d.hausdorff(95)
    pooled = d.hausdorff(95, mode="pooled")
    expected_directed = max(np.percentile(d.pred_to_ref, 95), np.percentile(d.ref_to_pred, 95))
    assert directed == pytest.approx(expected_directed)
    assert pooled == pytest.approx(np.percentile(np.r_[d.pred_to_ref, d.ref_to_pred], 95))
    assert pooled <= directed


def test_empty_mask_conventions():
    empty, full = np.zeros((6, 6, 6), bool), cube(shape=(6, 6, 6), start=(1, 1, 1), size=3)
    assert math.isnan(hausdorff_distance(empty, empty))
    assert math.isnan(average_symmetric_surface_distance(empty, empty))
    assert math.isnan(normalized_surface_dice(empty, empty, 1.0, 1.0))
    for pair in ((empty, full), (full, empty)):
        assert hausdorff_distance(*pair) == math.inf
        assert hausdorff_distance(*pair, percentile=95) == math.inf
        assert average_symmetric_surface_distance(*pair) == math.inf
        assert normalized_surface_dice(*pair, 1.0, 1.0) == 0.0


def test_identical_masks_give_zero_distance_and_nsd_one():
    mask = blob((14, 14, 10), 3)
    assert hausdorff_distance(mask, mask, (0.7, 0.7, 3.0)) == 0.0
    assert normalized_surface_dice(mask, mask, (0.7, 0.7, 3.0), 0.0) == 1.0


def test_2d_masks_and_torch_inputs():
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.roll(a, 3, axis=1)
    assert hausdorff_distance(
        torch.from_numpy(a), torch.from_numpy(b), (0.5, 2.0)
    ) == pytest.approx(6.0)


def test_bad_inputs_are_named():
    with pytest.raises(ShapeError, match="same shape"):
        surface_distances(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(DataError, match="binary mask"):
        surface_distances(np.full((4, 4, 4), 2), np.zeros((4, 4, 4)))
    with pytest.raises(ShapeError, match="spacing"):
        surface_distances(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 1.0))


def _monai(pred: np.ndarray, ref: np.ndarray, spacing) -> dict[str, float]:
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    p = torch.from_numpy(pred)[None, None].float()
    r = torch.from_numpy(ref)[None, None].float()
    kwargs = {"include_background": True, "spacing": list(spacing)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd": compute_hausdorff_distance(p, r, **kwargs).item(),
            "hd95": compute_hausdorff_distance(p, r, percentile=95, **kwargs).item(),
            "assd": compute_average_surface_distance(p, r, symmetric=True, **kwargs).item(),
            "nsd": compute_surface_dice(p, r, [1.5], **kwargs).item(),
        }


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_on_random_shapes(spacing, seed):
    pred, ref = blob((20, 22, 16), seed), blob((20, 22, 16), seed + 100)
    d = surface_distances(pred, ref, spacing, surface="voxels")
    ours = {
        "hd": d.hausdorff(),
        "hd95": d.hausdorff(95),
        "assd": d.average_symmetric(),
        "nsd": d.surface_dice(1.5),
    }
    reference = _monai(pred, ref, spacing)
    for name, value in ours.items():  # MONAI returns float32: agreement at its precision
        assert value == pytest.approx(reference[name], rel=1e-6, abs=1e-7), name


@pytest.mark.filterwarnings("ignore::DeprecationWarning:surface_distance.*")
@pytest.mark.parametrize("spacing", SPACINGS)
def test_deepmind_surfel_definition_coincides_on_boxes_and_differs_on_blobs(spacing):
    surface_distance = pytest.importorskip("surface_distance")
    a, b = cube(), cube(start=(4, 2, 2))
    dm = surface_distance.compute_surface_distances(b, a, spacing)
    # Axis-aligned boxes: surfel corners and border-voxel centres give the same Hausdorff distance.
    assert surface_distance.compute_robust_hausdorff(dm, 100) == pytest.approx(
        hausdorff_distance(a, b, spacing)
    )
    faces = surface_distances(a, b, spacing, surface="faces")
    assert surface_distance.compute_robust_hausdorff(dm, 100) == pytest.approx(faces.hausdorff())
    # Smooth random shapes: DeepMind's surfels (on the voxel corners, area-weighted) differ on
    # purpose from MONAI's border voxels; the difference stays below one voxel diagonal.
    pred, ref = blob((18, 18, 14), 5), blob((18, 18, 14), 6)
    dm = surface_distance.compute_surface_distances(ref, pred, spacing)
    ours = surface_distances(pred, ref, spacing, surface="voxels")
    their_assd = np.mean(surface_distance.compute_average_surface_distance(dm))
    diagonal = float(np.linalg.norm(spacing))
    assert abs(ours.hausdorff(95) - surface_distance.compute_robust_hausdorff(dm, 95)) < diagonal
    assert abs(ours.average_symmetric() - their_assd) < diagonal
    their_nsd = surface_distance.compute_surface_dice_at_tolerance(dm, 1.5)
    assert abs(ours.surface_dice(1.5) - their_nsd) < 0.15


def test_cost_follows_the_structures_not_the_image():
    small = np.zeros((200, 200, 150), bool)
    small[100:104, 100:104, 70:73] = True
    shifted = np.roll(small, 1, axis=0)
    assert hausdorff_distance(small, shifted, (1.0, 1.0, 1.5)) == pytest.approx(1.0)


def test_face_surface_hand_computed_and_area_matches_surface_area():
    from voxelflow.metrics import surface_area
    from voxelflow.metrics.surface import boundary_faces

    spacing = (0.7, 0.7, 3.0)
    a, b = cube(), cube(start=(4, 2, 2))
    centres, areas = boundary_faces(a, spacing)
    assert len(areas) == 6 * 16 and areas.sum() == pytest.approx(surface_area(a, spacing))
    assert centres[:, 0].min() == pytest.approx(1.5 * 0.7)  # the face between voxels 1 and 2
    d = surface_distances(a, b, spacing, surface="faces")
    assert d.hausdorff() == pytest.approx(1.4)  # x faces 1.5 → 3.5
    # Every face of a is within 1.4 mm of a face of b: the x faces (1.5 vs 3.5, 5.5 vs 7.5 in
    # voxels) exactly 1.4 mm, the y/z faces at most 2 voxels of x (1.4 mm) from b's side faces.
    assert d.surface_dice(1.4 + 1e-9) == pytest.approx(1.0)
    identical = surface_distances(a, a, spacing, surface="faces")
    assert identical.hausdorff() == 0.0 and identical.surface_dice(0.0) == 1.0


def test_face_surface_weighted_percentile_follows_deepmind_rule():
    from voxelflow.metrics.surface import _percentile

    distances, areas = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 8.0])
    assert _percentile(distances, areas, 50) == 2.0  # cumulative area 0.1, 0.2, 1.0
    assert _percentile(distances, areas, 15) == 1.0
    assert _percentile(distances, None, 50) == 1.0


def test_empty_conventions_equal_monai():
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    empty = np.zeros((6, 6, 6), bool)
    full = cube(shape=(6, 6, 6), start=(2, 2, 2), size=2)
    for pred, ref in ((empty, empty), (full, empty), (empty, full)):
        p, r = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = (
                compute_hausdorff_distance(p, r).item(),
                compute_average_surface_distance(p, r, symmetric=True).item(),
                compute_surface_dice(p, r, [1.0]).item(),
            )
        d = surface_distances(pred, ref)
        np.testing.assert_equal(
            (d.hausdorff(95), d.average_symmetric(), d.surface_dice(1.0)), theirs
        )
