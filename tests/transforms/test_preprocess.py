"""Geometry ops (functional), the Preprocessor and its inverse, and label remapping."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.config.schema import Component, PreprocessingConfig
from voxelflow.errors import DataError, ShapeError
from voxelflow.io.image import Image, Subject
from voxelflow.synthetic import make_phantom, phantom_affine
from voxelflow.transforms import functional as F
from voxelflow.transforms.label import LabelMapping
from voxelflow.transforms.preprocess import Preprocessor, invert

SHAPE = (20, 18, 16)


def oblique_affine(flips=(-1, 1, -1)) -> np.ndarray:
    """Anisotropic, rotated, non-RAS affine."""
    return phantom_affine((1.0, 1.2, 1.5)) @ np.diag([*flips, 1.0])


def world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


def phantom_subject(label_scale: int = 2, affine: np.ndarray | None = None) -> Subject:
    image, label = make_phantom(SHAPE, num_classes=3, seed=3)
    affine = oblique_affine() if affine is None else affine
    image = image + 1.0
    image[:3] = 0.0
    image[:, -2:] = 0.0
    return Subject(
        "case",
        {
            "image": Image(torch.from_numpy(image[None]), affine),
            "label": Image(torch.from_numpy(label[None] * label_scale), affine, kind="label"),
        },
    )


# -- reorientation ---------------------------------------------------------------------------
@pytest.mark.parametrize("flips", [(-1, 1, -1), (1, -1, 1), (1, 1, 1)])
def test_reorient_matches_nibabel_canonical(flips):
    affine = oblique_affine(flips)
    data = np.random.default_rng(0).random((2, *SHAPE)).astype(np.float32)
    out, new_affine, _ = F.reorient(data, affine, "RAS")
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data[1], affine))
    np.testing.assert_allclose(new_affine, canonical.affine, atol=1e-12)
    np.testing.assert_array_equal(out[1], np.asarray(canonical.dataobj))
    assert nib.aff2axcodes(new_affine) == ("R", "A", "S")


def test_reorient_permutation_keeps_world_positions_and_inverts_exactly():
    affine = oblique_affine() @ np.eye(4)[[2, 0, 1, 3]]  # axes permuted
    data = torch.arange(np.prod(SHAPE), dtype=torch.float32).reshape(1, *SHAPE)
    out, new_affine, transform = F.reorient(data, affine, "PSL")
    assert isinstance(out, torch.Tensor)
    assert "".join(nib.aff2axcodes(new_affine)) == "PSL"
    value = data[0, 3, 5, 7].item()
    new_index = np.argwhere(out[0].numpy() == value)[0]
    np.testing.assert_allclose(world(new_affine, new_index), world(affine, (3, 5, 7)), atol=1e-9)
    back, back_affine = F.undo_reorient(out, new_affine, transform)
    assert torch.equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-12)


def test_reorient_2d_flips_first_axis():
    data = np.random.default_rng(1).random((1, 5, 6))
    out, affine, _ = F.reorient(data, np.diag([-1.0, 1.0, 1.0, 1.0]), "RA")
    np.testing.assert_array_equal(out[0], data[0, ::-1])
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    np.testing.assert_allclose(world(affine, (0, 0, 0)), world(np.diag([-1.0, 1, 1, 1]), (4, 0, 0)))


# -- resampling ------------------------------------------------------------------------------
def test_spacing_grid_keeps_corner_and_field_of_view():
    affine = oblique_affine()
    shape, new_affine = F.spacing_grid(SHAPE, affine, (2.0, 2.4, 3.0))
    assert shape == (10, 9, 8)
    np.testing.assert_allclose(F.spacing_of(new_affine), (2.0, 2.4, 3.0))
    np.testing.assert_allclose(
        world(new_affine, (-0.5, -0.5, -0.5)), world(affine, (-0.5, -0.5, -0.5)), atol=1e-9
    )
    np.testing.assert_allclose(
        world(new_affine, np.array(shape) - 0.5), world(affine, np.array(SHAPE) - 0.5), atol=1e-9
    )


def test_linear_resampling_of_a_world_ramp_is_exact_inside():
    """A field linear in world coordinates is reproduced exactly by linear interpolation."""
    affine = oblique_affine()
    index = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    ramp = lambda a, idx: idx @ a[:3, :3].T @ np.array([0.3, -0.2, 0.5]) + 7.0  # noqa: E731
    data = ramp(affine, index)[None].astype(np.float64)
    shape, target = F.spacing_grid(SHAPE, affine, (0.7, 2.0, 1.1))
    out = F.resample(data, affine, target_shape=shape, target_affine=target)
    new_index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    expected = ramp(target, new_index) + (target[:3, 3] - affine[:3, 3]) @ np.array(
        [0.3, -0.2, 0.5]
    )
    source_index = (
        np.concatenate([new_index, np.ones((*shape, 1))], -1) @ np.linalg.solve(affine, target).T
    )
    inside = np.all(
        (source_index[..., :3] >= 0) & (source_index[..., :3] <= np.array(SHAPE) - 1), -1
    )
    assert inside.mean() > 0.7
    np.testing.assert_allclose(out[0][inside], expected[inside], atol=1e-9)


def test_linear_resampling_matches_torchio_simpleitk_on_the_same_target_grid():
    """TorchIO's Resample (SimpleITK underneath) as an independent reference."""
    tio = pytest.importorskip("torchio")
    affine = oblique_affine()
    image, label = make_phantom(SHAPE, seed=1)
    shape, target = F.spacing_grid(SHAPE, affine, (2.0, 1.7, 2.5))
    reference = tio.Resample((shape, target), image_interpolation="linear")(
        tio.ScalarImage(tensor=torch.from_numpy(image[None].astype(np.float64)), affine=affine)
    )
    ours = F.resample(
        image[None].astype(np.float64), affine, target_shape=shape, target_affine=target
    )
    np.testing.assert_allclose(ours, reference.data.numpy(), atol=1e-9)
    reference_label = tio.Resample((shape, target))(
        tio.LabelMap(tensor=torch.from_numpy(label[None].astype(np.int64)), affine=affine)
    )
    ours_label = F.resample(
        label[None], affine, target_shape=shape, target_affine=target, interpolation="nearest"
    )
    assert (ours_label == reference_label.data.numpy()).mean() > 0.99


