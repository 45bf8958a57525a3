"""The fused numba resampling kernel equals the torch ``grid_sample`` path it replaces.

References: the production torch path (``kernel="torch"``: float32 ``grid_sample``), the same
``grid_sample`` run in float64 (nearest must match it exactly: a float32 grid rounds a few
coordinates to the other side of ``.5``) and ``scipy.ndimage.map_coordinates`` (independent).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from voxelflow.data.cached import CachedSubject
from voxelflow.errors import ConfigError
from voxelflow.sampling.random import UniformSampler
from voxelflow.transforms import fused_resample as fused
from voxelflow.transforms.compose import build_augmentation
from voxelflow.transforms.resample import (
    SpatialDraw,
    _bounding_box,
    read_window,
    resample_region,
    resample_roles,
    voxel_grid,
)

pytest.importorskip("numba")

SPACINGS = [(1.0, 1.0, 1.0), (0.8, 1.1, 2.5), (3.0, 0.7, 1.0)]


def random_draw(rng: np.random.Generator, dims: int = 3, *, elastic: tuple[int, ...] | None = None):
    """Rotation up to ±30°, scaling 0.8-1.2, shear, translation (mm), optional displacement."""
    if dims == 3:
        rotation = Rotation.from_euler("xyz", rng.uniform(-0.52, 0.52, 3)).as_matrix()
    else:
        angle = rng.uniform(-0.52, 0.52)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.eye(dims) + np.triu(rng.uniform(-0.1, 0.1, (dims, dims)), 1)
    matrix = rotation @ shear @ np.diag(rng.uniform(0.8, 1.2, dims))
    displacement = None
    if elastic is not None:
        displacement = torch.from_numpy(rng.uniform(-2.0, 2.0, (dims, *elastic)).astype(np.float32))
    return SpatialDraw(matrix, rng.uniform(-3.0, 3.0, dims), displacement)


def geometry(shape, size, rng, *, near_edge: bool = False):
    """``centre`` and ``first_offset`` of a window as the sampler computes them."""
    if near_edge:  # centre a few voxels from the corner: the rotated box leaves the image
        centre_voxel = np.array([2] * len(shape))
    else:
        centre_voxel = np.array([rng.integers(s // 3, 2 * s // 3 + 1) for s in shape])
    start = centre_voxel - np.asarray(size) // 2
    geometric = start + (np.asarray(size, dtype=np.float64) - 1.0) / 2.0
    return {"centre": geometric, "first_offset": start - geometric, "size": tuple(size)}


def float64_grid_sample(array, draw, *, centre, first_offset, size, spacing, mode, pad):
    """The torch path's computation in float64 (region read, voxel grid, grid_sample)."""
    matrix, translation, displacement = draw.in_voxels(spacing)
    base = np.asarray(centre) + matrix @ np.asarray(first_offset) + translation
    low, high = _bounding_box(matrix, base, displacement, size, margin=1)
    region = torch.as_tensor(read_window(array, low, high - low, pad_value=pad)).double()
    grid = voxel_grid(matrix, base - low, size, region.shape[1:], displacement, dtype=torch.float64)
    return F.grid_sample(
        region[None], grid[None], mode=mode, padding_mode="border", align_corners=True
    )[0]


def scipy_linear(array, draw, *, centre, first_offset, size, spacing, pad):
    """Independent reference: coordinates in float64 numpy, map_coordinates order 1."""
    matrix, translation, displacement = draw.in_voxels(spacing)
    base = np.asarray(centre) + matrix @ np.asarray(first_offset) + translation
    coords = base[:, None] + matrix @ np.indices(size).reshape(len(size), -1)
    if displacement is not None:
        coords = coords + displacement.double().numpy().reshape(len(size), -1)
    return np.stack(
        [
            map_coordinates(c.astype(np.float64), coords, order=1, mode="grid-constant", cval=pad)
            for c in np.asarray(array)
        ]
    ).reshape(-1, *size)


