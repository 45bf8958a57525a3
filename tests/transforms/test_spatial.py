"""Spatial augmentation against independent references (torch.flip/rot90, scipy affine_transform)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import affine_transform

from voxelflow.errors import ConfigError
from voxelflow.io.image import Image, Subject
from voxelflow.synthetic import make_phantom, phantom_affine
from voxelflow.transforms.base import Sample, range_of
from voxelflow.transforms.compose import AUGMENTATIONS, Compose, build_augmentation
from voxelflow.transforms.resample import SpatialDraw, resample_sample
from voxelflow.transforms.spatial import RandomAffine, RandomElastic, RandomFlip

SPACING = (1.0, 1.2, 1.5)


def smooth_volume(shape=(16, 16, 12)) -> torch.Tensor:
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return torch.from_numpy(np.exp(-2 * sum(g**2 for g in grids)).astype(np.float32))[None]


def window_dict(image, label=None, spacing=SPACING):
    data = {"image": image, "spacing": torch.tensor(spacing)}
    if label is not None:
        data["label"] = label
    return data


def test_ranges_single_number_is_symmetric():
    assert range_of(15, name="rotation") == (-15.0, 15.0)
    assert range_of([0.9, 1.1], name="scaling") == (0.9, 1.1)
    with pytest.raises(ConfigError, match=r"\[low, high\]"):
        range_of([2, 1], name="shear")
    assert RandomAffine(scaling=0.1).scaling[0] == pytest.approx((0.9, 1.1))


def test_flip_matches_torch_flip_for_every_container():
    image = torch.rand(2, 5, 6, 7)
    flip = RandomFlip(axes=(0, 2), flip_probability=1.0)
    torch.testing.assert_close(flip(image), torch.flip(image, (1, 3)), rtol=0, atol=0)
    img = Image(image, phantom_affine(SPACING))
    assert isinstance(flip(img), Image) and torch.equal(flip(img).data, torch.flip(image, (1, 3)))
    subject = Subject(
        "a",
        {"image": img, "label": Image((image[:1] > 0.5).to(torch.uint8), img.affine, kind="label")},
    )
    out = flip(subject)
    assert isinstance(out, Subject) and out["label"].dtype == torch.uint8
    assert torch.equal(out["label"].data, torch.flip(subject["label"].data, (1, 3)))


def test_include_exclude_and_probability():
    data = window_dict(torch.rand(1, 4, 4, 4), (torch.rand(1, 4, 4, 4) > 0.5).to(torch.uint8))
    out = RandomFlip(axes=(0,), flip_probability=1.0, exclude=["label"])(data)
    assert torch.equal(out["label"], data["label"]) and torch.equal(
        out["image"], torch.flip(data["image"], (1,))
    )
    assert RandomFlip(axes=(0,), flip_probability=1.0, p=0.0)(data) is data
    with pytest.raises(ConfigError, match="expected p in"):
        RandomFlip(p=1.5)


def test_rotation_90_degrees_equals_rot90():
    image = torch.rand(1, 8, 8, 5)
    affine = RandomAffine(rotation=[0, 0, [90, 90]])
    out = affine(window_dict(image, spacing=(1.0, 1.0, 2.0)))["image"]
    torch.testing.assert_close(out, torch.rot90(image, 1, (1, 2)), atol=1e-5, rtol=0)


def test_integer_translation_shifts_content_and_pads():
    image = torch.rand(1, 8, 6, 4)
    out = RandomAffine(translation=[[2.4, 2.4], [0, 0], [0, 0]])(
        window_dict(image, spacing=(1.2, 1.0, 1.0))
    )["image"]
    torch.testing.assert_close(out[:, 2:], image[:, :-2], atol=1e-6, rtol=0)
    assert (out[:, :2] == 0).all()


@pytest.mark.parametrize(
    "params",
    [
        {
            "rotation": [10.0, -20.0, 30.0],
            "scaling": [1.1, 1.1, 1.1],
            "shear": [0.0] * 6,
            "translation": [1.0, -2.0, 0.5],
        },
        {
            "rotation": [0.0, 0.0, 5.0],
            "scaling": [0.9, 1.05, 1.2],
            "shear": [0.1, 0, 0, -0.05, 0, 0.02],
            "translation": [0, 0, 0],
        },
    ],
)
def test_affine_matches_scipy_affine_transform(params):
    image = torch.rand(1, 12, 10, 8, generator=torch.Generator().manual_seed(1))
    transform = RandomAffine(rotation=1)
    out = transform(window_dict(image), params=params)["image"][0].numpy()
    # independent reference: source voxel = c + S^-1 A^-1 S (j - c) - S^-1 A^-1 t
    scale = np.diag(SPACING)
    forward = transform.forward_matrix(params)
    voxel = np.linalg.inv(scale) @ np.linalg.inv(forward) @ scale
    centre = (np.array(image.shape[1:]) - 1) / 2
    offset = (
        centre
        - voxel @ centre
        - np.linalg.inv(scale) @ np.linalg.inv(forward) @ np.array(params["translation"])
    )
    expected = affine_transform(
        image[0].double().numpy(), voxel, offset=offset, order=1, mode="grid-constant", cval=0.0
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_labels_stay_integer_within_values_and_follow_image():
    image, label = make_phantom((16, 16, 12), num_classes=4, seed=2)
    data = window_dict(torch.from_numpy(image)[None], torch.from_numpy(label)[None].to(torch.uint8))
    aug = build_augmentation(
        [
            {"name": "flip"},
            {"name": "affine", "rotation": 30, "scaling": [0.8, 1.2], "shear": 0.1},
            {"name": "elastic", "max_displacement": 3},
        ],
        seed=0,
    )
    for _ in range(3):
        out = aug(data)
        assert out["label"].dtype == torch.uint8 and set(out["label"].unique().tolist()) <= set(
            np.unique(label).tolist()
        )
        assert out["image"].dtype == torch.float32


def test_same_seed_same_result_and_one_draw_for_all_roles():
    image = smooth_volume()
    data = window_dict(image, (image > 0.5).to(torch.uint8))

    def aug():
        return build_augmentation([{"name": "affine", "rotation": 20}, {"name": "elastic"}], seed=4)

    first, second = aug()(data), aug()(data)
    torch.testing.assert_close(first["image"], second["image"], rtol=0, atol=0)
    # the label moved with the image: thresholding the moved image ≈ moved label
    agreement = ((first["image"] > 0.5).to(torch.uint8) == first["label"]).float().mean()
    assert agreement > 0.97


def test_affine_then_inverse_recovers_the_image():
    image = smooth_volume((20, 20, 16))
    sample = Sample({"image": image}, {"image": "intensity"}, SPACING)
    transform = RandomAffine(rotation=20, scaling=[0.9, 1.1], translation=2)
    draw = transform.to_draw(
        transform.make_params(np.random.default_rng(3)), window=(20, 20, 16), spacing=SPACING
    )
    inverse = SpatialDraw(
        np.linalg.inv(draw.matrix), -np.linalg.inv(draw.matrix) @ draw.translation
    )
    moved = resample_sample(sample, draw, roles=["image"])
    back = resample_sample(moved, inverse, roles=["image"]).tensors["image"]
    torch.testing.assert_close(
        back[:, 5:15, 5:15, 4:12], image[:, 5:15, 5:15, 4:12], atol=0.05, rtol=0
    )
    composed = draw.then(inverse)
    np.testing.assert_allclose(composed.matrix, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(composed.translation, 0, atol=1e-12)


def test_composed_draw_is_one_exact_resampling_for_voxel_permutations():
    image = torch.rand(1, 8, 8, 6)
    flip = RandomFlip(axes=(0,), flip_probability=1.0)
    rotate = RandomAffine(rotation=[0, 0, [90, 90]])
    data = window_dict(image, spacing=(1.0, 1.0, 1.0))
    together = Compose([flip, rotate])(data, rng=np.random.default_rng(0))["image"]
    one_by_one = rotate(flip(data))["image"]
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)


def test_elastic_constant_field_is_a_shift_and_zero_is_identity():
    image = torch.rand(1, 10, 8, 6)
    elastic = RandomElastic(control_points=5)
    zero = {"coefficients": np.zeros((3, 5, 5, 5), np.float32)}
    torch.testing.assert_close(
        elastic(window_dict(image), params=zero)["image"], image, atol=5e-6, rtol=0
    )
    shift = np.zeros((3, 5, 5, 5), np.float32)
    shift[0] = 2.0  # 2 mm along axis 0, spacing 1 mm: output[x] = input[x + 2]
    out = elastic(window_dict(image, spacing=(1.0, 1.0, 1.0)), params={"coefficients": shift})[
        "image"
    ]
    torch.testing.assert_close(out[:, :-2], image[:, 2:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("smoothing", ["bspline", "gaussian"])
def test_elastic_displacement_is_bounded_and_smooth(smoothing):
    elastic = RandomElastic(max_displacement=3.0, smoothing=smoothing, seed=0)
    draw = elastic.to_draw(
        elastic.make_params(np.random.default_rng(0)), window=(16, 16, 12), spacing=SPACING
    )
    field = draw.displacement
    assert field.shape == (3, 16, 16, 12) and field.abs().max() <= 3.0 + 1e-5
    assert (field[:, 1:] - field[:, :-1]).abs().max() < 1.5  # smooth: small neighbour differences


def test_cubic_interpolation_is_close_to_linear_on_smooth_data():
    image = smooth_volume()
    params = {
        "rotation": [0.0, 0.0, 17.0],
        "scaling": [1.0] * 3,
        "shear": [0.0] * 6,
        "translation": [0.0] * 3,
    }
    linear = RandomAffine()(window_dict(image), params=params)["image"]
    cubic = RandomAffine(interpolation="cubic")(window_dict(image), params=params)["image"]
    torch.testing.assert_close(
        cubic[:, 3:-3, 3:-3, 3:-3], linear[:, 3:-3, 3:-3, 3:-3], atol=0.02, rtol=0
    )


def test_2d_affine_and_registry():
    image = torch.rand(1, 9, 9)
    out = RandomAffine(rotation=[90, 90], spatial_dims=2)(window_dict(image, spacing=(1.0, 1.0)))[
        "image"
    ]
    torch.testing.assert_close(out, torch.rot90(image, 1, (1, 2)), atol=1e-5, rtol=0)
    assert {"flip", "affine", "elastic"} <= set(AUGMENTATIONS.names())
    with pytest.raises(ConfigError, match="Did you mean"):
        build_augmentation([{"name": "afine"}])


@pytest.mark.parametrize("name", ["flip", "affine", "elastic"])
def test_registered_spatial_contract(name):
    image, label = make_phantom((12, 10, 8), num_classes=3, seed=1)
    data = window_dict(torch.from_numpy(image)[None], torch.from_numpy(label)[None].to(torch.int16))
    kwargs = {"affine": {"rotation": 20, "scaling": 0.1}, "elastic": {"max_displacement": 2.0}}.get(
        name, {}
    )
    first = AUGMENTATIONS.get(name)(seed=5, **kwargs)(data)
    second = AUGMENTATIONS.get(name)(seed=5, **kwargs)(data)
    assert first["image"].shape == (1, 12, 10, 8) and first["image"].dtype == torch.float32
    assert first["label"].dtype == torch.int16 and set(first["label"].unique().tolist()) <= {
        0,
        1,
        2,
    }
    torch.testing.assert_close(first["image"], second["image"], rtol=0, atol=0)
    torch.testing.assert_close(first["label"], second["label"], rtol=0, atol=0)