def test_resample_onto_same_grid_is_identity_and_bspline_preserves_smooth_data():
    affine = oblique_affine()
    data = np.random.default_rng(2).random((2, *SHAPE)).astype(np.float32)
    for method in ("nearest", "linear", "bspline"):
        out = F.resample(
            data, affine, target_shape=SHAPE, target_affine=affine, interpolation=method
        )
        np.testing.assert_allclose(out, data, atol=1e-5)


def test_partial_volume_equals_linear_mask_threshold_for_binary_labels():
    affine = oblique_affine()
    _, label = make_phantom(SHAPE, num_classes=2, seed=4)
    shape, target = F.spacing_grid(SHAPE, affine, (2.0, 2.0, 2.0))
    out = F.resample_labels_partial_volume(
        label[None], affine, target_shape=shape, target_affine=target
    )
    linear = F.resample(
        label[None].astype(np.float32), affine, target_shape=shape, target_affine=target
    )
    decided = np.abs(linear - 0.5) > 1e-6
    np.testing.assert_array_equal(out[decided], (linear[decided] > 0.5).astype(out.dtype))
    assert out.dtype == label.dtype


# -- crop / pad ------------------------------------------------------------------------------
def test_bounding_box_matches_argwhere_and_crop_pad_invert():
    rng = np.random.default_rng(5)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[4:9, 3:15, 6:7] = rng.random((5, 12, 1)) > 0.3
    start, stop = F.foreground_bounding_box(mask, margin=2)
    hits = np.argwhere(mask)
    np.testing.assert_array_equal(start, np.maximum(hits.min(0) - 2, 0))
    np.testing.assert_array_equal(stop, np.minimum(hits.max(0) + 3, SHAPE))
    affine = oblique_affine()
    data = rng.random((1, *SHAPE))
    cropped, cropped_affine = F.crop(data, affine, start, stop)
    np.testing.assert_allclose(world(cropped_affine, (0, 0, 0)), world(affine, start))
    after = [s - b for s, b in zip(SHAPE, stop)]
    padded, padded_affine = F.pad(cropped, cropped_affine, start, after, value=-1.0)
    np.testing.assert_allclose(padded_affine, affine, atol=1e-12)
    inside = tuple(slice(a, b) for a, b in zip(start, stop))
    np.testing.assert_array_equal(padded[(0, *inside)], data[(0, *inside)])
    assert (padded == -1.0).sum() == data.size - cropped.size
    assert F.foreground_bounding_box(np.zeros(SHAPE)) is None