@pytest.mark.parametrize("seed", range(6))
def test_linear_equals_grid_sample_and_scipy_on_random_affines(seed):
    rng = np.random.default_rng(seed)
    spacing = SPACINGS[seed % len(SPACINGS)]
    image = rng.normal(size=(3, 30, 26, 22)).astype(np.float32)  # 3 channels, one pass
    where = geometry(image.shape[1:], (17, 14, 12), rng)
    draw = random_draw(rng)
    kernel = resample_region(image, draw, spacing=spacing, kernel="numba", **where)
    torch_path = resample_region(image, draw, spacing=spacing, kernel="torch", **where)
    assert kernel.dtype == torch.float32 and kernel.shape == (3, 17, 14, 12)
    torch.testing.assert_close(kernel, torch_path, rtol=0, atol=2e-5)
    reference = scipy_linear(image, draw, spacing=spacing, pad=0.0, **where)
    np.testing.assert_allclose(kernel.numpy(), reference, rtol=0, atol=2e-6)


@pytest.mark.parametrize("seed", range(6))
def test_nearest_equals_float64_grid_sample_exactly(seed):
    rng = np.random.default_rng(100 + seed)
    spacing = SPACINGS[seed % len(SPACINGS)]
    label = rng.integers(0, 7, size=(2, 28, 24, 20)).astype(np.int16)
    where = geometry(label.shape[1:], (16, 15, 13), rng)
    draw = random_draw(rng)
    kernel = resample_region(
        label, draw, spacing=spacing, interpolation="nearest", kernel="numba", **where
    )
    reference = float64_grid_sample(label, draw, spacing=spacing, mode="nearest", pad=0, **where)
    assert kernel.dtype == torch.int16
    assert torch.equal(kernel, reference.to(torch.int16))
    torch_path = resample_region(
        label, draw, spacing=spacing, interpolation="nearest", kernel="torch", **where
    )
    assert (kernel == torch_path).float().mean() > 0.999  # float32 grid: a few .5 ties differ


@pytest.mark.parametrize("pad", [0.0, -7.5, 3.0])
def test_window_leaving_the_image_is_padded_like_the_torch_path(pad):
    rng = np.random.default_rng(3)
    image = rng.uniform(1.0, 2.0, size=(1, 20, 18, 16)).astype(np.float32)
    label = rng.integers(1, 4, size=(1, 20, 18, 16)).astype(np.uint8)
    where = geometry(image.shape[1:], (12, 12, 12), rng, near_edge=True)
    draw = random_draw(rng)
    spacing = (1.0, 1.3, 0.9)
    kernel = resample_region(image, draw, spacing=spacing, pad_value=pad, kernel="numba", **where)
    torch_path = resample_region(
        image, draw, spacing=spacing, pad_value=pad, kernel="torch", **where
    )
    torch.testing.assert_close(kernel, torch_path, rtol=0, atol=2e-5)
    assert (kernel == pad).any()  # some voxels wholly outside: exactly the pad value
    np.testing.assert_allclose(
        kernel.numpy(), scipy_linear(image, draw, spacing=spacing, pad=pad, **where), atol=2e-6
    )
    nearest = resample_region(
        label, draw, spacing=spacing, interpolation="nearest", kernel="numba", **where
    )
    reference = float64_grid_sample(label, draw, spacing=spacing, mode="nearest", pad=0, **where)
    assert torch.equal(nearest, reference.to(torch.uint8)) and (nearest == 0).any()


def test_elastic_displacement_equals_the_torch_path():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(2, 24, 24, 24)).astype(np.float32)
    label = rng.integers(0, 3, size=(1, 24, 24, 24)).astype(np.uint8)
    size = (14, 13, 12)
    where = geometry(image.shape[1:], size, rng)
    draw = random_draw(rng, elastic=(16, 15, 14))  # larger field: centre-cropped to the window
    spacing = (1.2, 1.0, 2.0)
    kernel = resample_region(image, draw, spacing=spacing, kernel="numba", **where)
    torch_path = resample_region(image, draw, spacing=spacing, kernel="torch", **where)
    torch.testing.assert_close(kernel, torch_path, rtol=0, atol=2e-5)
    nearest = resample_region(
        label, draw, spacing=spacing, interpolation="nearest", kernel="numba", **where
    )
    crop = SpatialDraw(draw.matrix, draw.translation, draw.displacement[:, 1:15, 1:14, 1:13])
    reference = float64_grid_sample(label, crop, spacing=spacing, mode="nearest", pad=0, **where)
    assert torch.equal(nearest, reference.to(torch.uint8))