# -- Preprocessor + invert -------------------------------------------------------------------
def test_reorient_and_crop_invert_exactly():
    subject = phantom_subject()
    config = PreprocessingConfig(crop_foreground=True, crop_margin=1, label_values=[0, 2, 4])
    processed, record = Preprocessor(config)(subject)
    record = json.loads(json.dumps(record))  # JSON-serialisable and still usable
    assert [s["name"] for s in record["steps"]] == ["reorient", "crop", "label_map"]
    assert processed["image"].orientation == "RAS"
    assert processed["image"].spatial_shape == (18, 17, 16)  # 3 and 2 zero planes, margin 1
    assert sorted(processed["label"].data.unique().tolist()) == [0, 1, 2]
    label_back = invert(processed["label"], record)
    assert (
        label_back.spatial_shape == SHAPE and label_back.orientation == subject["label"].orientation
    )
    np.testing.assert_array_equal(label_back.affine, subject["label"].affine)
    np.testing.assert_array_equal(label_back.numpy(), subject["label"].numpy())
    unnormalized = Preprocessor(config.model_copy(update={"normalization": []}))(subject)[0]
    image_back = invert(unnormalized["image"], record)
    np.testing.assert_array_equal(image_back.numpy(), subject["image"].numpy())


def test_resample_then_invert_is_close_on_original_grid():
    subject = phantom_subject()
    index = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    smooth = np.exp(-(((index - np.array(SHAPE) / 2) / 6.0) ** 2).sum(-1)).astype(np.float32) + 1
    subject.images["image"] = subject["image"].with_data(torch.from_numpy(smooth[None]))
    config = PreprocessingConfig(spacing=[1.5, 1.5, 1.5], normalization=[], label_values=[0, 2, 4])
    processed, record = Preprocessor(config)(subject)
    assert [s["name"] for s in record["steps"]] == ["reorient", "resample", "label_map"]
    np.testing.assert_allclose(processed["image"].spacing, (1.5, 1.5, 1.5))
    image_back = invert(processed["image"], record)
    assert image_back.spatial_shape == SHAPE
    np.testing.assert_array_equal(image_back.affine, subject["image"].affine)
    np.testing.assert_allclose(image_back.numpy(), smooth[None], atol=0.06)
    label_back = invert(processed["label"], record)
    agreement = (label_back.numpy() == subject["label"].numpy()).mean()
    assert agreement > 0.93
    assert set(np.unique(label_back.numpy())) <= {0, 2, 4}


def test_invert_probabilities_and_wrong_shape():
    subject = phantom_subject()
    config = PreprocessingConfig(spacing=[2.0, 2.0, 2.0], crop_foreground=True)
    processed, record = Preprocessor(config)(subject)
    probabilities = torch.rand(3, *processed.spatial_shape)
    back = invert(Image(probabilities, processed["image"].affine), record, kind="intensity")
    assert back.data.shape == (3, *SHAPE)
    with pytest.raises(ShapeError, match="expected an image of spatial shape"):
        invert(Image(torch.rand(1, 4, 4, 4)), record)


def test_label_interpolation_partial_volume_keeps_values():
    subject = phantom_subject()
    config = PreprocessingConfig(spacing=[2.0, 2.0, 2.0], label_interpolation="partial_volume")
    processed, _ = Preprocessor(config)(subject)
    assert set(processed["label"].data.unique().tolist()) <= {0, 2, 4}


def test_non_finite_voxels_warn_with_count_or_fail(caplog):
    subject = phantom_subject()
    data = subject["image"].data.clone()
    data[0, 1, 1, 1] = float("nan")
    data[0, 2, 2, 2] = float("inf")
    subject.images["image"] = subject["image"].with_data(data)
    with caplog.at_level(logging.WARNING):
        processed, _ = Preprocessor(PreprocessingConfig(normalization=[]))(subject)
    assert "replaced 2 NaN/Inf voxels" in caplog.text
    assert torch.isfinite(processed["image"].data).all()
    with pytest.raises(DataError, match="2 NaN/Inf voxels"):
        Preprocessor(PreprocessingConfig(non_finite="error"))(subject)


def test_finite_voxels_whose_sum_overflows_are_not_reported(caplog):
    """The one-pass check (a finite sum) falls back to a voxel count when the sum overflows."""
    from voxelflow.transforms.preprocess import replace_non_finite

    data = torch.full((1, 4, 4, 4), 3e38)  # finite, their float32 sum is +Inf
    image = phantom_subject()["image"].with_data(data)
    with caplog.at_level(logging.WARNING):
        assert replace_non_finite(image, policy="error") is image
    assert "NaN/Inf" not in caplog.text