def test_two_dimensional_arrays():
    rng = np.random.default_rng(11)
    image = rng.normal(size=(2, 30, 25)).astype(np.float32)
    label = rng.integers(0, 5, size=(1, 30, 25)).astype(np.uint8)
    where = geometry(image.shape[1:], (20, 17), rng)
    draw = random_draw(rng, dims=2)
    kernel = resample_region(image, draw, spacing=(0.7, 1.4), kernel="numba", **where)
    torch_path = resample_region(image, draw, spacing=(0.7, 1.4), kernel="torch", **where)
    assert kernel.shape == (2, 20, 17)
    torch.testing.assert_close(kernel, torch_path, rtol=0, atol=2e-5)
    nearest = resample_region(
        label, draw, spacing=(0.7, 1.4), interpolation="nearest", kernel="numba", **where
    )
    reference = float64_grid_sample(label, draw, spacing=(0.7, 1.4), mode="nearest", pad=0, **where)
    assert torch.equal(nearest, reference.to(torch.uint8))


def test_integer_image_with_linear_interpolation_is_rounded_like_the_torch_path():
    rng = np.random.default_rng(2)
    image = rng.integers(-1000, 1000, size=(1, 20, 20, 20)).astype(np.int16)
    where = geometry(image.shape[1:], (10, 10, 10), rng)
    draw = random_draw(rng)
    kernel = resample_region(image, draw, spacing=(1, 1, 1), kernel="numba", **where)
    torch_path = resample_region(image, draw, spacing=(1, 1, 1), kernel="torch", **where)
    assert kernel.dtype == torch.int16
    assert (kernel.int() - torch_path.int()).abs().max() <= 1  # float rounding at .5 only


def test_fused_roles_in_one_pass_equal_separate_calls_and_keep_flips_exact():
    rng = np.random.default_rng(8)
    image = rng.normal(size=(2, 26, 26, 26)).astype(np.float32)
    weight = rng.uniform(size=(1, 26, 26, 26)).astype(np.float32)
    label = rng.integers(0, 4, size=(1, 26, 26, 26)).astype(np.uint8)
    where = geometry(image.shape[1:], (14, 14, 14), rng)
    draw = random_draw(rng)
    arguments = dict(centre=where["centre"], spacing=(1, 1.5, 1), pad_values=[-1.0, 0.0, 0.0],
                     interpolations=["linear", "nearest", "linear"],
                     first_offsets=[where["first_offset"]] * 3, sizes=[where["size"]] * 3)  # fmt: skip
    together = resample_roles([image, label, weight], draw, kernel="numba", **arguments)
    for array, out, mode, pad in zip([image, label, weight], together, arguments["interpolations"],
                                     arguments["pad_values"]):  # fmt: skip
        alone = resample_region(array, draw, spacing=(1, 1.5, 1), interpolation=mode,
                                pad_value=pad, kernel="torch", **where)  # fmt: skip
        if mode == "linear":
            torch.testing.assert_close(out, alone, rtol=0, atol=2e-5)
        else:
            assert (out == alone).float().mean() > 0.999
    flip = SpatialDraw(np.diag([-1.0, 1.0, -1.0]), np.zeros(3))
    flipped = resample_roles([image, label, weight], flip, kernel="numba", **arguments)
    expected = torch.flip(
        torch.from_numpy(read_window(image, where["centre"] - 6.5, (14,) * 3)), [1, 3]
    )
    assert torch.equal(flipped[0], expected)