def test_fit_histogram_landmarks_and_label_values():
    subjects = [phantom_subject(label_scale=s) for s in (2, 3)]
    config = PreprocessingConfig(
        normalization=[Component(name="histogram_standardization"), Component(name="zscore")]
    )
    preprocessor = Preprocessor(config)
    assert preprocessor.needs_fit
    state = preprocessor.fit(subjects)
    assert state["label_values"] == [0, 2, 3, 4, 6]
    assert len(state["normalization"][0]["reference"][0]) == 11
    rebuilt = Preprocessor(config, fitted_state=json.loads(json.dumps(state)))
    first = rebuilt(subjects[0])[0]["image"].numpy()
    np.testing.assert_allclose(first, preprocessor(subjects[0])[0]["image"].numpy())
    assert abs(first.mean()) < 1e-4


# -- label mapping ---------------------------------------------------------------------------
def test_label_mapping_round_trip_and_unknown_value():
    mapping = LabelMapping([0, 2, 4, 255])
    label = np.array([[0, 255], [4, 2]])
    classes = mapping.to_classes(label)
    np.testing.assert_array_equal(classes, [[0, 3], [2, 1]])
    np.testing.assert_array_equal(mapping.to_values(classes), label)
    with pytest.raises(DataError, match=r"unknown label value 7 in 'seg.nii.gz'"):
        mapping.to_classes(np.array([0, 7]), path="seg.nii.gz")
    with pytest.raises(DataError, match="class indices"):
        mapping.to_values(np.array([4]))
    fitted = LabelMapping.fit([np.array([0, 4]), np.array([255, 2, 0])])
    assert fitted.values == [0, 2, 4, 255] and not fitted.is_identity
    assert LabelMapping.from_state(fitted.state_dict()).values == fitted.values
    with pytest.raises(DataError, match="integer"):
        LabelMapping.fit([np.array([0.5])])


def test_2d_coronal_slice_keeps_its_slice_axis_and_inverts():
    # axes: L (flipped x), I (flipped z), slice axis along A
    affine = np.array([[-0.8, 0, 0, 10.0], [0, 0, 2.0, -4.0], [0, -1.2, 0, 30.0], [0, 0, 0, 1.0]])
    data = np.random.default_rng(6).random((1, 9, 7)).astype(np.float32)
    assert "".join(nib.aff2axcodes(affine)) == "LIA"
    out, new_affine, _ = F.reorient(data, affine, "RAS")
    assert "".join(nib.aff2axcodes(new_affine)) == "RSA"
    np.testing.assert_array_equal(out[0], data[0, ::-1, ::-1])
    np.testing.assert_allclose(world(new_affine, (0, 0, 0)), world(affine, (8, 6, 0)))
    with pytest.raises(ValueError, match="in-plane axis codes"):
        F.reorient(data, affine, "RA")
    subject = Subject("slice", {"image": Image(torch.from_numpy(data), affine)})
    config = PreprocessingConfig(spacing=[0.4, 0.6], crop_foreground=True, normalization=[])
    processed, record = Preprocessor(config)(subject)
    assert processed["image"].orientation == "RS" and processed["image"].spatial_shape == (18, 14)
    back = invert(processed["image"], record)
    assert back.spatial_shape == (9, 7)
    np.testing.assert_array_equal(back.affine, affine)
    np.testing.assert_allclose(back.numpy(), data, atol=0.35)


@pytest.mark.parametrize(
    ("shape", "target", "scale", "shift"),
    [
        ((1, 20, 17, 9), (31, 9, 9), [0.6, 1.9, 1.0], [0.3, -0.5, 0.0]),  # grow, shrink, keep
        ((2, 12, 10, 8), (12, 10, 8), [-1.0, 1.0, 1.0], [11.0, 0.0, 0.0]),  # a flip, 2 channels
        ((1, 1, 10, 8), (3, 20, 8), [0.5, 0.5, 1.0], [-2.0, 0.2, 0.0]),  # one voxel, outside
        ((1, 5, 6), (9, 4), [0.5, 1.3], [-0.7, 0.4]),  # 2D
    ],
)
def test_axis_aligned_linear_resampling_equals_scipy(shape, target, scale, shift):
    """The separable path (diagonal voxel maps: spacing changes, flips) = affine_transform."""
    from scipy import ndimage

    from voxelflow.transforms import functional

    data = np.random.default_rng(0).random(shape).astype(np.float32) * 1000
    dims = len(target)
    matrix = np.eye(dims + 1)
    matrix[:dims, :dims], matrix[:dims, dims] = np.diag(scale), shift
    expected = np.stack([
        ndimage.affine_transform(c, matrix, output_shape=target, order=1, mode="nearest")
        for c in data
    ])
    assert functional._axis_aligned(matrix)
    got = functional._linear_axis_aligned(data, matrix, target)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)
    rotated = matrix.copy()
    rotated[0, 1] = 0.1
    assert not functional._axis_aligned(rotated)  # a rotation keeps scipy's general path