def test_sampler_windows_equal_with_either_kernel():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 40, 36, 30)).astype(np.float32)
    label = rng.integers(0, 3, size=(1, 40, 36, 30)).astype(np.uint8)
    affine = np.diag([1.0, 1.2, 2.0, 1.0])
    subject = CachedSubject("s", {"image": image, "label": label},
                            {"image": "intensity", "label": "label"}, affine)  # fmt: skip
    augmentation = build_augmentation(
        [
            {"name": "flip", "axes": [0, 1]},
            {"name": "affine", "rotation": 15, "scaling": 0.1, "p": 1.0},
        ]
    )
    windows = {}
    for kernel in ("numba", "torch"):
        sampler = UniformSampler((24, 20, 16), windows_per_subject=4, pad_value=-2.0)
        sampler.resample_kernel = kernel
        windows[kernel] = sampler.sample(
            subject, np.random.default_rng(4), augmentation=augmentation
        )
    for fast, slow in zip(windows["numba"], windows["torch"]):
        torch.testing.assert_close(fast["image"], slow["image"], rtol=0, atol=2e-5)
        assert (fast["label"] == slow["label"]).float().mean() > 0.999


def test_cubic_falls_back_to_the_torch_path_with_one_warning(monkeypatch):
    monkeypatch.setattr(fused, "_warned", set())
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
    where = geometry(image.shape[1:], (8, 8, 8), rng)
    draw = random_draw(rng)
    with pytest.warns(UserWarning, match="supports .* not 'cubic'"):
        out = resample_region(
            image, draw, spacing=(1, 1, 1), interpolation="cubic", kernel="numba", **where
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: no warning
        again = resample_region(image, draw, spacing=(1, 1, 1), interpolation="cubic", **where)
    reference = resample_region(
        image, draw, spacing=(1, 1, 1), interpolation="cubic", kernel="torch", **where
    )
    assert torch.equal(out, reference) and torch.equal(again, reference)


def test_numba_import_failure_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(fused, "_warned", set())
    monkeypatch.setitem(sys.modules, "voxelflow.transforms._fused_kernel", None)  # import fails
    fused._kernel_module.cache_clear()
    try:
        rng = np.random.default_rng(4)
        image = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
        where = geometry(image.shape[1:], (8, 8, 8), rng)
        draw = random_draw(rng)
        with pytest.warns(UserWarning, match="numba resampling kernel is unavailable"):
            out = resample_region(image, draw, spacing=(1, 1, 1), kernel="numba", **where)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            resample_region(image, draw, spacing=(1, 1, 1), **where)
        reference = resample_region(image, draw, spacing=(1, 1, 1), kernel="torch", **where)
        assert torch.equal(out, reference)
        assert fused.warm_up(CachedSubject("s", {"image": image}, {"image": "intensity"})) is None
    finally:
        monkeypatch.undo()
        fused._kernel_module.cache_clear()


def test_unknown_kernel_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"system\.resample_kernel"):
        fused.check_kernel("fast")
    from voxelflow.config.load import validate_experiment

    base = {"dataset": {"csv": "x.csv"}, "network": {"name": "unet"}}
    with pytest.raises(ConfigError, match=r"system\.resample_kernel"):
        validate_experiment({**base, "system": {"resample_kernel": "fast"}})


def test_warm_up_compiles_for_the_subject_dtypes():
    image = np.zeros((1, 8, 8, 8), np.float32)
    label = np.zeros((1, 8, 8, 8), np.uint8)
    subject = CachedSubject(
        "s", {"image": image, "label": label}, {"image": "intensity", "label": "label"}
    )
    assert fused.warm_up(subject, kernel="torch") is None
    assert (
        fused.warm_up(subject, augmentation=build_augmentation([{"name": "gaussian_noise"}]))
        is None
    )
    seconds = fused.warm_up(
        subject, augmentation=build_augmentation([{"name": "affine", "rotation": 5}])
    )
    assert seconds is not None and seconds >= 0
    from voxelflow.transforms import _fused_kernel

    assert _fused_kernel.fused_resample_3d.signatures  # compiled (or loaded from the cache)
